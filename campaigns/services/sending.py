"""The send pipeline's delivery half: claim due sends, check each contact, render, deliver through the channel's
backend, record the outcome. The only code that moves a ``Send`` past ``queued``.

Guarantees (see docs/architecture.md, "Send pipeline"):

- **Claiming.** A worker claims due sends (``queued``/``held`` with ``due_at <= now``) in one short transaction,
  ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite's IMMEDIATE transactions serialize the same step), and
  marks them ``sending`` with its own claim token. A retried task, a duplicate task or a second worker finds nothing
  left to claim: no duplicate.
- **Failures.** An exception from a backend releases the claim's unfinished sends to ``queued`` with a backoff due
  time (picked up by the beat tick): no loss. A worker killed mid-call leaves ``sending`` rows; after
  ``LOOP_SEND_CLAIM_LEASE`` seconds the tick re-queues them when the backend is idempotent (the outbox; providers
  that deduplicate on the send's key), and otherwise marks them failed "delivery unknown" rather than risk a
  second message.
- **Checks at send time**, per contact, the reason recorded on a skipped send: consent for the channel (and for
  advertising), suppression, reachability, quiet hours (hold until the end hour or skip), frequency cap.
- Provider errors: transient ones are retried with exponential backoff (a due time, never a long Celery
  countdown) up to ``LOOP_SEND_MAX_ATTEMPTS``; permanent ones are recorded on the send.
"""

from __future__ import annotations

import dataclasses
import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from campaigns.advertising import apply_advertising_form
from campaigns.assignment import Assigner
from campaigns.channels import Message, SendResult, backend_for, backend_name_for, channel
from campaigns.models import Campaign, KakaoType, Purpose, Send, SkipReason, Suppression, Variant
from campaigns.personalization import CONTACT_FIELDS, build_render_data, compile_template, event_data, render
from campaigns.tracking import fill_links, track_content
from crm.db import bulk_update_rows, int_array

log = structlog.get_logger(__name__)

OPEN_STATUSES = (Send.Status.WAITING, Send.Status.QUEUED, Send.Status.HELD, Send.Status.SENDING)
DUE_STATUSES = (Send.Status.QUEUED, Send.Status.HELD)
CONTENT_FIELDS = ("subject", "preheader", "body", "html", "link_url")


#: Set inside ``sends_replayed_to_outbox()``: chunks are processed in this thread, every channel goes to the outbox.
_REPLAY: ContextVar[bool] = ContextVar("campaigns_sends_replay", default=False)


@contextmanager
def sends_replayed_to_outbox() -> Iterator[None]:
    """Run the pipeline in this thread and deliver to the outbox only, for replaying a schedule at past moments.

    Within the block a chunk of due sends is not handed to a Celery task: it is processed at once, in the
    transaction that made it due (the rows it needs are written by then), at the ``now`` that code was given, so a
    run started with a past ``now`` is delivered at that moment, as the worker would have. Every channel is
    delivered to the outbox, whatever ``CHANNEL_BACKENDS`` says: nothing leaves the system. The demo data's past
    runs use it (``campaigns.demo``); the product's own flow never does.
    """
    token = _REPLAY.set(True)
    try:
        yield
    finally:
        _REPLAY.reset(token)


def chunk_size() -> int:
    return max(1, settings.LOOP_SEND_CHUNK_SIZE)


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 … minutes, at most an hour."""
    return timedelta(seconds=min(60 * 2 ** max(attempts - 1, 0), 3600))


# --- SQL helpers ---------------------------------------------------------------------------------------------------


def _ids_condition(column: str, ids: Sequence[int]) -> tuple[str, list]:
    """``column = ANY(array)`` with one parameter on PostgreSQL (psycopg quotes each value of a long parameter list
    one by one); ``column IN (…)`` elsewhere. ``column`` is a quoted identifier."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::bigint[])", [int_array(ids)]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", [int(i) for i in ids]


