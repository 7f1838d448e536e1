"""Applying stored events to derived state, in a worker, in batches: the second half of ingest.

The API stores each new event with an ``UnprocessedEvent`` row and answers (``crm.services.ingest``). Here, in
one transaction per batch of up to ``BATCH_SIZE`` events, oldest id first:

1. the batch's queue rows are claimed (``SELECT ... FOR UPDATE SKIP LOCKED``) and its events read;
2. their contacts are locked in id order (``FOR NO KEY UPDATE``; merges and profile edits elsewhere then queue
   instead of deadlocking); an event whose contact was merged away meanwhile follows it to the surviving contact;
   events of erased contacts are skipped;
3. in time order (``occurred_at``, then id: an identify before a track of the same instant in a batch, "Product
   Added" before "Product Removed"): profile traits and consent, push tokens, commerce state (carts, orders and
   order history, wishlists, coupons), first/last seen;
4. ``crm.signals.events_recorded`` announces the batch's event ids inside the same transaction (each receiver in
   a savepoint of its own), and the queue rows are deleted: what receivers write commits with the batch, exactly once.

Exactly once: derived state is written in the same transaction that deletes the queue rows, so a batch is either
applied and gone, or not applied and still queued (a worker that dies mid-batch, a retried task, a second worker:
the rows are claimed with ``SKIP LOCKED`` and a row that is gone is never applied again).

Order: on PostgreSQL only one worker applies batches at a time (a transaction-level advisory lock; a second worker
that finds it taken returns at once and the holder looks once more for new rows after releasing it), so a contact's
events are applied in id order across batches, as they would be by one process. One worker applies several
thousand events per second (docs/performance.md); more workers add availability, not throughput. On SQLite, writes
are serialized anyway.

An event that cannot be applied (a bug, data nobody foresaw) is isolated by bisecting the batch with savepoints:
the others are applied, it keeps its queue row with ``failed_at`` and the error, and it is logged. Database outages
and deadlocks are not isolated: the batch rolls back and is retried whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Min
from django.utils import timezone

from config.logging import get_logger
from crm.db import bulk_update_rows, bulk_upsert, int_array, json_param
from crm.ingest.messages import Profile, parse_profile
from crm.models import Contact, Device, Event, Source, UnprocessedEvent
from crm.services.commerce import commerce_apply
from crm.services.consent import ConsentInput, consent_record_many
from crm.services.ingest import PROCESS_TRIGGER_KEY, contacts_seen_refresh
from crm.signals import events_recorded

logger = get_logger(__name__)

#: Events per batch (one transaction): large enough that each statement serves many events, small enough that a
#: batch takes well under a second.
BATCH_SIZE = 1000
#: PostgreSQL advisory lock key held by the one worker applying a batch (any constant unique in the product).
LANE_LOCK_KEY = 0x10_0C_E7_E7  # "loop events"
#: How many times one batch follows contacts merged away while it waited for their locks.
MAX_RELOCKS = 3


@dataclass(slots=True)
class StoredEvent:
    """What derived state needs of a stored event (the fields commerce and profile rules read)."""

    id: int
    contact_id: int
    source_id: int
    message_id: str
    type: str
    name: str
    properties: dict[str, Any]
    context: dict[str, Any]
    occurred_at: datetime
    profile: Profile = field(default_factory=Profile)


@dataclass(slots=True)
class ProcessResult:
    applied: int = 0
    failed: int = 0
    skipped: int = 0
    batches: int = 0
    busy: bool = False  # another worker held the lane: it processes what is left

    @property
    def processed(self) -> int:
        return self.applied + self.failed + self.skipped


@dataclass(slots=True)
class _Batch:
    claimed: int = 0
    applied: int = 0
    failed: int = 0
    skipped: int = 0


def _profile(event_type: str, properties: dict, context: dict) -> Profile:
    """The profile a stored event carries: identify traits (stored as its properties), else ``context.traits``.
    The API validated them before storing; a value that no longer parses is left out."""
    traits = properties if event_type == "identify" else context.get("traits")
    if not isinstance(traits, dict) or not traits:
        return Profile()
    return parse_profile(traits, {}, "traits")


_EVENT_FIELDS = ("id", "contact_id", "source_id", "message_id", "type", "name", "properties", "context", "occurred_at")

#: Claim the oldest queued rows and read their events, in one statement (PostgreSQL). A row whose event is gone
#: (deleted with its contact) comes back with NULLs.
_CLAIM_SQL = """
WITH claimed AS (
    SELECT event_id FROM crm_unprocessedevent WHERE failed_at IS NULL
    ORDER BY event_id LIMIT %s FOR UPDATE SKIP LOCKED
)
SELECT claimed.event_id, e.contact_id, e.source_id, e.message_id, e.type, e.name, e.properties::text,
       e.context::text, e.occurred_at
