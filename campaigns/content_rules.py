"""Checks of a campaign's channel settings and of its variants' content that the marketer must fix before saving:
the sender profile of the channel, the KakaoTalk rules (AlimTalk is informational and uses an approved template's
exact text; FriendTalk has no template) and the text-message length (SMS/LMS/MMS by EUC-KR bytes, advertising
notice included). The admin shows the errors on the fields; the lifecycle services refuse to send a campaign
that has any.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from campaigns.advertising import apply_advertising_form
from campaigns.channels.kakao import template_mismatch
from campaigns.channels.sms_length import euc_kr_length, length_report
from campaigns.models import Campaign, KakaoType, Purpose, SenderProfile
from campaigns.senders import PROFILE_KIND_FOR_CHANNEL

#: KakaoTalk's limit on a message's text (AlimTalk and FriendTalk), in characters.
KAKAO_MAX_CHARS = 1000


def campaign_channel_errors(campaign: Campaign) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    kind = PROFILE_KIND_FOR_CHANNEL.get(campaign.channel)
    profile = campaign.sender_profile if campaign.sender_profile_id else None
    if profile is not None and profile.kind != kind:
        add(
            "sender_profile",
            _("This profile is for another channel (%(kind)s).") % {"kind": profile.get_kind_display()},
        )
    if (
        profile is None
        and kind in ("sms", "kakao")
        and not SenderProfile.objects.filter(kind=kind, is_default=True).exists()
    ):
        add("sender_profile", _("Choose a sender profile: there is no default one for this channel."))
    if campaign.channel != "kakao":
        if campaign.kakao_type:
            add("kakao_type", _("Only KakaoTalk campaigns have a KakaoTalk message type."))
        if campaign.kakao_template_id:
            add("kakao_template", _("Only KakaoTalk AlimTalk campaigns use a template."))
        return errors
    if not campaign.kakao_type:
        add("kakao_type", _("Choose AlimTalk or FriendTalk."))
    elif campaign.kakao_type == KakaoType.ALIMTALK:
        if campaign.purpose == Purpose.ADVERTISING:
            add("purpose", _("AlimTalk is for informational messages only; send advertising as FriendTalk."))
        template = campaign.kakao_template if campaign.kakao_template_id else None
        if template is None:
            add("kakao_template", _("AlimTalk needs an approved template."))
        elif not template.active:
            add("kakao_template", _("This template is inactive."))
        elif profile is not None and template.sender_profile_id != profile.pk:
            add("kakao_template", _("This template belongs to another KakaoTalk channel."))
    elif campaign.kakao_template_id:
        add("kakao_template", _("FriendTalk sends free text: leave the template empty."))
    return errors


def advertising_overhead(channel: str, sender_name: str = "") -> int:
    """Bytes the advertising notice adds to a text message ((광고)sender, free opt-out line)."""
    probe = apply_advertising_form(channel=channel, content={"body": "x"}, sender_name=sender_name)["body"]
    return euc_kr_length(probe) - 1


def variant_errors(campaign: Campaign, content: dict[str, Any]) -> dict[str, list[str]]:
    """Errors of one variant's ``content`` (``subject``, ``body``, ``link_url``, ``image``) for ``campaign``."""
    errors: dict[str, list[str]] = {}
    body = content.get("body") or ""
    if campaign.channel == "sms":
        if not body.strip():
            errors.setdefault("body", []).append(_("A text message needs a text."))
        text = body
        if campaign.purpose == Purpose.ADVERTISING:
            text = apply_advertising_form(channel="sms", content={"body": body}, sender_name=campaign.sender_name)[
                "body"
            ]
        report = length_report(text, subject=content.get("subject") or "", has_image=bool(content.get("image")))
        if report.errors:
            errors.setdefault("body", []).extend(report.errors)
    elif content.get("image"):
        errors.setdefault("image", []).append(_("Only text messages (SMS channel) carry an MMS image."))
    if campaign.channel == "kakao":
        if not body.strip():
            errors.setdefault("body", []).append(_("A KakaoTalk message needs a text."))
        if len(body) > KAKAO_MAX_CHARS:
            errors.setdefault("body", []).append(
                _("KakaoTalk messages hold at most %(max)s characters.") % {"max": f"{KAKAO_MAX_CHARS:,}"}
            )
        template = campaign.kakao_template if campaign.kakao_template_id else None
        if campaign.kakao_type == KakaoType.ALIMTALK and template is not None:
            mismatch = template_mismatch(template.text, body)
            if mismatch:
                errors.setdefault("body", []).extend(mismatch)
            if content.get("link_url"):
                errors.setdefault("link_url", []).append(_("AlimTalk buttons come from the approved template."))
    return errors


def campaign_content_errors(campaign: Campaign) -> list[str]:
    """Every problem of the campaign and its variants, as sentences (for the lifecycle services)."""
    problems = [message for messages in campaign_channel_errors(campaign).values() for message in messages]
    for variant in campaign.variants.all():
        content = {
            "subject": variant.subject,
            "body": variant.body,
            "link_url": variant.link_url,
            "image": variant.image.name if variant.image else "",
        }
        for messages in variant_errors(campaign, content).values():
            problems += [f"{variant.name}: {message}" for message in messages]
    return problems