def _update_ids(ids: Sequence[int], **values: Any) -> int:
    """``UPDATE campaigns_send SET … WHERE id IN ids`` (one statement per 10,000 ids); returns the rows updated."""
    updated = 0
    for start in range(0, len(ids), 10_000):
        piece = list(ids[start : start + 10_000])
        if connection.vendor == "postgresql":  # the ids as one array parameter
            updated += Send.objects.filter(pk__in=RawSQL("SELECT unnest(%s::bigint[])", [int_array(piece)])).update(
                **values
            )
        else:
            updated += Send.objects.filter(pk__in=piece).update(**values)
    return updated


# --- Enqueueing ----------------------------------------------------------------------------------------------------


def sends_enqueue(*, send_ids: Sequence[int], now: datetime | None = None, marked: bool = False) -> int:
    """Mark ``send_ids`` enqueued and send one chunk task per ``LOOP_SEND_CHUNK_SIZE`` after the commit.

    Must run inside the transaction that made the sends due; returns the number of chunks. ``marked``: the caller
    already set their ``enqueued_at`` (the snapshot does it in its ``INSERT``).
    """
    from campaigns.tasks import send_chunk

    ids = sorted(send_ids)
    if not ids:
        return 0
    now = now or timezone.now()
    size = chunk_size()
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    if not marked:
        _update_ids(ids, enqueued_at=now)
    replay = _REPLAY.get()
    for chunk in chunks:
        if replay:
            sends_process(send_ids=chunk, now=now)
        else:
            transaction.on_commit(lambda chunk=chunk: send_chunk.delay(chunk))
    return len(chunks)


def sends_dispatch_due(*, now: datetime | None = None, limit: int = 50_000) -> int:
    """Enqueue due sends that no task is carrying (held ones whose hour came, retries, delayed variants, local
    time, sends whose task was lost). Returns the number of sends enqueued."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LOOP_SEND_CLAIM_LEASE)
    with transaction.atomic():
        ids = list(
            Send.objects.filter(status__in=DUE_STATUSES, due_at__lte=now)
            .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
            .exclude(campaign__status__in=[Campaign.Status.PAUSED])
            .order_by("due_at", "id")
            .values_list("pk", flat=True)[:limit]
        )
        sends_enqueue(send_ids=ids, now=now)
    return len(ids)


# --- Claiming ------------------------------------------------------------------------------------------------------


def _claim(send_ids: Sequence[int], *, token: str, now: datetime) -> list[tuple[int, int | None]]:
    """Mark the due sends among ``send_ids`` ``sending`` with ``token``, in one ``UPDATE … RETURNING``; returns the
    (id, run id) of each send claimed. On PostgreSQL the candidates are locked ``FOR UPDATE SKIP LOCKED`` (rows
    another worker is claiming are left to it); SQLite's IMMEDIATE transactions serialize the statement."""
    ids = sorted({int(i) for i in send_ids})
    if not ids:
        return []
    qn = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    table, campaigns = qn(Send._meta.db_table), qn(Campaign._meta.db_table)
    condition, id_params = _ids_condition("s.id", ids)
    lock = " FOR UPDATE OF s SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    due = list(DUE_STATUSES)
    # Identifiers are quoted names from the models; every value is a parameter.
    sql = (
        f"UPDATE {table} SET status = %s, claimed_at = %s, claim = %s, attempts = attempts + 1 "  # noqa: S608
        f"WHERE id IN (SELECT s.id FROM {table} s JOIN {campaigns} c ON c.id = s.campaign_id "
        f"WHERE {condition} AND s.status IN (%s, %s) AND s.due_at <= %s AND c.status <> %s{lock}) "
        f"AND status IN (%s, %s) RETURNING id, run_id"
    )
    params = [Send.Status.SENDING, adapt(now), token, *id_params, *due, adapt(now), Campaign.Status.PAUSED, *due]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(row[0], row[1]) for row in cursor.fetchall()]


