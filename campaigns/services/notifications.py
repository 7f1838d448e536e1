"""Team notifications: Slack messages and signed webhooks to a ``Destination``, with their own small ledger.

``slack_notify`` / ``webhook_notify`` (and ``notify`` under them) write a ``Notification`` row and queue its
delivery after the caller's commit; they are what journeys and reports call. Delivery goes through the channel's
backend (``backend_for``: ``LOOP_CHANNEL_BACKENDS``, and the outbox under ``LOOP_CHANNEL_DRY_RUN``), with the
guarantees of the send pipeline in small:

- **Idempotent** by ``key``: a second call with the same key returns the first notification and sends nothing.
- **Claimed** with a conditional ``UPDATE`` (``queued`` and due → ``sending``): a duplicated task sends nothing.
- **Transient failures** (timeouts, 429, 5xx) go back to ``queued`` with a due time (backoff 1, 2, 4… minutes, or
  the provider's ``Retry-After`` if longer), released by the minute tick; after ``LOOP_SEND_MAX_ATTEMPTS`` they fail.
  Permanent ones (4xx, unknown destination) fail at once with the reason.
- A worker that dies mid-call leaves a ``sending`` row; after ``LOOP_SEND_CLAIM_LEASE`` the tick marks it failed
  ("delivery unknown") rather than risk a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from campaigns.channels import Message, backend_for, backend_name_for
from campaigns.models import Destination, Notification
from campaigns.services.sending import backoff

log = structlog.get_logger(__name__)


def _destination(destination: Destination | str, kind: str) -> Destination:
    if isinstance(destination, str):
        try:
            destination = Destination.objects.get(name=destination)
        except Destination.DoesNotExist:
            raise ValueError(f"no destination named {destination!r}") from None
    if destination.kind != kind:
        raise ValueError(f"destination {destination.name!r} is a {destination.kind} destination, not {kind}")
    return destination


def notify(
    *,
    destination: Destination | str,
    channel: str,
    text: str = "",
    payload: dict[str, Any] | list[Any] | None = None,
    event: str = "",
    key: str | None = None,
    now: datetime | None = None,
) -> Notification:
    """Queue one team notification; delivered after the caller's transaction commits. Idempotent by ``key``."""
    now = now or timezone.now()
    target = _destination(destination, channel)
    if key is not None:
        existing = Notification.objects.filter(key=key).first()
        if existing is not None:
            return existing
    notification = Notification(
        destination=target,
        channel=channel,
        key=key,
        event=event,
        text=text,
        payload=payload if payload is not None else {},
        due_at=now,
    )
    try:
        with transaction.atomic():
            notification.save()
            _enqueue([notification.pk], now=now)
    except IntegrityError:
        if key is None:
            raise
        return Notification.objects.get(key=key)
    return notification


def slack_notify(
    destination: Destination | str,
    *,
    text: str,
    blocks: Sequence[dict[str, Any]] | None = None,
    key: str | None = None,
) -> Notification:
    """Post to a Slack destination: ``text`` (shown in the notification, and alone when there are no blocks) and
    optional Block Kit ``blocks`` (``campaigns.channels.slack.blocks`` builds them)."""
    return notify(destination=destination, channel="slack", text=text, payload=list(blocks or []), key=key)


def webhook_notify(
    destination: Destination | str, *, event: str, data: dict[str, Any], key: str | None = None
) -> Notification:
    """POST ``{"id", "event", "created_at", "data"}``, signed, to a webhook destination."""
    return notify(destination=destination, channel="webhook", event=event, payload=data, key=key)


def _enqueue(ids: list[int], *, now: datetime) -> None:
    """Queue one delivery task for ``ids`` after the commit (call inside the transaction that made them due)."""
    from campaigns.tasks import deliver_notifications

    if ids:
        Notification.objects.filter(pk__in=ids).update(enqueued_at=now)
        transaction.on_commit(lambda: deliver_notifications.delay(ids))


