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

import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from campaigns.advertising import apply_advertising_form
from campaigns.assignment import Assigner
from campaigns.channels import Message, SendResult, backend_for, backend_name_for, channel
from campaigns.models import Campaign, Purpose, Send, SkipReason, Suppression, Variant
from campaigns.personalization import build_render_data, compile_template, render

log = structlog.get_logger(__name__)

OPEN_STATUSES = (Send.Status.WAITING, Send.Status.QUEUED, Send.Status.HELD, Send.Status.SENDING)
DUE_STATUSES = (Send.Status.QUEUED, Send.Status.HELD)
CONTENT_FIELDS = ("subject", "preheader", "body", "html", "link_url")


def chunk_size() -> int:
    return max(1, settings.LOOP_SEND_CHUNK_SIZE)


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 … minutes, at most an hour."""
    return timedelta(seconds=min(60 * 2 ** max(attempts - 1, 0), 3600))


# --- Enqueueing ----------------------------------------------------------------------------------------------------


def sends_enqueue(*, send_ids: Sequence[int], now: datetime | None = None) -> int:
    """Mark ``send_ids`` enqueued and send one chunk task per ``LOOP_SEND_CHUNK_SIZE`` after the commit.

    Must run inside the transaction that made the sends due; returns the number of chunks.
    """
    from campaigns.tasks import send_chunk

    ids = sorted(send_ids)
    if not ids:
        return 0
    now = now or timezone.now()
    size = chunk_size()
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    for chunk in chunks:
        Send.objects.filter(pk__in=chunk).update(enqueued_at=now)
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


def _claim(send_ids: Iterable[int], *, now: datetime) -> str | None:
    token = uuid.uuid4().hex
    with transaction.atomic():
        candidates = Send.objects.filter(pk__in=list(send_ids), status__in=DUE_STATUSES, due_at__lte=now).exclude(
            campaign__status=Campaign.Status.PAUSED
        )
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        ids = list(candidates.values_list("pk", flat=True))
        if not ids:
            return None
        claimed = Send.objects.filter(pk__in=ids, status__in=DUE_STATUSES).update(
            status=Send.Status.SENDING, claimed_at=now, claim=token, attempts=F("attempts") + 1
        )
    return token if claimed else None


def _release(token: str, ids: list[int], *, now: datetime, error: str) -> int:
    """Put a claim's unfinished sends back in the queue with a backoff; failed once attempts are used up."""
    released = 0
    with transaction.atomic():
        for send in Send.objects.filter(pk__in=ids, claim=token, status=Send.Status.SENDING).only("pk", "attempts"):
            if send.attempts >= settings.LOOP_SEND_MAX_ATTEMPTS:
                Send.objects.filter(pk=send.pk).update(
                    status=Send.Status.FAILED, error=error[:2000], finished_at=now, claim=""
                )
            else:
                Send.objects.filter(pk=send.pk).update(
                    status=Send.Status.QUEUED,
                    due_at=now + backoff(send.attempts),
                    enqueued_at=None,
                    error=error[:2000],
                    claim="",
                )
            released += 1
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
        for send in rows.only("pk", "channel", "is_test", "attempts"):
            backend = backend_for(send.channel, test=send.is_test)
            if backend.capabilities.idempotent and send.attempts < settings.LOOP_SEND_MAX_ATTEMPTS:
                Send.objects.filter(pk=send.pk).update(
                    status=Send.Status.QUEUED, due_at=now, enqueued_at=None, claim=""
                )
                result["requeued"] += 1
            else:
                Send.objects.filter(pk=send.pk).update(
                    status=Send.Status.FAILED,
                    error="worker interrupted during delivery; delivery unknown, not retried to avoid a duplicate",
                    finished_at=now,
                    claim="",
                )
                result["failed"] += 1
    if result["requeued"] or result["failed"]:
        log.warning("sends_recovered", **result)
    return result


# --- Checks --------------------------------------------------------------------------------------------------------


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