def _release(token: str, ids: list[int], *, now: datetime, error: str) -> int:
    """Put a claim's unfinished sends back in the queue with a backoff; failed once attempts are used up."""
    released = 0
    with transaction.atomic():
        open_sends = Send.objects.filter(pk__in=ids, claim=token, status=Send.Status.SENDING)
        by_attempts: dict[int, list[int]] = defaultdict(list)
        for pk, attempts in open_sends.values_list("pk", "attempts"):
            by_attempts[attempts].append(pk)
        for attempts, pks in by_attempts.items():
            if attempts >= settings.LOOP_SEND_MAX_ATTEMPTS:
                released += _update_ids(
                    pks, status=Send.Status.FAILED, error=error[:2000], finished_at=now, sent_at=None, claim=""
                )
            else:
                released += _update_ids(
                    pks,
                    status=Send.Status.QUEUED,
                    due_at=now + backoff(attempts),
                    enqueued_at=None,
                    sent_at=None,
                    error=error[:2000],
                    claim="",
                )
    return released


def sends_recover_stale(*, now: datetime | None = None) -> dict[str, int]:
    """Sends claimed longer ago than the lease (their worker died): re-queued when the backend is idempotent,
    otherwise failed with "delivery unknown" (never risk a duplicate)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LOOP_SEND_CLAIM_LEASE)
    result = {"requeued": 0, "failed": 0}
    with transaction.atomic():
        rows = Send.objects.filter(status=Send.Status.SENDING, claimed_at__lt=stale)
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        requeue, fail = [], []
        for pk, channel_name, is_test, attempts in rows.values_list("pk", "channel", "is_test", "attempts"):
            backend = backend_for(channel_name, test=is_test)
            idempotent = backend.capabilities.idempotent and attempts < settings.LOOP_SEND_MAX_ATTEMPTS
            (requeue if idempotent else fail).append(pk)
        result["requeued"] = _update_ids(
            requeue, status=Send.Status.QUEUED, due_at=now, enqueued_at=None, sent_at=None, claim=""
        )
        result["failed"] = _update_ids(
            fail,
            status=Send.Status.FAILED,
            error="worker interrupted during delivery; delivery unknown, not retried to avoid a duplicate",
            finished_at=now,
            sent_at=None,
            claim="",
        )
    if result["requeued"] or result["failed"]:
        log.warning("sends_recovered", **result)
    return result


# --- Checks --------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Claimed:
    """A claimed send as the pipeline needs it (plain values, not a model instance: a chunk has hundreds)."""

    id: int
    campaign_id: int
    run_id: int | None
    contact_id: int
    variant_id: int | None
    is_test: bool
    channel: str
    advertising: bool
    counts_toward_cap: bool
    attempts: int
    context: dict[str, Any]
    due_at: datetime
    enqueued_at: datetime | None
    finished_at: datetime | None
    error: str
    campaign: Campaign = field(repr=False, default=None)  # type: ignore[assignment]
    variant: Variant | None = field(repr=False, default=None)

    @property
    def pk(self) -> int:
        return self.id


CLAIMED_FIELDS = [f.name for f in Claimed.__dataclass_fields__.values() if f.name not in ("campaign", "variant")]


def _load_claimed(ids: list[int], token: str) -> list[Claimed]:
    """The claim's sends with their campaigns and variants: three queries whatever the chunk's size."""
    rows = (
        Send.objects.filter(pk__in=ids, claim=token, status=Send.Status.SENDING)
        .order_by("id")
        .values_list(*CLAIMED_FIELDS)
    )
    sends = [Claimed(*row) for row in rows]
    campaigns = Campaign.objects.select_related("sender_profile", "kakao_template").in_bulk(
        {s.campaign_id for s in sends}
    )
    variants = Variant.objects.in_bulk({s.variant_id for s in sends if s.variant_id is not None})
    for send in sends:
        send.campaign = campaigns[send.campaign_id]
        send.variant = variants.get(send.variant_id) if send.variant_id is not None else None
    return sends


@dataclass
class Facts:
    """What the checks need about a batch's contacts, loaded in a few set-based queries."""

    contacts: dict[int, dict[str, Any]]
    consents: set[tuple[int, str]]
    suppressed: set[tuple[int, str]]
    tokens: dict[int, list[str]]
    sent_day: dict[int, int]
    sent_week: dict[int, int]
    accepted: dict[int, int] = field(default_factory=dict)


#: Advisory lock space of the frequency cap (the two-key form; its keys never meet the one-key locks of crm).
CAP_LOCK_SPACE = 0x10CA9