def _message(notification: Notification) -> Message:
    extra: dict[str, Any] = {
        "notification_id": notification.pk,
        "event": notification.event,
        "created_at": notification.created_at.isoformat(),
    }
    if notification.channel == "slack":
        extra["blocks"] = notification.payload or []
    else:
        extra["data"] = notification.payload
    return Message(
        send_id=notification.pk,
        channel=notification.channel,
        contact_id=0,
        to=notification.destination.name,
        body=notification.text,
        extra=extra,
    )


def notifications_deliver(*, notification_ids: Sequence[int], now: datetime | None = None) -> dict[str, int]:
    """Claim the due notifications among ``notification_ids`` and deliver them (the body of the task)."""
    now = now or timezone.now()
    counts = {"sent": 0, "retry": 0, "failed": 0}
    ids = list(notification_ids)
    due = Notification.objects.filter(pk__in=ids, status=Notification.Status.QUEUED, due_at__lte=now)
    for pk in list(due.values_list("pk", flat=True)):
        claimed = Notification.objects.filter(pk=pk, status=Notification.Status.QUEUED, due_at__lte=now).update(
            status=Notification.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1
        )
        if not claimed:  # another worker took it
            continue
        notification = Notification.objects.select_related("destination").get(pk=pk)
        backend = backend_for(notification.channel)
        try:
            [result] = backend.send_batch([_message(notification)])
        except Exception as exc:
            log.exception("notification_failed", notification=pk, error_type=type(exc).__name__)
            result = None
            error, transient, wait = f"{type(exc).__name__}: {exc}", True, None
        else:
            error, transient, wait = result.error, result.transient, result.retry_after
        notification.backend = backend_name_for(notification.channel)
        if result is not None and result.ok:
            notification.status, notification.sent_at, notification.error = Notification.Status.SENT, now, ""
            notification.provider_message_id = result.provider_message_id[:255]
            counts["sent"] += 1
        elif transient and notification.attempts < settings.LOOP_SEND_MAX_ATTEMPTS:
            delay = max(backoff(notification.attempts), timedelta(seconds=wait or 0))
            notification.status, notification.due_at = Notification.Status.QUEUED, now + delay
            notification.enqueued_at = None  # the tick queues it when it is due
            notification.error = error[:2000]
            counts["retry"] += 1
        else:
            notification.status, notification.error = Notification.Status.FAILED, error[:2000]
            counts["failed"] += 1
        notification.save(
            update_fields=["status", "sent_at", "due_at", "enqueued_at", "error", "backend", "provider_message_id"]
        )
    if any(counts.values()):
        log.info("notifications_delivered", **counts)
    return counts


def notifications_dispatch_due(*, now: datetime | None = None, limit: int = 1000) -> int:
    """The tick: fail notifications whose worker died mid-call (never a duplicate), queue the due ones that no task
    carries."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LOOP_SEND_CLAIM_LEASE)
    lost = Notification.objects.filter(status=Notification.Status.SENDING, claimed_at__lt=stale).update(
        status=Notification.Status.FAILED,
        error="worker interrupted during delivery; delivery unknown, not retried to avoid a duplicate",
    )
    if lost:
        log.warning("notifications_lost", count=lost)
    with transaction.atomic():
        # Due and carried by no task (a retry whose time came, or a task lost longer than the lease ago).
        ids = list(
            Notification.objects.filter(status=Notification.Status.QUEUED, due_at__lte=now)
            .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
            .order_by("due_at", "id")
            .values_list("pk", flat=True)[:limit]
        )
        _enqueue(ids, now=now)
    return len(ids)


def notifications_retry(*, notification_ids: Sequence[int], now: datetime | None = None) -> int:
    """Queue failed notifications again from their first attempt (after fixing a destination's URL, say)."""
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(
            Notification.objects.filter(pk__in=list(notification_ids), status=Notification.Status.FAILED).values_list(
                "pk", flat=True
            )
        )
        Notification.objects.filter(pk__in=ids).update(
            status=Notification.Status.QUEUED, attempts=0, due_at=now, error="", claimed_at=None
        )
        _enqueue(ids, now=now)
    return len(ids)