def _load_facts(sends: list[Send], *, now: datetime) -> Facts:
    from crm.models import Consent, Contact, Device

    ids = {s.contact_id for s in sends}
    contacts = {
        row["id"]: row
        for row in Contact.objects.filter(pk__in=ids).values("id", "email", "phone", "time_zone", "erased_at")
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
    day, week = {}, {}
    if settings.LOOP_FREQUENCY_CAP_DAY or settings.LOOP_FREQUENCY_CAP_WEEK:
        counts = (
            Send.objects.filter(
                contact_id__in=ids,
                status=Send.Status.SENT,
                counts_toward_cap=True,
                sent_at__gt=now - timedelta(days=7),
            )
            .values("contact_id")
            .annotate(week=Count("id"), day=Count("id", filter=Q(sent_at__gt=now - timedelta(days=1))))
        )
        for row in counts:
            week[row["contact_id"]] = row["week"]
            day[row["contact_id"]] = row["day"]
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


def _address(send: Send, contact: dict[str, Any], facts: Facts) -> str | list[str]:
    kind = channel(send.channel).address
    if kind == "email":
        return contact["email"]
    if kind == "phone":
        return contact["phone"]
    if kind == "device":
        return facts.tokens.get(send.contact_id, [])
    return ""


def _check(send: Send, facts: Facts, *, now: datetime) -> Decision:
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
    if send.advertising and (send.contact_id, "ads_night") not in facts.consents:
        until = quiet_until(now=now, zone=contact_zone(contact["time_zone"]), hours=kind.ads_quiet_hours)
        if until is not None:
            if send.campaign.quiet_hours == Campaign.QuietHours.SKIP:
                return Decision(skip=SkipReason.QUIET_HOURS)
            return Decision(hold_until=until)
    if send.counts_toward_cap:
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
    advertising. ``source`` overrides the variant's fields (journeys' own content)."""
    fields = channel(campaign.channel).content_fields
    source = source if source is not None else variant_content(variant, fields)
    content = {}
    for name in fields:
        text = source.get(name, "")
        content[name] = render(compile_template(text, html=name == "html"), data) if text else ""
    if campaign.purpose == Purpose.ADVERTISING:
        content = apply_advertising_form(channel=campaign.channel, content=content, sender_name=campaign.sender_name)
    return content


# --- Processing ----------------------------------------------------------------------------------------------------


def sends_process(*, send_ids: Sequence[int], now: datetime | None = None) -> dict[str, int]:
    """Claim the due sends among ``send_ids`` and deliver them (the body of the chunk task). Idempotent."""
    now = now or timezone.now()
    token = _claim(send_ids, now=now)
    if token is None:
        return {}
    ids = list(send_ids)  # every lookup by claim token is narrowed by primary key (the token is not indexed)
    run_ids = set(Send.objects.filter(pk__in=ids, claim=token).exclude(run=None).values_list("run_id", flat=True))
    try:
        outcome = _deliver(token, ids, now=now)
    except Exception as exc:
        log.exception("send_chunk_failed", error_type=type(exc).__name__)
        _release(token, ids, now=now, error=f"{type(exc).__name__}: {exc}")
        outcome = {"released": 1}
    from campaigns.services.runs import run_finish_if_done

    for run_id in run_ids:
        run_finish_if_done(run_id=run_id, now=now)
    return outcome


def _deliver(token: str, ids: list[int], *, now: datetime) -> dict[str, int]:
    sends = list(
        Send.objects.filter(pk__in=ids, claim=token, status=Send.Status.SENDING)
        .select_related("campaign", "variant")
        .order_by("id")
    )
    if not sends:
        return {}
    facts = _load_facts(sends, now=now)
    counts: dict[str, int] = defaultdict(int)
    finished: list[Send] = []
    ready: dict[tuple[str, bool], list[tuple[Send, Message]]] = defaultdict(list)

    accepted: list[tuple[Send, Decision]] = []
    for send in sends:
        decision = _check(send, facts, now=now)
        if decision.skip:
            send.status, send.skip_reason, send.finished_at = Send.Status.SKIPPED, decision.skip, now
            finished.append(send)
            counts[f"skipped:{decision.skip}"] += 1
        elif decision.hold_until is not None:
            send.status, send.due_at, send.enqueued_at = Send.Status.HELD, decision.hold_until, None
            finished.append(send)
            counts["held"] += 1
        else:
            accepted.append((send, decision))

    # Render per (campaign, variant) with the contacts' data loaded in bulk.
    groups: dict[tuple[int, int | None], list[tuple[Send, Decision]]] = defaultdict(list)
    for send, decision in accepted:
        groups[(send.campaign_id, send.variant_id)].append((send, decision))
    for group in groups.values():
        first = group[0][0]
        variables = first.variant.variables if first.variant else {}
        data = build_render_data(
            [s.contact_id for s, _d in group],
            variables=variables,
            contexts={s.contact_id: s.context for s, _d in group if s.context},
            now=now,
        )
        for send, decision in group:
            try:
                source = send.context.get("content") if isinstance(send.context.get("content"), dict) else None
                content = render_content(
                    campaign=send.campaign, variant=send.variant, data=data[send.contact_id], source=source
                )
            except Exception as exc:
                send.status, send.skip_reason, send.finished_at = Send.Status.SKIPPED, SkipReason.RENDER_ERROR, now
                send.error = f"{type(exc).__name__}: {exc}"[:2000]
                finished.append(send)
                counts[f"skipped:{SkipReason.RENDER_ERROR}"] += 1
                continue
            send.content = content
            send.address = ", ".join(decision.address) if isinstance(decision.address, list) else decision.address
            message = Message(
                send_id=send.pk,
                channel=send.channel,
                contact_id=send.contact_id,
                to=decision.address,
                advertising=send.advertising,
                extra={"campaign_id": send.campaign_id, "variant": send.variant.name if send.variant else ""},
                **{name: content.get(name, "") for name in CONTENT_FIELDS},
            )
            ready[(send.channel, send.is_test)].append((send, message))

    _save(finished)
    for (channel_name, is_test), items in ready.items():
        backend = backend_for(channel_name, test=is_test)
        backend_name = backend_name_for(channel_name, test=is_test)
        size = max(1, backend.capabilities.max_batch_size)
        for start in range(0, len(items), size):
            piece = items[start : start + size]
            results = backend.send_batch([message for _send, message in piece])
            _record(piece, results, backend=backend_name, now=now, counts=counts)
    log.info("sends_processed", claim=token, **dict(counts))
    return dict(counts)


#: Rows per bulk UPDATE: Django writes one CASE per field with a branch per row, so its cost grows with the square
#: of the batch; small batches are much faster (measured in bench/campaign_run.py).
BULK_UPDATE_BATCH = 100

SAVE_FIELDS = [
    "status",
    "skip_reason",
    "due_at",
    "enqueued_at",
    "finished_at",
    "sent_at",
    "error",
    "content",
    "address",
    "backend",
    "provider_message_id",
    "claim",
]


def _save(sends: list[Send]) -> None:
    if not sends:
        return
    for send in sends:
        send.claim = ""
    with transaction.atomic():
        Send.objects.bulk_update(sends, SAVE_FIELDS, batch_size=BULK_UPDATE_BATCH)


def _record(
    piece: list[tuple[Send, Message]],
    results: list[SendResult],
    *,
    backend: str,
    now: datetime,
    counts: dict[str, int],
) -> None:
    by_id = {result.send_id: result for result in results}
    done: list[Send] = []
    for send, _message in piece:
        result = by_id.get(send.pk)
        send.backend = backend
        if result is None:
            result = SendResult(send_id=send.pk, ok=False, error="no result from the backend", transient=True)
        if result.ok:
            send.status, send.sent_at, send.finished_at = Send.Status.SENT, now, now
            send.provider_message_id, send.error = result.provider_message_id[:255], ""
            counts["sent"] += 1
        elif result.transient and send.attempts < settings.LOOP_SEND_MAX_ATTEMPTS:
            send.status, send.due_at, send.enqueued_at = Send.Status.QUEUED, now + backoff(send.attempts), None
            send.error = result.error[:2000]
            counts["retry"] += 1
        else:
            send.status, send.finished_at, send.error = Send.Status.FAILED, now, result.error[:2000]
            counts["failed"] += 1
        done.append(send)
    _save(done)


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
