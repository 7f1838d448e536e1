"""Receipts: what providers report after a send, applied to one set of fields of the send: ``delivery_status``,
``delivery_detail``, ``delivery_updated_at``, ``delivered_at``, ``opened_at``, ``clicked_at``. ``Send.status`` stays
what sending did (``sent``); the receipt says what happened next. Suppressions a receipt implies are written by
``campaigns.services.suppressions``.

Email: ``receipts_apply(events=..., esp_name=...)`` is called by the receiver of ``anymail.signals.tracking`` (one
webhook request: one or a few events). Per event, the send is found by the provider's message id (indexed),
narrowed by the recipient's address or the send id the backend put in the metadata (a Mailgun batch shares one
message id across its recipients). Then, in one transaction:

- ``delivered``, ``deferred``, ``bounced``, ``rejected``, ``failed``, ``complained``, ``unsubscribed`` set the send's
  ``delivery_status`` (never downgrading a more final one: webhooks arrive in any order) with the provider's reason
  in ``delivery_detail``; ``delivered_at`` is the first delivery;
- ``opened`` and ``clicked`` set ``opened_at``/``clicked_at`` (the first one) and imply delivery; one reported with
  the user agent of a scanner or of Apple Mail Privacy Protection's proxy is not counted (docs/analytics.md);
- a hard bounce (not a deferral), a complaint, or a provider-side unsubscribe suppress the email channel for the
  contact; an unsubscribe also withdraws the email consent (``contact_unsubscribe``). A rejection because of an
  earlier bounce, complaint or unsubscribe at the provider suppresses as well.

SMS and KakaoTalk: ``message_receipt_apply(provider_message_id=..., delivered=...)`` is called by the Twilio and
Solapi webhooks (``campaigns.webhooks``); the send is found by its message's or its SMS fallback's provider ID.
Delivered sets ``delivery_status`` ``delivered`` and ``delivered_at``; a failure sets ``failed`` with the provider's
reason in ``delivery_detail``, and suppresses SMS when the number cannot receive texts. A text's delivery is final:
a failure reported after it changes nothing.

Idempotent: the same event or report applied twice changes nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import structlog
from anymail.signals import AnymailTrackingEvent, EventType, RejectReason
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.channels.email import SEND_ID_METADATA
from campaigns.models import DELIVERY_RANK, DeliveryStatus, Send, Suppression
from campaigns.services.suppressions import contact_unsubscribe, suppressions_add
from campaigns.tracking import bot_reason

log = structlog.get_logger(__name__)

STATUS_OF_EVENT = {
    EventType.DEFERRED: DeliveryStatus.DEFERRED,
    EventType.DELIVERED: DeliveryStatus.DELIVERED,
    EventType.BOUNCED: DeliveryStatus.BOUNCED,
    EventType.REJECTED: DeliveryStatus.REJECTED,
    EventType.FAILED: DeliveryStatus.FAILED,
    EventType.COMPLAINED: DeliveryStatus.COMPLAINED,
    EventType.UNSUBSCRIBED: DeliveryStatus.UNSUBSCRIBED,
}
#: Reasons for a provider's refusal that mean the address must not be mailed again.
SUPPRESSING_REJECTS = {
    RejectReason.BOUNCED: Suppression.Reason.BOUNCED,
    RejectReason.INVALID: Suppression.Reason.BOUNCED,
    RejectReason.TIMED_OUT: Suppression.Reason.BOUNCED,
    RejectReason.SPAM: Suppression.Reason.COMPLAINED,
    RejectReason.UNSUBSCRIBED: Suppression.Reason.UNSUBSCRIBED,
}


def _find_send(event: AnymailTrackingEvent) -> Send | None:
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    raw_id = str(metadata.get(SEND_ID_METADATA, ""))
    send_id = int(raw_id) if raw_id.isdigit() else None
    if not event.message_id and send_id is None:
        return None
    sends = Send.objects.filter(channel="email")
    if event.message_id:
        sends = sends.filter(provider_message_id=event.message_id)
        if send_id is not None:
            sends = sends.filter(pk=send_id)
    else:
        sends = sends.filter(pk=send_id)
    if event.recipient:
        sends = sends.filter(address__iexact=event.recipient)
    candidates = list(sends.order_by("id")[:2])
    return candidates[0] if len(candidates) == 1 else None


def _detail(event: AnymailTrackingEvent) -> str:
    parts = [event.reject_reason or "", event.description or "", event.mta_response or ""]
    return " — ".join(p for p in parts if p)[:2000]


def _automatic(event: AnymailTrackingEvent, send: Send, *, at: datetime) -> bool:
    """An open or click the provider saw from a scanner or Apple's prefetch proxy (``campaigns.tracking``'s rules,
    applied when the provider reports the user agent): not counted unless ``TRACKING_COUNT_BOTS``."""
    if not event.user_agent or settings.LOOP_TRACKING_COUNT_BOTS:
        return False
    kind = "open" if event.event_type == EventType.OPENED else "click"
    delivered = send.delivered_at or send.sent_at
    return bool(bot_reason(method="GET", user_agent=event.user_agent, ip="", kind=kind, at=at, delivered_at=delivered))


def receipt_apply(*, event: AnymailTrackingEvent, esp_name: str, now: datetime | None = None) -> bool:
    """Apply one tracking event; False when it concerns no send of ours (or is of no interest)."""
    now = now or timezone.now()
    at = event.timestamp or now
    send = _find_send(event)
    if send is None:
        log.info("receipt_unmatched", esp=esp_name, event_type=event.event_type)
        return False
    with transaction.atomic():
        send = Send.objects.select_for_update().get(pk=send.pk)
        changed: list[str] = []
        status = STATUS_OF_EVENT.get(event.event_type)
        if event.event_type in (EventType.OPENED, EventType.CLICKED):
            field = "opened_at" if event.event_type == EventType.OPENED else "clicked_at"
            if getattr(send, field) is None and not _automatic(event, send, at=at):
                setattr(send, field, at)
                changed.append(field)
            if DELIVERY_RANK[send.delivery_status] < DELIVERY_RANK[DeliveryStatus.DELIVERED]:
                status = DeliveryStatus.DELIVERED  # an open or click proves delivery
        if status is not None and DELIVERY_RANK[status] > DELIVERY_RANK[send.delivery_status]:
            send.delivery_status, send.delivery_updated_at = status, at
            changed += ["delivery_status", "delivery_updated_at"]
            if status != DeliveryStatus.DELIVERED or not send.delivery_detail:
                send.delivery_detail = _detail(event)
                changed.append("delivery_detail")
        if status == DeliveryStatus.DELIVERED and send.delivered_at is None:
            send.delivered_at = at
            changed.append("delivered_at")
        if changed:
            send.save(update_fields=sorted(set(changed)))
        _suppress(send, event, esp_name=esp_name, now=now)
    log.info("receipt_applied", esp=esp_name, send_id=send.pk, event_type=event.event_type)
    return True


def _suppress(send: Send, event: AnymailTrackingEvent, *, esp_name: str, now: datetime) -> None:
    reason = None
    if event.event_type == EventType.BOUNCED:
        reason = Suppression.Reason.BOUNCED
    elif event.event_type == EventType.COMPLAINED:
        reason = Suppression.Reason.COMPLAINED
    elif event.event_type == EventType.REJECTED:
        reason = SUPPRESSING_REJECTS.get(event.reject_reason)
    elif event.event_type == EventType.UNSUBSCRIBED:
        contact_unsubscribe(
            contact_id=send.contact_id, channel="email", send_id=send.pk, source=f"esp:{esp_name}:unsubscribe"[:100]
        )
        return
    if reason is not None:
        suppressions_add(
            contact_ids=[send.contact_id],
            channel="email",
            reason=reason,
            detail=f"{esp_name} {event.event_type}, send {send.pk}: {_detail(event)}"[:2000],
            now=now,
        )


def receipts_apply(*, events: Iterable[AnymailTrackingEvent], esp_name: str) -> int:
    return sum(receipt_apply(event=event, esp_name=esp_name) for event in events)


def message_receipt_apply(
    *,
    provider_message_id: str,
    delivered: bool,
    error: str = "",
    invalid_number: bool = False,
    now: datetime | None = None,
) -> Send | None:
    """Record an SMS/KakaoTalk delivery report. Returns the send, or None when no send has that message ID."""
    now = now or timezone.now()
    if not provider_message_id:
        return None
    with transaction.atomic():
        send = (
            Send.objects.select_for_update()
            .filter(Q(provider_message_id=provider_message_id) | Q(fallback_provider_message_id=provider_message_id))
            .first()
        )
        if send is None:
            log.info("receipt_unknown_message", provider_message_id=provider_message_id)
            return None
        if send.delivery_status == DeliveryStatus.DELIVERED:
            return send  # providers repeat reports; a text's delivery is final
        if delivered:
            send.delivery_status, send.delivered_at = DeliveryStatus.DELIVERED, now
        elif send.delivery_status == DeliveryStatus.FAILED:
            return send
        else:
            send.delivery_status, send.delivery_detail = DeliveryStatus.FAILED, error[:2000]
        send.delivery_updated_at = now
        send.save(update_fields=["delivery_status", "delivered_at", "delivery_detail", "delivery_updated_at"])
        if not delivered and invalid_number:
            channel = "sms" if send.fallback_channel == "sms" else send.channel
            suppressions_add(
                contact_ids=[send.contact_id], channel=channel, reason=Suppression.Reason.BOUNCED, detail=error, now=now
            )
    return send