FROM claimed LEFT JOIN crm_event e ON e.id = claimed.event_id
"""


def _stored_event(row: tuple) -> StoredEvent:
    event = StoredEvent(*row)
    event.profile = _profile(event.type, event.properties, event.context)
    return event


def _claim(batch_size: int) -> tuple[list[int], dict[int, StoredEvent]]:
    """Claim up to ``batch_size`` queued rows (skipping rows another transaction holds) and read their events.
    Returns (claimed event ids, the events that still exist)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM_SQL, [batch_size])
            rows = cursor.fetchall()
        claimed = [row[0] for row in rows]
        events = {
            row[0]: _stored_event((*row[:6], orjson.loads(row[6]), orjson.loads(row[7]), row[8]))
            for row in rows
            if row[1] is not None
        }
        return claimed, events
    claimed = list(
        UnprocessedEvent.objects.filter(failed_at__isnull=True)
        .order_by("event_id")
        .select_for_update(skip_locked=True)
        .values_list("event_id", flat=True)[:batch_size]
    )
    events = {row[0]: _stored_event(row) for row in Event.objects.filter(id__in=claimed).values_list(*_EVENT_FIELDS)}
    return claimed, events


def _lock_contacts(events: dict[int, StoredEvent]) -> dict[int, bool]:
    """Lock the events' contacts in id order; follow merges. Returns contact id → erased, for the live contacts."""
    locked: dict[int, bool] = {}
    for _attempt in range(MAX_RELOCKS):
        wanted = {e.contact_id for e in events.values()} - set(locked)
        if not wanted:
            break
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT id, erased_at IS NOT NULL FROM crm_contact WHERE id = ANY(%s::bigint[]) "
                    "ORDER BY id FOR NO KEY UPDATE",
                    [int_array(wanted)],
                )
                locked.update(cursor.fetchall())
        else:
            rows = Contact.objects.filter(id__in=wanted).values_list("id", "erased_at")
            locked.update((cid, erased is not None) for cid, erased in rows)
        if all(e.contact_id in locked for e in events.values()):
            break
        # A contact was merged away (deleted) while we waited: its events now belong to the surviving contact.
        moved = dict(Event.objects.filter(id__in=list(events)).values_list("id", "contact_id"))
        for event_id in list(events):
            if event_id not in moved:
                del events[event_id]  # deleted with its contact
            else:
                events[event_id].contact_id = moved[event_id]
    return locked


def _apply_profiles(events: list[StoredEvent], source_names: dict[int, str]) -> None:
    with_profile = [e for e in events if not e.profile.is_empty()]
    if not with_profile:
        return
    contacts = {c.pk: c for c in Contact.objects.filter(id__in={e.contact_id for e in with_profile})}
    changed: set[int] = set()
    dirty: set[str] = set()
    consents: list[ConsentInput] = []
    for e in with_profile:
        contact, p = contacts.get(e.contact_id), e.profile
        if contact is None:
            continue
        for attr in ("email", "phone", "name", "locale", "time_zone"):
            value = getattr(p, attr)
            if value and getattr(contact, attr) != value:
                setattr(contact, attr, value)
                dirty.add(attr)
                changed.add(contact.pk)
        if p.attributes:
            merged = {**contact.attributes, **p.attributes}
            if merged != contact.attributes:
                contact.attributes = merged
                dirty.add("attributes")
                changed.add(contact.pk)
        consents.extend(
            ConsentInput(e.contact_id, purpose, granted, e.occurred_at, f"api:{source_names.get(e.source_id, '')}")
            for purpose, granted in p.consents.items()
        )
    if changed:
        now = timezone.now()  # `updated_since` in the API relies on it
        fields = sorted(dirty)
        bulk_update_rows(
            Contact,
            [{"id": pk, **{f: getattr(contacts[pk], f) for f in fields}, "updated_at": now} for pk in sorted(changed)],
        )
    consent_record_many(changes=consents)


def _register_devices(events: list[StoredEvent]) -> None:
    devices: dict[str, dict[str, Any]] = {}
    for e in events:
        device = e.context.get("device")
        if not isinstance(device, dict) or not isinstance(device.get("token"), str) or not device["token"].strip():
            continue
        platform = str(device.get("type", "")).lower()
        app = e.context.get("app") if isinstance(e.context.get("app"), dict) else {}
        token = device["token"].strip()[:512]
        devices[token] = {
            "contact_id": e.contact_id,
            "token": token,
            "platform": platform if platform in Device.Platform.values else Device.Platform.WEB,
            "app_id": str(app.get("namespace") or app.get("name") or "")[:200],
            "active": True,
            "deactivated_reason": "",
            "created_at": e.occurred_at,
            "last_seen_at": e.occurred_at,
        }
    bulk_upsert(
        Device,
        list(devices.values()),
        unique_fields=["token"],
        update_fields=["contact_id", "platform", "app_id", "active", "deactivated_reason", "last_seen_at"],
    )


