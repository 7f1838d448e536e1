"""Storing what the shop reports: the ingest hot path, up to the answer the sender gets.

``event_record_batch`` takes validated messages (``crm.ingest.messages``), stores each new one exactly once and
queues it for processing, and returns; the answer goes out only after the events are committed. It does the least
that must be durable before answering:

1. resolves every message to a contact: by ``userId`` (external ID), else by ``anonymousId`` (an alias). On
   PostgreSQL the messages whose contact is already known (the common case: a returning customer) are resolved,
   inserted and queued by **one statement**, without a transaction of their own and without locking any contact.
   The rest (a new ``userId`` or ``anonymousId``, an ``anonymousId`` met with a ``userId`` of another contact,
   ``alias``) go through the full resolution in a transaction: the contact is created, an anonymous contact is
   turned into the identified one, or merged into it;
2. inserts the events with ``ON CONFLICT (source, message_id) DO NOTHING``: a message already stored (an SDK retry,
   at any later time) is skipped and changes nothing;
3. queues each new event (an ``UnprocessedEvent`` row, in the same statement or transaction) and, after commit,
   makes sure a worker task is coming (``events_process_soon``).

Derived state (profile and consent from traits, devices, commerce state, first/last seen) and the
``crm.signals.events_recorded`` announcement follow in a worker, in batches: see ``crm.services.event_processing``.
Events are visible on the contact's timeline and in the API as soon as the request is answered.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime

from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from config.logging import get_logger
from crm.db import insert_ignore_returning, json_param
from crm.ingest.messages import Message
from crm.models import Contact, ContactAlias, Event, Source, UnprocessedEvent
from crm.services.contacts import contact_merge

logger = get_logger(__name__)

#: Cache key of "a processing task is queued": at most one is queued at a time, however many requests arrive.
PROCESS_TRIGGER_KEY = "crm:events:process-queued"
#: How long the trigger stays set if the queued task never starts (a lost broker message). The task clears it when
#: it starts; the beat sweep (``crm.events_sweep``) processes anything left in any case.
PROCESS_TRIGGER_SECONDS = 5


@dataclass(slots=True)
class IngestResult:
    stored_event_ids: list[int] = field(default_factory=list)
    duplicates: int = 0
    contacts_created: int = 0

    @property
    def stored(self) -> int:
        return len(self.stored_event_ids)


def _resolve_contacts(messages: list[Message]) -> tuple[dict[int, int], int, list[tuple[int, int]]]:
    """Map each message index to a contact id, creating contacts as needed.

    Returns (index → contact id, contacts created, merges to do as (from_contact, into_contact))."""
    user_ids = {m.user_id for m in messages if m.user_id}
    user_ids |= {m.previous_id for m in messages if m.previous_id}
    anon_ids = {m.anonymous_id for m in messages if m.anonymous_id}

    by_uid: dict[str, int] = dict(Contact.objects.filter(external_id__in=user_ids).values_list("external_id", "id"))
    by_aid: dict[str, tuple[int, str | None]] = {
        anon: (cid, ext)
        for anon, cid, ext in ContactAlias.objects.filter(anonymous_id__in=anon_ids).values_list(
            "anonymous_id", "contact_id", "contact__external_id"
        )
    }
    created = 0
    merges: list[tuple[int, int]] = []

    # 1. userIds not seen before: claim the anonymous contact they arrive with, or create a contact.
    new_uids: list[str] = []
    for m in messages:
        uid = m.user_id
        if not uid or uid in by_uid:
            continue
        known = by_aid.get(m.anonymous_id) if m.anonymous_id else None
        claimable = known is not None and known[1] is None
        if claimable and Contact.objects.filter(id=known[0], external_id__isnull=True).update(external_id=uid):
            by_uid[uid] = known[0]
            by_aid[m.anonymous_id] = (known[0], uid)
            continue
        if uid not in new_uids:
            new_uids.append(uid)
    if new_uids:
        now = timezone.now()
        # In sorted order, so that concurrent batches creating the same contacts wait for each other, not deadlock.
        Contact.objects.bulk_create(
            [Contact(external_id=uid, created_at=now) for uid in sorted(new_uids)], ignore_conflicts=True
        )
        fresh = dict(Contact.objects.filter(external_id__in=new_uids).values_list("external_id", "id"))
        created += sum(1 for uid in new_uids if uid in fresh)
        by_uid.update(fresh)

    # 2. anonymousIds not seen before: alias them to the userId they arrive with, or create an anonymous contact.
    new_aliases: dict[str, int] = {}
    anonymous_needed: list[str] = []
    for m in messages:
        aid = m.anonymous_id
        if not aid or aid in by_aid or aid in new_aliases:
            continue
        if m.user_id:
            new_aliases[aid] = by_uid[m.user_id]
        elif aid not in anonymous_needed:
            anonymous_needed.append(aid)
    # An anonymousId first seen alone and later in the batch with a userId belongs to that user.
    for m in messages:
        if m.anonymous_id in anonymous_needed and m.user_id:
            anonymous_needed.remove(m.anonymous_id)
            new_aliases[m.anonymous_id] = by_uid[m.user_id]
    if anonymous_needed:
        now = timezone.now()
        contacts = Contact.objects.bulk_create([Contact(created_at=now) for _ in anonymous_needed])
        for aid, contact in zip(anonymous_needed, contacts, strict=True):
            new_aliases[aid] = contact.pk
    if new_aliases:
        ContactAlias.objects.bulk_create(
            [ContactAlias(anonymous_id=aid, contact_id=cid) for aid, cid in sorted(new_aliases.items())],
            ignore_conflicts=True,
        )
        stored = dict(
            ContactAlias.objects.filter(anonymous_id__in=list(new_aliases)).values_list("anonymous_id", "contact_id")
        )
        # A concurrent batch may have aliased the same anonymousId first: use its contact, drop ours.
        losers = [cid for aid, cid in new_aliases.items() if stored.get(aid) != cid and aid in anonymous_needed]
        if losers:
            Contact.objects.filter(id__in=losers, external_id__isnull=True, events__isnull=True).delete()
        created += sum(1 for aid in anonymous_needed if stored.get(aid) == new_aliases[aid])
        for aid, cid in stored.items():
            by_aid[aid] = (cid, None)

    # 3. Each message's contact; an anonymous contact met together with a different identified one is merged.
    resolved: dict[int, int] = {}
    for m in messages:
        if m.user_id:
            cid = by_uid[m.user_id]
            if m.anonymous_id:
                anon_cid, anon_ext = by_aid[m.anonymous_id]
                if anon_cid != cid and anon_ext in (None, m.user_id):
                    merges.append((anon_cid, cid))
                    by_aid[m.anonymous_id] = (cid, m.user_id)
            if m.type == "alias" and m.previous_id in by_uid and by_uid[m.previous_id] != cid:
                merges.append((by_uid[m.previous_id], cid))
        else:
            cid = by_aid[m.anonymous_id][0]
        resolved[m.index] = cid
    return resolved, created, merges


def contacts_seen_refresh(*, contact_ids: set[int]) -> None:
    """Set first/last seen of these contacts from their events (served by the contact timeline index)."""
    events = Event.objects.filter(contact=OuterRef("pk"))
    Contact.objects.filter(id__in=contact_ids).update(
        first_seen_at=Subquery(events.order_by("occurred_at").values("occurred_at")[:1]),
        last_seen_at=Subquery(events.order_by("-occurred_at", "-id").values("occurred_at")[:1]),
    )


#: Resolve the messages whose contact is known, insert them and queue them, in one statement. ``known``: the
#: userId (if given) names a contact, the anonymousId (if given) is an alias, both name the same contact, and it is
#: not an alias call; exactly the messages for which the full resolution (``_resolve_contacts``) would read and
#: write nothing. Returns every message's index, whether it was known, and its new event id (NULL: a duplicate).
#: The messages travel as one JSON parameter: PostgreSQL parses it once, and the driver quotes one string instead
#: of one value per field and message.
_STORE_KNOWN_SQL = """
WITH v AS MATERIALIZED (
    -- Scalar subqueries: one index lookup per message, whatever the planner guesses of the parameter's size.
    SELECT v.*, (SELECT id FROM crm_contact WHERE external_id = v.u) AS uc,
           (SELECT contact_id FROM crm_contactalias WHERE anonymous_id = v.a) AS ac
    FROM jsonb_to_recordset(%s::jsonb)
        AS v(i int, m text, u text, a text, type text, name text, p jsonb, c jsonb, t timestamptz)
), r AS (
    SELECT v.*, COALESCE(uc, ac) AS contact_id,
           (type <> 'alias' AND (u IS NULL OR uc IS NOT NULL) AND (a IS NULL OR ac IS NOT NULL)
            AND (uc IS NULL OR ac IS NULL OR uc = ac)) AS known
    FROM v
), ins AS (
    INSERT INTO crm_event (contact_id, source_id, message_id, type, name, properties, context, occurred_at,
                           received_at)
    SELECT contact_id, %s, m, type, name, p, c, t, %s FROM r WHERE known ORDER BY i
    ON CONFLICT (source_id, message_id) DO NOTHING
    RETURNING id, message_id
), queued AS (
    INSERT INTO crm_unprocessedevent (event_id) SELECT id FROM ins
)
SELECT r.i, r.known, ins.id FROM r LEFT JOIN ins ON ins.message_id = r.m
"""


def _store_known_postgresql(
    source: Source, batch: list[Message], received_at: datetime
) -> tuple[dict[int, int], int, list[Message]]:
    """(message index → new event id, duplicates, messages that need the full resolution)."""
    rows = [
        {
            "i": m.index,
            "m": m.message_id,
            "u": m.user_id,
            "a": m.anonymous_id,
            "type": m.type,
            "name": m.name,
            "p": m.properties,
            "c": m.context,
            "t": m.occurred_at,
        }
        for m in batch
    ]
    try:
        # Alone it commits by itself (autocommit); inside a caller's transaction it gets a savepoint.
        savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
        with savepoint, connection.cursor() as cursor:
            cursor.execute(_STORE_KNOWN_SQL, [json_param(rows), source.pk, received_at])
            result = cursor.fetchall()
    except IntegrityError:
        # A contact was merged away (deleted) between the lookup and the foreign-key check: resolve in full.
        return {}, 0, batch
    by_index = {m.index: m for m in batch}
    stored = {i: event_id for i, known, event_id in result if known and event_id is not None}
    duplicates = sum(1 for _i, known, event_id in result if known and event_id is None)
    unknown = [by_index[i] for i, known, _event_id in sorted(result) if not known]
    return stored, duplicates, unknown


def _store_resolving(source: Source, batch: list[Message], received_at: datetime) -> tuple[list[int], int, int]:
    """The full path: resolve (creating, claiming and merging contacts), insert and queue, in one transaction.
    Returns (new event ids in message order, duplicates, contacts created)."""
    with transaction.atomic():
        contact_of, created, merges = _resolve_contacts(batch)
        rows = [
            {
                "contact_id": contact_of[m.index],
                "source_id": source.pk,
                "message_id": m.message_id,
                "type": m.type,
                "name": m.name,
                "properties": m.properties,
                "context": m.context,
                "occurred_at": m.occurred_at,
                "received_at": received_at,
            }
            for m in batch
        ]
        inserted = insert_ignore_returning(
            Event, rows, conflict_fields=("source", "message_id"), returning=("id", "message_id")
        )
        new_ids = {message_id: pk for pk, message_id in inserted}
        if new_ids:
            UnprocessedEvent.objects.bulk_create([UnprocessedEvent(event_id=pk) for pk in new_ids.values()])
            if merges:
                # Lock the contacts involved in id order first: concurrent batches merging overlapping contacts
                # then queue instead of deadlocking.
                involved = {cid for pair in merges for cid in pair}
                list(Contact.objects.select_for_update().filter(id__in=involved).order_by("id").values_list("id"))
                for merge_from, merge_into in dict.fromkeys(merges):
                    contact_merge(from_contact_id=merge_from, into_contact_id=merge_into)
    stored = [new_ids[m.message_id] for m in batch if m.message_id in new_ids]
    return stored, len(batch) - len(stored), created


def event_record_batch(*, source: Source, messages: list[Message], received_at: datetime | None = None) -> IngestResult:
    """Store a batch of validated messages exactly once each and queue them for processing; see the module
    docstring. Returns the new events' ids, the duplicates skipped and the contacts created."""
    result = IngestResult()
    if not messages:
        return result
    received_at = received_at or timezone.now()
    unique: dict[str, Message] = {}
    for m in messages:
        unique.setdefault(m.message_id, m)
    result.duplicates = len(messages) - len(unique)
    batch = list(unique.values())

    if connection.vendor == "postgresql":
        stored, duplicates, rest = _store_known_postgresql(source, batch, received_at)
        result.duplicates += duplicates
        result.stored_event_ids = [stored[m.index] for m in batch if m.index in stored]
    else:
        rest = batch
    if rest:
        try:
            stored_ids, duplicates, created = _store_resolving(source, rest, received_at)
        except IntegrityError:
            if connection.in_atomic_block:
                raise
            # A contact this batch resolved to was merged away by a concurrent request before commit: once more.
            stored_ids, duplicates, created = _store_resolving(source, rest, received_at)
        result.stored_event_ids += stored_ids
        result.duplicates += duplicates
        result.contacts_created = created
    if result.stored_event_ids:
        transaction.on_commit(events_process_soon, robust=True)
    return result


#: A web process that found a processing task queued (or queued one) does not ask again for this long: under load
#: the trigger costs one cache round trip per process and interval, not one per request. That task, if it started
#: meanwhile, looks once more for new events after finding none, later than this (``crm.tasks``), so an event
#: committed in the interval is still applied by it.
PROCESS_TRIGGER_MEMO_SECONDS = 0.1
_trigger_seen_at = 0.0


def events_process_soon() -> None:
    """Make sure a processing task is queued (called after the events' commit). Coalesced: while one is queued and
    not yet started, further calls queue nothing."""
    global _trigger_seen_at
    now = time.monotonic()
    if now - _trigger_seen_at < PROCESS_TRIGGER_MEMO_SECONDS:
        return
    _trigger_seen_at = now
    if cache.add(PROCESS_TRIGGER_KEY, 1, timeout=PROCESS_TRIGGER_SECONDS):
        from crm.tasks import events_process_task

        try:
            events_process_task.delay()
        except Exception as exc:  # the broker is down: the events are stored; the beat sweep will process them
            cache.delete(PROCESS_TRIGGER_KEY)
            logger.warning("ingest.process_enqueue_failed", error=type(exc).__name__)