def caps_enabled() -> bool:
    return bool(settings.LOOP_FREQUENCY_CAP_DAY or settings.LOOP_FREQUENCY_CAP_WEEK)


def _lock_for_cap(contact_ids: Sequence[int]) -> None:
    """Serialize the frequency-cap check per contact across concurrent chunks: transaction-level advisory locks,
    taken in contact order (no deadlock between two chunks), released at commit, once the accepted sends hold
    their place (``sent_at``). SQLite's IMMEDIATE transactions already serialize the whole check."""
    if connection.vendor != "postgresql" or not contact_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, (c %% 2147483647)::int)) "
            "FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(c, n)",
            [CAP_LOCK_SPACE, int_array(sorted(contact_ids))],
        )


def _cap_counts(contact_ids: Sequence[int], *, now: datetime) -> tuple[dict[int, int], dict[int, int]]:
    """Messages counting toward the cap per contact in the last day and week: sent ones, and those another chunk
    accepted and is delivering (``sending`` with ``sent_at`` set)."""
    day: dict[int, int] = {}
    week: dict[int, int] = {}
    counts = (
        Send.objects.filter(
            contact_id__in=contact_ids,
            status__in=[Send.Status.SENT, Send.Status.SENDING],
            counts_toward_cap=True,
            sent_at__gt=now - timedelta(days=7),
        )
        .values("contact_id")
        .annotate(week=Count("id"), day=Count("id", filter=Q(sent_at__gt=now - timedelta(days=1))))
        .order_by()
    )
    for row in counts:
        week[row["contact_id"]] = row["week"]
        day[row["contact_id"]] = row["day"]
    return day, week


def _load_facts(sends: list[Claimed], *, now: datetime) -> Facts:
    from crm.models import Consent, Contact, Device

    ids = sorted({s.contact_id for s in sends})
    contacts = {
        row["id"]: row for row in Contact.objects.filter(pk__in=ids).values(*CONTACT_FIELDS, "attributes", "erased_at")
    }
    consents = set(
        Consent.objects.filter(contact_id__in=ids, granted=True).values_list("contact_id", "purpose").distinct()
    )
    suppressed = set(Suppression.objects.filter(contact_id__in=ids).values_list("contact_id", "channel"))
    tokens: dict[int, list[str]] = defaultdict(list)
    if any(s.channel == "push" for s in sends):
        for contact_id, token in (
            Device.objects.filter(contact_id__in=ids, active=True).order_by("id").values_list("contact_id", "token")
        ):
            tokens[contact_id].append(token)
    day: dict[int, int] = {}
    week: dict[int, int] = {}
    if caps_enabled():
        capped = sorted({s.contact_id for s in sends if s.counts_toward_cap and not s.is_test})
        if capped:
            _lock_for_cap(capped)
            day, week = _cap_counts(capped, now=now)
    return Facts(contacts, consents, suppressed, dict(tokens), day, week)


def contact_zone(name: str | None) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name) if name else zoneinfo.ZoneInfo(settings.TIME_ZONE)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def quiet_until(*, now: datetime, zone: zoneinfo.ZoneInfo, hours: tuple[int, int]) -> datetime | None:
    """The end of the quiet period ``now`` falls in (in ``zone``), or None when ``now`` is not quiet."""
    start, end = hours
    local = now.astimezone(zone)
    if not (local.hour >= start or local.hour < end):
        return None
    day = local.date() if local.hour < end else local.date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, end, tzinfo=zone)


@dataclass
class Decision:
    skip: str = ""
    hold_until: datetime | None = None
    address: str | list[str] = ""


def _address(send: Claimed, contact: dict[str, Any], facts: Facts) -> str | list[str]:
    kind = channel(send.channel).address
    if kind == "email":
        return contact["email"]
    if kind == "phone":
        return contact["phone"]
    if kind == "device":
        return facts.tokens.get(send.contact_id, [])
    return ""