def contacts_seen_extend(*, events: Iterable[tuple[int, datetime]]) -> None:
    """Widen first/last seen to these events (``(contact id, occurred_at)``), writing only the contacts whose
    values change: one statement without a per-contact subquery on PostgreSQL (``contacts_seen_refresh``, which
    recomputes from all events, elsewhere)."""
    bounds: dict[int, tuple[datetime, datetime]] = {}
    for cid, at in events:
        lo, hi = bounds.get(cid, (at, at))
        bounds[cid] = (min(lo, at), max(hi, at))
    if not bounds:
        return
    if connection.vendor != "postgresql":
        contacts_seen_refresh(contact_ids=set(bounds))
        return
    rows = [{"id": cid, "lo": bounds[cid][0], "hi": bounds[cid][1]} for cid in sorted(bounds)]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE crm_contact c SET first_seen_at = LEAST(COALESCE(c.first_seen_at, v.lo), v.lo), "
            "last_seen_at = GREATEST(COALESCE(c.last_seen_at, v.hi), v.hi) "
            "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, lo timestamptz, hi timestamptz) "
            "WHERE c.id = v.id AND (c.first_seen_at IS NULL OR c.last_seen_at IS NULL "
            "OR v.lo < c.first_seen_at OR v.hi > c.last_seen_at)",
            [json_param(rows)],
        )


def _apply(events: list[StoredEvent], source_names: dict[int, str]) -> None:
    """Derived state of these events (already in time order, contacts locked)."""
    pairs = [(e.contact_id, e) for e in events]
    _apply_profiles(events, source_names)
    _register_devices(events)
    commerce_apply(messages=pairs)
    contacts_seen_extend(events=[(e.contact_id, e.occurred_at) for e in events])


def _apply_isolating(
    events: list[StoredEvent], apply: Callable[[list[StoredEvent]], None]
) -> tuple[list[StoredEvent], list[tuple[StoredEvent, Exception]]]:
    """Apply ``events`` in a savepoint; if that fails, bisect until the failing events are found. Returns (applied,
    failed with their error). Database outages and deadlocks are not the events' fault: they propagate."""
    try:
        with transaction.atomic():
            apply(events)
        return events, []
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        if len(events) == 1:
            return [], [(events[0], exc)]
    middle = len(events) // 2
    applied_a, failed_a = _apply_isolating(events[:middle], apply)
    applied_b, failed_b = _apply_isolating(events[middle:], apply)
    return applied_a + applied_b, failed_a + failed_b


def _announce(event_ids: list[int]) -> None:
    """Send ``events_recorded`` inside the batch's transaction, each receiver in a savepoint: a receiver's writes
    commit with the batch (exactly once, never for a batch that rolls back); one that raises is logged, its writes
    are undone, and the others and the batch go on. Database outages propagate and roll the whole batch back."""
    # Django's Signal offers per-receiver calls only through send_robust, which cannot wrap each in a savepoint.
    sync_receivers, _async_receivers = events_recorded._live_receivers(Event)
    for receiver in sync_receivers:
        try:
            with transaction.atomic():
                receiver(signal=events_recorded, sender=Event, event_ids=event_ids)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            logger.error(
                "events.receiver_failed",
                receiver=getattr(receiver, "__qualname__", repr(receiver)),
                error=f"{type(exc).__name__}: {exc}"[:300],
                events=len(event_ids),
            )


def _dequeue(event_ids: list[int]) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            sql = "DELETE FROM crm_unprocessedevent WHERE event_id = ANY(%s::bigint[])"
            cursor.execute(sql, [int_array(event_ids)])
    else:
        UnprocessedEvent.objects.filter(event_id__in=event_ids).delete()


def _process_batch(batch_size: int, source_names: dict[int, str]) -> _Batch | None:
    """One batch in one transaction; None when another worker holds the lane."""
    outcome = _Batch()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LANE_LOCK_KEY])
                if not cursor.fetchone()[0]:
                    return None
                # Foreign keys are checked per statement, so that a savepoint catches what a commit would refuse.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        claimed, events = _claim(batch_size)  # an event deleted meanwhile (with its contact) is not in events
        outcome.claimed = len(claimed)
        if not claimed:
            return outcome
        erased = _lock_contacts(events)
        live = [e for e in events.values() if e.contact_id in erased and not erased[e.contact_id]]
        # Contacts that kept moving under concurrent merges: leave those events queued for the next batch.
        unlocked = {e.id for e in events.values() if e.contact_id not in erased}
        live.sort(key=lambda e: (e.occurred_at, e.id))
        missing = {e.source_id for e in live} - set(source_names)
        if missing:
            source_names.update(Source.objects.filter(id__in=missing).values_list("id", "name"))
        applied, failed = _apply_isolating(live, lambda chunk: _apply(chunk, source_names))
        failed_ids = {e.id for e, _exc in failed}
        applied_ids = sorted(e.id for e in applied)
        if applied_ids:
            _announce(applied_ids)
        _dequeue([i for i in claimed if i not in failed_ids | unlocked])
        if failed:
            now = timezone.now()
            for event, exc in failed:
                error = f"{type(exc).__name__}: {exc}"[:2000]
                UnprocessedEvent.objects.filter(event_id=event.id).update(failed_at=now, error=error)
                logger.error("events.apply_failed", event_id=event.id, name=event.name, error=error[:300])
        outcome.applied, outcome.failed = len(applied), len(failed)
        outcome.skipped = outcome.claimed - outcome.applied - outcome.failed - len(unlocked)
    return outcome


