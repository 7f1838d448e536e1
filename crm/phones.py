"""Phone numbers: everything is stored in E.164, parsed with Google's libphonenumber (``phonenumbers``)."""

from __future__ import annotations

import phonenumbers
from django.utils.translation import gettext as _

DEFAULT_REGION = "KR"


class InvalidPhoneNumber(ValueError):
    """The text is not a valid phone number; the message says why, in the user's language."""


def normalize_phone(raw: str, *, region: str = DEFAULT_REGION) -> str:
    """Return ``raw`` in E.164 (``010-1234-5678`` → ``+821012345678``) or raise InvalidPhoneNumber."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhoneNumber(_("The phone number is empty."))
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(_("'%(value)s' is not a phone number.") % {"value": text}) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(_("'%(value)s' is not a valid phone number.") % {"value": text})
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_search_variants(text: str, *, region: str = DEFAULT_REGION) -> list[str]:
    """What to look for when a marketer searches a phone in any format: the E.164 form when it parses."""
    try:
        return [normalize_phone(text, region=region)]
    except InvalidPhoneNumber:
        digits = "".join(ch for ch in text if ch.isdigit())
        return [digits] if len(digits) >= 4 else []
