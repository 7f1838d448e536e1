"""The tracking API's service: turn a posted payload (a batch or one message) into stored events.

Policy for a batch with some bad messages (documented in docs/api.md): the valid messages are stored and the
response is 200 with each refused message listed by index and field; a batch in which no message is valid is
answered 400. SDKs treat any non-200 answer as a failure of the whole batch and either drop it or send all of it
again, so refusing a whole batch for one bad message would lose the good ones. Every refused message is also kept
in ``RejectedMessage`` for operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import JSONField, Value
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.ingest.messages import Message, MessageError, parse_message, parse_timestamp
from crm.models import RejectedMessage, Source
from crm.services.ingest import event_record_batch

#: At most this many messages per batch (Segment limits by size only; this guards memory and transaction length).
MAX_BATCH_MESSAGES = 2_000


class PayloadError(Exception):
    """The payload as a whole is unusable (not a batch, empty, every message invalid)."""

    def __init__(self, message: str, errors: Any = None):
        super().__init__(message)
        self.message = message
        self.errors = errors


@dataclass(slots=True)
class TrackingResult:
    stored: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_response(self) -> dict[str, Any]:
        body: dict[str, Any] = {"success": True, "stored": self.stored, "duplicates": self.duplicates}
        if self.rejected:
            body["rejected"] = self.rejected
        return body


def _without_write_key(raw: Any) -> Any:
    if isinstance(raw, dict) and "writeKey" in raw:
        return {k: v for k, v in raw.items() if k != "writeKey"}
    if raw is None:  # JSON null, not SQL NULL (the column is NOT NULL)
        return Value(None, JSONField())
    return raw


def tracking_ingest(
    *, source: Source, payload: Any, endpoint: str, message_type: str | None = None, received_at: datetime | None = None
) -> TrackingResult:
    """Validate and store a Segment-style payload. ``message_type`` is set for the single-message endpoints
    (track, page, ...); ``None`` means a batch (``{"batch": [...], "context": ..., "sentAt": ...}``)."""
    received_at = received_at or timezone.now()
    if not isinstance(payload, dict):
        raise PayloadError(_("The body must be a JSON object."))
    if "writeKey" in payload and not isinstance(payload["writeKey"], str):
        raise PayloadError(_("writeKey must be a string."), {"writeKey": [_("Must be a string.")]})

    if message_type is None:
        items = payload.get("batch")
        if not isinstance(items, list):
            raise PayloadError(
                _("The body needs a 'batch' list of messages."), {"batch": [_("This field is required.")]}
            )
        if not items:
            raise PayloadError(_("The batch is empty."), {"batch": [_("At least one message is required.")]})
        if len(items) > MAX_BATCH_MESSAGES:
            raise PayloadError(
                _("A batch may hold at most %(n)d messages.") % {"n": MAX_BATCH_MESSAGES},
                {"batch": [_("Too many messages.")]},
            )
        context, integrations = payload.get("context"), payload.get("integrations")
        for key, value in (("context", context), ("integrations", integrations)):
            if value is not None and not isinstance(value, dict):
                raise PayloadError(
                    _("%(key)s must be a JSON object.") % {"key": key}, {key: [_("Must be a JSON object.")]}
                )
        try:
            sent_at = parse_timestamp(payload["sentAt"]) if payload.get("sentAt") not in (None, "") else None
        except (ValueError, TypeError):
            raise PayloadError(_("sentAt must be an ISO 8601 date and time."), {"sentAt": [_("Invalid.")]}) from None
    else:
        items, context, integrations, sent_at = [payload], None, None, None

    valid: list[Message] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            valid.append(
                parse_message(
                    raw,
                    index=index,
                    received_at=received_at,
                    default_type=message_type,
                    batch_context=context,
                    batch_integrations=integrations,
                    batch_sent_at=sent_at,
                )
            )
        except MessageError as exc:
            rejected.append({"index": index, "errors": exc.errors})

    if rejected:
        RejectedMessage.objects.bulk_create(
            [
                RejectedMessage(
                    source=source,
                    received_at=received_at,
                    endpoint=endpoint,
                    index=r["index"] if message_type is None else None,
                    payload=_without_write_key(items[r["index"]]),
                    errors=r["errors"],
                )
                for r in rejected
            ]
        )
    if not valid:
        if message_type is None:
            raise PayloadError(_("No message in the batch is valid; nothing was stored."), rejected)
        raise PayloadError(_("The message is invalid; nothing was stored."), rejected[0]["errors"])

    stored = event_record_batch(source=source, messages=valid, received_at=received_at)
    return TrackingResult(stored=stored.stored, duplicates=stored.duplicates, rejected=rejected)
