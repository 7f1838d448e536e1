"""KakaoTalk → SMS/LMS fallback: the same text by text message when Kakao cannot reach the person (no KakaoTalk,
not a friend of the channel, AlimTalk blocked).

Used by the KakaoTalk backend (Solapi refused the message in its answer) and by the Solapi webhook (the delivery
report says so later). A fallback is sent only when the campaign allows it (``Campaign.sms_fallback``), the
contact consented to SMS and SMS is not suppressed for them, and a default SMS sender profile exists; it goes
through the configured SMS backend and is recorded on the send (``fallback_channel``, ``fallback_reason``,
``fallback_provider_message_id``). A send gets at most one fallback.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from campaigns.channels import Message, SendResult, backend_for
from campaigns.models import Send, SenderProfile, Suppression

log = structlog.get_logger(__name__)


def kakao_fallback(*, items: list[tuple[Message, str]]) -> dict[int, SendResult]:
    """Send each KakaoTalk ``Message`` of ``items`` (with the reason Kakao gave) by SMS where allowed.

    Returns the result per send ID: the SMS backend's (accepted, or its failure), or a permanent failure saying
    why no fallback was sent.
    """
    from crm.models import Consent

    if not items:
        return {}
    ids = [message.send_id for message, _reason in items]
    sends = {
        s.pk: s
        for s in Send.objects.filter(pk__in=ids)
        .select_related("campaign")
        .only("pk", "contact_id", "fallback_channel", "campaign__sms_fallback")
    }
    contacts = {message.contact_id for message, _reason in items}
    consented = set(
        Consent.objects.filter(contact_id__in=contacts, purpose="sms", granted=True).values_list(
            "contact_id", flat=True
        )
    )
    suppressed = set(
        Suppression.objects.filter(contact_id__in=contacts, channel="sms").values_list("contact_id", flat=True)
    )
    profile = SenderProfile.objects.filter(kind=SenderProfile.Kind.SMS, is_default=True).first()

    results: dict[int, SendResult] = {}
    ready: list[tuple[Message, str]] = []
    for message, reason in items:
        send = sends.get(message.send_id)
        why_not = ""
        if send is None or not send.campaign.sms_fallback:
            why_not = "SMS fallback off for the campaign"
        elif send.fallback_channel:
            why_not = "SMS fallback already sent"
        elif message.contact_id not in consented:
            why_not = "no SMS consent"
        elif message.contact_id in suppressed:
            why_not = "SMS suppressed"
        elif profile is None:
            why_not = "no default SMS sender profile"
        if why_not:
            results[message.send_id] = SendResult(
                send_id=message.send_id, ok=False, error=f"KakaoTalk: {reason}; no SMS fallback ({why_not})"
            )
            continue
        sms = replace(
            message,
            channel="sms",
            link_url="",
            extra={
                **message.extra,
                "sender": {"kind": "sms", "label": profile.label, "value": profile.value, "sender_key": ""},
                "kakao": {},
                "fallback_for": "kakao",
            },
            body=f"{message.body}\n{message.link_url}".strip() if message.link_url else message.body,
        )
        ready.append((sms, reason))
    if not ready:
        return results
    backend = backend_for("sms")
    for result in backend.send_batch([sms for sms, _reason in ready]):
        reason = next(r for m, r in ready if m.send_id == result.send_id)
        Send.objects.filter(pk=result.send_id, fallback_channel="").update(
            fallback_channel="sms",
            fallback_reason=reason[:300],
            fallback_provider_message_id=result.provider_message_id[:255] if result.ok else "",
        )
        if result.ok:
            results[result.send_id] = result
        else:
            results[result.send_id] = replace(result, error=f"KakaoTalk: {reason}; SMS fallback failed: {result.error}")
        log.info("kakao_fallback", send_id=result.send_id, ok=result.ok)
    return results


def fallback_message(send: Send) -> Message:
    """The KakaoTalk message of a sent ``send``, rebuilt from what was stored (for a fallback after a receipt)."""
    content = send.content or {}
    return Message(
        send_id=send.pk,
        channel=send.channel,
        contact_id=send.contact_id,
        to=send.address,
        body=content.get("body", ""),
        link_url=content.get("link_url", ""),
        advertising=send.advertising,
    )