def _check(send: Claimed, facts: Facts, *, now: datetime) -> Decision:
    contact = facts.contacts.get(send.contact_id)
    if send.campaign.status == Campaign.Status.CANCELLED:
        return Decision(skip=SkipReason.CANCELLED)
    if contact is None or contact["erased_at"] is not None:
        return Decision(skip=SkipReason.ERASED)
    address = _address(send, contact, facts)
    if send.is_test:
        return Decision(address=address) if address else Decision(skip=SkipReason.UNREACHABLE)
    kind = channel(send.channel)
    if kind.consent_purpose and (send.contact_id, kind.consent_purpose) not in facts.consents:
        return Decision(skip=SkipReason.NO_CONSENT)
    if send.advertising and (send.contact_id, "ads") not in facts.consents:
        return Decision(skip=SkipReason.NO_ADS_CONSENT)
    if (send.contact_id, send.channel) in facts.suppressed:
        return Decision(skip=SkipReason.SUPPRESSED)
    if not address:
        return Decision(skip=SkipReason.UNREACHABLE)
    # FriendTalk is never delivered during the KakaoTalk quiet hours (20:00–08:00), whatever the contact consented
    # to at night: Kakao refuses it. Other advertising waits unless the contact accepts it at night.
    friendtalk = send.channel == "kakao" and send.campaign.kakao_type != KakaoType.ALIMTALK
    if friendtalk or (send.advertising and (send.contact_id, "ads_night") not in facts.consents):
        until = quiet_until(now=now, zone=contact_zone(contact["time_zone"]), hours=kind.ads_quiet_hours)
        if until is not None:
            if send.campaign.quiet_hours == Campaign.QuietHours.SKIP:
                return Decision(skip=SkipReason.QUIET_HOURS)
            return Decision(hold_until=until)
    if send.counts_toward_cap and caps_enabled():
        extra = facts.accepted.get(send.contact_id, 0)
        day_cap, week_cap = settings.LOOP_FREQUENCY_CAP_DAY, settings.LOOP_FREQUENCY_CAP_WEEK
        if (day_cap and facts.sent_day.get(send.contact_id, 0) + extra >= day_cap) or (
            week_cap and facts.sent_week.get(send.contact_id, 0) + extra >= week_cap
        ):
            return Decision(skip=SkipReason.FREQUENCY_CAP)
        facts.accepted[send.contact_id] = extra + 1
    return Decision(address=address)


# --- Rendering -----------------------------------------------------------------------------------------------------


def variant_content(variant: Variant | None, fields: Sequence[str]) -> dict[str, str]:
    if variant is None:
        return {}
    return {name: getattr(variant, name) or "" for name in fields}


def render_content(
    *, campaign: Campaign, variant: Variant | None, data: dict[str, Any], source: dict[str, str] | None = None
) -> dict[str, str]:
    """The variant's content rendered with one contact's data, in the advertising form when the campaign is
    advertising. ``source`` overrides the variant's fields (journeys' own content). Templates are compiled once
    per text (``compile_template`` is cached), so a chunk renders each variant's compiled templates again and
    again."""
    fields = channel(campaign.channel).content_fields
    source = source if source is not None else variant_content(variant, fields)
    content = {}
    for name in fields:
        text = source.get(name, "")
        content[name] = render(compile_template(text, html=name == "html"), data) if text else ""
    if campaign.purpose == Purpose.ADVERTISING:
        content = apply_advertising_form(channel=campaign.channel, content=content, sender_name=campaign.sender_name)
    if campaign.channel == "kakao" and campaign.kakao_type == KakaoType.ALIMTALK:
        from campaigns.channels.kakao import alimtalk_variables

        content["kakao_variables"] = alimtalk_variables(source.get("body", ""), data)
    return content


def with_tracking_links(message: Message) -> Message:
    """``message`` with its link placeholders replaced by its send's tracked URLs (for backends that do not fill
    them in themselves, as the email backend does for its merged batches)."""
    fields = {name: fill_links(getattr(message, name), send_id=message.send_id) for name in CONTENT_FIELDS}
    return dataclasses.replace(message, **fields)


#: Variant variables a backend reads as delivery options rather than text (push: the image, the data payload).
DELIVERY_OPTIONS = ("image_url", "data")


