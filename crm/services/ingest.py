"""Storing what the shop reports: the ingest hot path.

``event_record_batch`` takes validated messages (``crm.ingest.messages``) and, in one transaction and a constant
number of queries per batch:

1. resolves every message to a contact: by ``userId`` (external ID), else by ``anonymousId`` (an alias), creating
   the contact when it is new; an ``anonymousId`` seen with a new ``userId`` turns that anonymous contact into the
   identified one, and one seen with a known ``userId`` is merged into it;
2. inserts the events with ``ON CONFLICT (source, message_id) DO NOTHING RETURNING``: a message already stored (an
   SDK retry, at any later time) is skipped and changes nothing;
3. for the new messages only: applies profile traits and consent, registers push tokens, updates commerce state,
   and refreshes first/last seen;
4. after commit, announces the new event ids through ``crm.signals.events_recorded``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from crm.db import insert_ignore_returning
from crm.ingest.messages import Message
from crm.models import Contact, ContactAlias, Device, Event, Source
from crm.services.commerce import commerce_apply
from crm.services.consent import ConsentInput, consent_record_many
from crm.services.contacts import contact_merge
from crm.signals import events_recorded


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


def _apply_profiles(new: list[tuple[int, Message]], source_name: str) -> None:
    with_profile = [(cid, m) for cid, m in new if not m.profile.is_empty()]
    if not with_profile:
        return
    with_profile.sort(key=lambda pair: pair[1].occurred_at)
    ids = sorted({cid for cid, _m in with_profile})
    contacts = {c.pk: c for c in Contact.objects.select_for_update(no_key=True).filter(id__in=ids).order_by("id")}
    dirty: set[str] = set()
    consents: list[ConsentInput] = []
    for cid, m in with_profile:
        contact, p = contacts.get(cid), m.profile
        if contact is None:
            continue
        for attr in ("email", "phone", "name", "locale", "time_zone"):
            value = getattr(p, attr)
            if value and getattr(contact, attr) != value:
                setattr(contact, attr, value)
                dirty.add(attr)
        if p.attributes:
            merged = {**contact.attributes, **p.attributes}
            if merged != contact.attributes:
                contact.attributes = merged
                dirty.add("attributes")
        consents.extend(
            ConsentInput(cid, purpose, granted, m.occurred_at, f"api:{source_name}")
            for purpose, granted in p.consents.items()
        )
    if dirty:
        Contact.objects.bulk_update(list(contacts.values()), sorted(dirty | {"updated_at"}))
    consent_record_many(changes=consents)


def _register_devices(new: list[tuple[int, Message]]) -> None:
    devices: dict[str, Device] = {}
    for cid, m in new:
        device = m.context.get("device")
        if not isinstance(device, dict) or not isinstance(device.get("token"), str) or not device["token"].strip():
            continue
        platform = str(device.get("type", "")).lower()
        app = m.context.get("app") if isinstance(m.context.get("app"), dict) else {}
        token = device["token"].strip()[:512]
        devices[token] = Device(
            contact_id=cid,
            token=token,
            platform=platform if platform in Device.Platform.values else Device.Platform.WEB,
            app_id=str(app.get("namespace") or app.get("name") or "")[:200],
            active=True,
            deactivated_reason="",
            last_seen_at=m.occurred_at,
        )
    if devices:
        Device.objects.bulk_create(
            list(devices.values()),
            update_conflicts=True,
            unique_fields=["token"],
            update_fields=["contact", "platform", "app_id", "active", "deactivated_reason", "last_seen_at"],
        )


def contacts_seen_refresh(*, contact_ids: set[int]) -> None:
    """Set first/last seen of these contacts from their events (served by the contact timeline index)."""
    events = Event.objects.filter(contact=OuterRef("pk"))
    Contact.objects.filter(id__in=contact_ids).update(
        first_seen_at=Subquery(events.order_by("occurred_at").values("occurred_at")[:1]),
        last_seen_at=Subquery(events.order_by("-occurred_at", "-id").values("occurred_at")[:1]),
    )


def contacts_seen_extend(*, new: list[tuple[int, Message]]) -> None:
    """Widen first/last seen to these newly stored events, writing only the contacts whose values change.

    Equivalent to ``contacts_seen_refresh`` for events that were just added (a merge still refreshes in full), but
    one statement without a per-contact subquery, and no row written when an event falls inside the known span."""
    if connection.vendor != "postgresql":
        contacts_seen_refresh(contact_ids={cid for cid, _m in new})
        return
    bounds: dict[int, tuple[datetime, datetime]] = {}
    for cid, m in new:
        lo, hi = bounds.get(cid, (m.occurred_at, m.occurred_at))
        bounds[cid] = (min(lo, m.occurred_at), max(hi, m.occurred_at))
    ids = sorted(bounds)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE crm_contact c SET first_seen_at = LEAST(COALESCE(c.first_seen_at, v.lo), v.lo), "
            "last_seen_at = GREATEST(COALESCE(c.last_seen_at, v.hi), v.hi) "
            "FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS v(id, lo, hi) "
            "WHERE c.id = v.id AND (c.first_seen_at IS NULL OR c.last_seen_at IS NULL "
            "OR v.lo < c.first_seen_at OR v.hi > c.last_seen_at)",
            [ids, [bounds[i][0] for i in ids], [bounds[i][1] for i in ids]],
        )


def event_record_batch(*, source: Source, messages: list[Message], received_at: datetime | None = None) -> IngestResult:
    """Store a batch of validated messages exactly once each; see the module docstring for what happens."""
    result = IngestResult()
    if not messages:
        return result
    received_at = received_at or timezone.now()
    unique: dict[str, Message] = {}
    for m in messages:
        unique.setdefault(m.message_id, m)
    result.duplicates = len(messages) - len(unique)
    batch = list(unique.values())

    with transaction.atomic():
        contact_of, result.contacts_created, merges = _resolve_contacts(batch)
        # Lock the batch's contacts in id order before anything below updates them (first/last seen, profile,
        # commerce counters): concurrent batches about the same contacts then queue instead of deadlocking, which
        # PostgreSQL otherwise detects and answers with an error. NO KEY: inserting events that reference a contact
        # does not conflict with it. (A no-op on SQLite, whose writers are serialized anyway.)
        locked = set(contact_of.values()) | {cid for pair in merges for cid in pair}
        list(Contact.objects.select_for_update(no_key=True).filter(id__in=locked).order_by("id").values_list("id"))
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
        result.duplicates += len(batch) - len(new_ids)
        new = [(contact_of[m.index], m) for m in batch if m.message_id in new_ids]
        result.stored_event_ids = [new_ids[m.message_id] for _cid, m in new]
        if new:
            for merge_from, merge_into in dict.fromkeys(merges):
                contact_merge(from_contact_id=merge_from, into_contact_id=merge_into)
            merged_away = dict(merges)
            new = [(merged_away.get(cid, cid), m) for cid, m in new]
            _apply_profiles(new, source.name)
            _register_devices(new)
            commerce_apply(messages=new)
            contacts_seen_extend(new=new)
            event_ids = list(result.stored_event_ids)
            transaction.on_commit(lambda: events_recorded.send(sender=Event, event_ids=event_ids))
    return result
