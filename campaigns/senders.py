"""Sender profiles: validating their values and choosing the one a send uses.

A campaign picks a ``SenderProfile`` where its channel needs one (the SMS caller number, the KakaoTalk channel, the
email From address); without one, the channel's default profile is used. The chosen profile travels to the backend
in ``Message.extra["sender"]`` as plain values; credentials never do (backends read them from settings).
"""

from __future__ import annotations

from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext as _

from crm.phones import InvalidPhoneNumber, normalize_phone

#: Kinds of numbers Korean carriers accept as a registered caller number (발신번호): landlines, mobiles, 070 and
#: representative numbers (1588-…). Premium-rate, toll-free (080, receive-only) and personal numbers are refused.
CALLER_NUMBER_TYPES = {
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    phonenumbers.PhoneNumberType.VOIP,
    phonenumbers.PhoneNumberType.UAN,
}

#: Channels that need a sender profile, and the profile kind each uses.
PROFILE_KIND_FOR_CHANNEL = {"email": "email", "sms": "sms", "kakao": "kakao"}


def normalize_caller_number(raw: str) -> str:
    """A caller number in E.164 (``02-1234-5678`` → ``+82212345678``, ``1588-1234`` → ``+8215881234``)."""
    try:
        e164 = normalize_phone(raw)
    except InvalidPhoneNumber as exc:
        raise ValidationError(str(exc)) from None
    if phonenumbers.number_type(phonenumbers.parse(e164)) not in CALLER_NUMBER_TYPES:
        raise ValidationError(
            _("%(number)s cannot be a caller number: use a landline, mobile, 070 or 15xx/16xx/18xx number.")
            % {"number": raw}
        )
    return e164


def national_digits(e164: str) -> str:
    """``+82212345678`` → ``0212345678``; ``+8215881234`` → ``15881234`` (what Korean providers expect)."""
    number = phonenumbers.parse(e164)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return "".join(ch for ch in national if ch.isdigit())


def normalize_sender_value(kind: str, value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError(_("This field is required."))
    if kind == "sms":
        return normalize_caller_number(value)
    if kind == "email":
        address = value.rsplit("<", 1)[-1].rstrip(">").strip() if "<" in value else value
        validate_email(address)
        return value
    if kind == "kakao":
        if not value.startswith("@"):
            raise ValidationError(_("A KakaoTalk channel's search ID starts with @, e.g. @loopshop."))
        return value
    return value


def sender_for(campaign) -> Any:
    """The campaign's sender profile, else the default one of its channel (None when there is neither)."""
    from campaigns.models import SenderProfile

    if campaign.sender_profile_id:
        return campaign.sender_profile
    kind = PROFILE_KIND_FOR_CHANNEL.get(campaign.channel)
    if kind is None:
        return None
    return SenderProfile.objects.filter(kind=kind, is_default=True).first()


def sender_extra(profile) -> dict[str, str]:
    """What a backend needs of a profile (no secrets: there are none in the database)."""
    if profile is None:
        return {}
    return {"kind": profile.kind, "label": profile.label, "value": profile.value, "sender_key": profile.sender_key}


def sender_profile_save(*, profile) -> Any:
    """Save a profile; making it the default of its kind unmarks the previous default in the same transaction."""
    from django.db import transaction

    from campaigns.models import SenderProfile

    with transaction.atomic():
        if profile.is_default:
            SenderProfile.objects.filter(kind=profile.kind, is_default=True).exclude(pk=profile.pk).update(
                is_default=False
            )
        profile.save()
    return profile


def caller_number_registration_error(e164: str) -> str:
    """Why the SMS provider would refuse ``e164`` as the caller number ("" when it is registered, or when the
    configured SMS backend offers no way to check). Korean law requires caller numbers to be pre-registered."""
    from campaigns.channels import backend_name_for

    if backend_name_for("sms") != "solapi":
        return ""
    from campaigns.channels.solapi import SolapiClient, SolapiError

    try:
        active = SolapiClient().active_sender_numbers()
    except SolapiError as exc:
        return _("Could not check the number with Solapi (%(error)s); try again.") % {"error": exc}
    if national_digits(e164) not in active:
        return _("%(number)s is not an active caller number of the Solapi account; register it with Solapi first.") % {
            "number": national_digits(e164)
        }
    return ""