def delivery_options(variant: Variant | None) -> dict[str, Any]:
    variables = variant.variables if variant is not None and isinstance(variant.variables, dict) else {}
    return {name: variables[name] for name in DELIVERY_OPTIONS if variables.get(name)}


def message_extra(send: Send | Claimed, content: dict[str, Any], senders: dict[int, Any]) -> dict[str, Any]:
    """What a backend needs beyond the content: the sender profile's values, the KakaoTalk template and
    variables, the MMS image (storage name). ``senders`` caches the profile per campaign."""
    from campaigns.senders import sender_extra, sender_for

    campaign = send.campaign
    if campaign.pk not in senders:
        senders[campaign.pk] = sender_extra(sender_for(campaign))
    extra: dict[str, Any] = {
        "campaign_id": send.campaign_id,
        "variant": send.variant.name if send.variant else "",
        "sender": senders[campaign.pk],
        **delivery_options(send.variant),
    }
    if send.channel == "sms" and send.variant and send.variant.image:
        extra["image"] = send.variant.image.name
    if send.channel == "kakao":
        template = campaign.kakao_template if campaign.kakao_type == KakaoType.ALIMTALK else None
        extra["kakao"] = {
            "type": campaign.kakao_type or KakaoType.FRIENDTALK,
            "template_code": template.code if template else "",
            "variables": content.get("kakao_variables", {}),
            "buttons": template.buttons if template else [],
        }
    return extra


# --- Processing ----------------------------------------------------------------------------------------------------


def sends_process(*, send_ids: Sequence[int], now: datetime | None = None) -> dict[str, int]:
    """Claim the due sends among ``send_ids`` and deliver them (the body of the chunk task). Idempotent.

    A constant number of statements per chunk whatever its size: the claim (one ``UPDATE … RETURNING``); in one
    transaction the sends, their campaigns and variants, the contacts, consents, suppressions (devices for push),
    the frequency-cap locks and counts, carts and coupons, the skipped and held sends (one ``UPDATE``) and the
    accepted sends' place in the cap (one ``UPDATE``); the backend's batch (the outbox: one ``INSERT``); the
    outcomes (one ``UPDATE`` per backend batch); whether the run is done.
    """
    now = now or timezone.now()
    token = uuid.uuid4().hex
    claimed = _claim(send_ids, token=token, now=now)
    if not claimed:
        return {}
    ids = [send_id for send_id, _run in claimed]  # every lookup by claim token is narrowed by primary key
    run_ids = {run_id for _send, run_id in claimed if run_id is not None}
    try:
        outcome = _deliver(token, ids, now=now)
    except Exception as exc:
        log.exception("send_chunk_failed", error_type=type(exc).__name__)
        _release(token, ids, now=now, error=f"{type(exc).__name__}: {exc}")
        outcome = {"released": 1}
    from campaigns.services.runs import run_finish_if_done

    for run_id in sorted(run_ids):
        run_finish_if_done(run_id=run_id, now=now)
    return outcome