def events_process_pending(
    *, batch_size: int = BATCH_SIZE, max_batches: int | None = None, linger: float = 0.0
) -> ProcessResult:
    """Apply queued events to derived state, oldest first, one batch per transaction, until none is left (or
    ``max_batches``). Safe to run in any number of workers at once, and again after a crash (see the module
    docstring). ``linger``: when nothing is left, wait this long and look once more before returning (the task
    does, see ``crm.services.ingest.PROCESS_TRIGGER_MEMO_SECONDS``). Returns what was done; ``busy`` when another
    worker was already at it."""
    cache.delete(PROCESS_TRIGGER_KEY)  # requests from now on queue a new task: nothing committed later is missed
    result = ProcessResult()
    source_names: dict[int, str] = {}
    empty_looks = 0
    while max_batches is None or result.batches < max_batches:
        batch = _process_batch(batch_size, source_names)
        if batch is None:
            result.busy = True
            break
        if not batch.claimed:
            # Rows committed while this worker held the lane may have been invisible to its claim, and a worker
            # started meanwhile found the lane taken and returned; a request may have relied on this task being
            # on its way (the trigger's memo): look once more, after ``linger``, without the lock.
            empty_looks += 1
            if empty_looks > 1:
                break
            if linger:
                time.sleep(linger)
            if not UnprocessedEvent.objects.filter(failed_at__isnull=True).exists():
                break
            continue
        empty_looks = 0
        result.batches += 1
        result.applied += batch.applied
        result.failed += batch.failed
        result.skipped += batch.skipped
    return result


@dataclass(frozen=True, slots=True)
class Backlog:
    """Events stored but not yet applied: how many, and how long the oldest has waited."""

    pending: int
    failed: int
    oldest_received_at: datetime | None

    def oldest_age(self, now: datetime | None = None) -> timedelta | None:
        if self.oldest_received_at is None:
            return None
        return max(timedelta(0), (now or timezone.now()) - self.oldest_received_at)


#: The sweep logs a warning when the oldest queued event has waited longer than this, or when events failed.
BACKLOG_WARNING_AGE = timedelta(seconds=60)
#: Backlog counts stop at this many rows (a count of a huge backlog would be a slow health check).
BACKLOG_COUNT_LIMIT = 100_000


def events_backlog() -> Backlog:
    """The processing backlog (a read: for /healthz, the sweep's log and the admin)."""
    pending = UnprocessedEvent.objects.filter(failed_at__isnull=True)
    count = pending.order_by()[:BACKLOG_COUNT_LIMIT].count()
    failed = UnprocessedEvent.objects.filter(failed_at__isnull=False).count()
    oldest_id = pending.aggregate(first=Min("event_id"))["first"] if count else None
    oldest = Event.objects.filter(id=oldest_id).values_list("received_at", flat=True).first() if oldest_id else None
    return Backlog(pending=count, failed=failed, oldest_received_at=oldest)


def events_retry_failed(*, event_ids: Iterable[int] | None = None) -> int:
    """Queue failed events again (after the cause was fixed); returns how many."""
    rows = UnprocessedEvent.objects.filter(failed_at__isnull=False)
    if event_ids is not None:
        rows = rows.filter(event_id__in=list(event_ids))
    return rows.update(failed_at=None, error="")


def events_sweep(*, warn_after: timedelta = BACKLOG_WARNING_AGE) -> ProcessResult | None:
    """The beat sweep: apply anything queued (events whose processing task was lost are applied within one sweep
    interval) and log a warning when the backlog is old or events failed. None when nothing was queued."""
    backlog = events_backlog()
    age = backlog.oldest_age()
    if backlog.failed or (age is not None and age > warn_after):
        logger.warning(
            "events.backlog",
            pending=backlog.pending,
            failed=backlog.failed,
            oldest_seconds=round(age.total_seconds(), 1) if age is not None else None,
        )
    if not backlog.pending:
        return None
    return events_process_pending()