def _prepare(
    token: str, ids: list[int], *, now: datetime, counts: dict[str, int]
) -> dict[tuple[str, bool], list[tuple[Claimed, Message, dict[str, Any]]]]:
    """Check and render the claim's sends in one transaction: skipped and held sends are written, accepted ones
    that count toward the frequency cap take their place in it (``sent_at``) before the cap's locks are released.
    Returns the messages to deliver per (channel, test)."""
    ready: dict[tuple[str, bool], list[tuple[Claimed, Message, dict[str, Any]]]] = defaultdict(list)
    with transaction.atomic():
        sends = _load_claimed(ids, token)
        if not sends:
            return ready
        facts = _load_facts(sends, now=now)
        finished: list[dict[str, Any]] = []
        accepted: list[tuple[Claimed, Decision]] = []
        for send in sends:
            decision = _check(send, facts, now=now)
            if decision.skip:
                finished.append(_finished_row(send, status=Send.Status.SKIPPED, reason=decision.skip, now=now))
                counts[f"skipped:{decision.skip}"] += 1
            elif decision.hold_until is not None:
                row = _finished_row(send, status=Send.Status.HELD, now=now)
                row.update(due_at=decision.hold_until, enqueued_at=None, finished_at=send.finished_at)
                finished.append(row)
                counts["held"] += 1
            else:
                accepted.append((send, decision))

        # Render data for every accepted contact at once (contacts already loaded: carts and coupons only);
        # each send adds its variant's variables and its own event context.
        base = build_render_data(
            {s.contact_id for s, _d in accepted},
            contacts=[facts.contacts[s.contact_id] for s, _d in accepted],
            now=now,
        )
        reserve: list[int] = []
        senders: dict[int, Any] = {}
        for send, decision in accepted:
            data = dict(base[send.contact_id])
            data["vars"] = dict(send.variant.variables) if send.variant and send.variant.variables else {}
            data["event"] = event_data(send.context) if send.context else {}
            try:
                content_source = send.context.get("content") if send.context else None
                source = content_source if isinstance(content_source, dict) else None
                content = render_content(campaign=send.campaign, variant=send.variant, data=data, source=source)
            except Exception as exc:
                row = _finished_row(send, status=Send.Status.SKIPPED, reason=SkipReason.RENDER_ERROR, now=now)
                row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                finished.append(row)
                counts[f"skipped:{SkipReason.RENDER_ERROR}"] += 1
                continue
            content = track_content(content)
            address = ", ".join(decision.address) if isinstance(decision.address, list) else decision.address
            message = Message(
                send_id=send.id,
                channel=send.channel,
                contact_id=send.contact_id,
                to=decision.address,
                advertising=send.advertising,
                extra=message_extra(send, content, senders),
                **{name: content.get(name, "") for name in CONTENT_FIELDS},
            )
            ready[(send.channel, send.is_test)].append((send, message, {"content": content, "address": address}))
            if send.counts_toward_cap and not send.is_test:
                reserve.append(send.id)
        bulk_update_rows(Send, finished)
        if reserve and caps_enabled():
            _update_ids(reserve, sent_at=now)
    return ready


def _finished_row(send: Claimed, *, status: str, now: datetime, reason: str = "") -> dict[str, Any]:
    return {
        "id": send.id,
        "status": status,
        "skip_reason": reason,
        "due_at": send.due_at,
        "enqueued_at": send.enqueued_at,
        "finished_at": now if status == Send.Status.SKIPPED else send.finished_at,
        "error": send.error,
        "claim": "",
    }


def _deliver(token: str, ids: list[int], *, now: datetime) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    ready = _prepare(token, ids, now=now, counts=counts)
    outbox_only = _REPLAY.get()
    for (channel_name, is_test), items in ready.items():
        backend = backend_for(channel_name, test=is_test or outbox_only)
        backend_name = backend_name_for(channel_name, test=is_test or outbox_only)
        size = max(1, backend.capabilities.max_batch_size)
        if not getattr(backend, "fills_tracking_links", False):
            items = [(send, with_tracking_links(message), rendered) for send, message, rendered in items]
        for start in range(0, len(items), size):
            piece = items[start : start + size]
            results = backend.send_batch([message for _send, message, _rendered in piece])
            _record(piece, results, backend=backend_name, now=now, counts=counts)
    log.info("sends_processed", claim=token, **dict(counts))
    return dict(counts)


def _record(
    piece: list[tuple[Claimed, Message, dict[str, Any]]],
    results: list[SendResult],
    *,
    backend: str,
    now: datetime,
    counts: dict[str, int],
) -> None:
    """The outcome of one backend batch: one ``UPDATE`` (``jsonb_to_recordset`` on PostgreSQL)."""
    by_id = {result.send_id: result for result in results}
    rows: list[dict[str, Any]] = []
    for send, _message, rendered in piece:
        result = by_id.get(send.id)
        if result is None:
            result = SendResult(send_id=send.id, ok=False, error="no result from the backend", transient=True)
        row = {
            "id": send.id,
            "status": Send.Status.SENT,
            "due_at": send.due_at,
            "enqueued_at": send.enqueued_at,
            "finished_at": now,
            "sent_at": now,
            "error": "",
            "content": rendered["content"],
            "address": rendered["address"],
            "backend": backend,
            "provider_message_id": "",
            "claim": "",
        }
        if result.ok:
            row["provider_message_id"] = result.provider_message_id[:255]
            counts["sent"] += 1
        elif result.transient and send.attempts < settings.LOOP_SEND_MAX_ATTEMPTS:
            row.update(
                status=Send.Status.QUEUED,
                due_at=now + max(backoff(send.attempts), timedelta(seconds=result.retry_after or 0)),
                enqueued_at=None,
                finished_at=send.finished_at,
                sent_at=None,
                error=result.error[:2000],
            )
            counts["retry"] += 1
        else:
            row.update(status=Send.Status.FAILED, sent_at=None, error=result.error[:2000])
            counts["failed"] += 1
        rows.append(row)
    with transaction.atomic():
        bulk_update_rows(Send, rows)


# --- One message to one contact (journeys, API) and test sends -------------------------------------------------------


def campaign_send_one(
    *,
    campaign: Campaign,
    contact_id: int,
    key: str,
    context: dict[str, Any] | None = None,
    content: dict[str, str] | None = None,
    now: datetime | None = None,
) -> Send:
    """Send one message of ``campaign`` to one contact through the whole pipeline (the entry point for journeys).

    ``key`` makes it idempotent (e.g. ``"journey:<enrollment>:<step>"``): calling again with the same key returns
    the existing send and sends nothing more. ``context`` is the triggering event's data (``{"event": {...}}``),
    available to ``#{이벤트.…}`` and ``#{상품명}``; ``content`` optionally replaces the variant's content fields.
    The variant is assigned like in runs (stable per contact, holdout included); consent, suppression,
    reachability, quiet hours and the frequency cap are checked when the send is processed. Call it inside the
    caller's transaction: the chunk task is enqueued on commit.
    """
    now = now or timezone.now()
    existing = Send.objects.filter(key=key).first()
    if existing is not None:
        return existing
    variants = list(campaign.variants.order_by("id"))
    assigner = Assigner(
        campaign_id=campaign.pk,
        seed=campaign.assignment_seed,
        variants=[(v.pk, v.weight) for v in variants],
        holdout_percent=campaign.holdout_percent,
    )
    assignment = assigner.assign(contact_id)
    variant = next((v for v in variants if v.pk == assignment.variant_id), None)
    stored_context = dict(context or {})
    if content is not None:
        stored_context["content"] = content
    send = Send(
        campaign=campaign,
        contact_id=contact_id,
        key=key,
        variant=variant,
        is_holdout=assignment.holdout,
        channel=campaign.channel,
        advertising=campaign.is_advertising,
        counts_toward_cap=not campaign.frequency_cap_exempt,
        context=stored_context,
        due_at=now + timedelta(minutes=variant.send_delay_minutes if variant else 0),
    )
    if assignment.holdout:
        send.status, send.skip_reason, send.finished_at = Send.Status.SKIPPED, SkipReason.HOLDOUT, now
    try:
        with transaction.atomic():
            send.save()
            if send.status == Send.Status.QUEUED and send.due_at <= now:
                sends_enqueue(send_ids=[send.pk], now=now)
    except IntegrityError:
        return Send.objects.get(key=key)
    return send


def campaign_test_send(
    *, campaign: Campaign, variant: Variant, contact_ids: Sequence[int], now: datetime | None = None
) -> list[Send]:
    """Render ``variant`` for each contact and deliver it to the outbox right away, skipping consent and caps
    (the recipients are the team). Test sends are marked, never counted in reports or frequency caps."""
    now = now or timezone.now()
    sends = [
        Send(
            campaign=campaign,
            contact_id=contact_id,
            variant=variant,
            key=f"test:{uuid.uuid4().hex}",
            is_test=True,
            channel=campaign.channel,
            advertising=campaign.is_advertising,
            counts_toward_cap=False,
            due_at=now,
        )
        for contact_id in contact_ids
    ]
    with transaction.atomic():
        Send.objects.bulk_create(sends)
    keys = [s.key for s in sends]
    ids = list(Send.objects.filter(key__in=keys).values_list("pk", flat=True))
    sends_process(send_ids=ids, now=now)
    return list(Send.objects.filter(pk__in=ids).select_related("contact").order_by("id"))
