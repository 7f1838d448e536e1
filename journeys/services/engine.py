"""The engine: claim due enrollments in batches and move each along its journey until it waits or ends.

Each tick (``journeys.tick``, every ``JOURNEYS_TICK_SECONDS`` from beat) repeats, until nothing is due:

1. **Claim** (one short transaction): up to ``JOURNEY_BATCH_SIZE`` due enrollments (open, ``next_run_at <= now``,
   journey active, not claimed or claimed longer ago than ``JOURNEY_CLAIM_LEASE_SECONDS``) get this call's claim token.
   Candidates are read with ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, and the claim is a conditional
   ``UPDATE`` (``WHERE claim = '' OR claimed_at < lease``), so on SQLite, where writes are serialized, two workers
   never hold the same row either. Enrollments of paused journeys are not due: they stay where they are.
2. **Advance** (one transaction): the claimed rows still carrying the token are locked; the enrollments move in
   rounds, grouped by their current step, each step kind applied to its group at once (a wait computes due times, a
   branch evaluates its condition for the whole group in one query, a send creates one idempotent send per
   enrollment). An enrollment moves until it reaches a wait (``waiting`` with the next step and its due time), an
   exit step or the end. The new positions are written in one bulk ``UPDATE`` and the step history in one
   ``INSERT``, with the claim cleared, in the same transaction as the sends and actions.

Exactly once: a worker killed between claim and commit changes nothing (the transaction rolls back); its claim
expires after the lease and another tick takes the rows again. A send step's key is ``journey:<enrollment>:<step>``,
unique in the send ledger, so even a step run twice sends one message. Webhooks and notifications leave the
database: they are at least once (a webhook carries the same ``Idempotency-Key`` on a repeat).

Failures: a step that raises for an enrollment (a webhook down, a segment that cannot be evaluated) is undone for
that enrollment alone (a savepoint), and retried with backoff (1, 2, 4 … minutes); after ``JOURNEY_MAX_ATTEMPTS``
the enrollment is ``failed`` with the reason (admin: retry).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from time import monotonic
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.logging import get_logger
from crm.db import bulk_update_rows, bulk_upsert
from crm.models import Contact, Event
from journeys.conditions import conditions_hold
from journeys.models import Enrollment, EnrollmentLog, Journey, Step

logger = get_logger(__name__)

#: Steps one enrollment may take in one move (a graph that loops back without a wait stops here and continues at
#: the next tick).
MAX_STEPS_PER_MOVE = 50

OPEN_EVENTS = ("Email Opened", "Push Opened", "Message Opened")
CLICK_EVENTS = ("Email Link Clicked", "Push Clicked", "Link Clicked", "Message Clicked")


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 … minutes, at most an hour."""
    return timedelta(seconds=min(60 * 2 ** max(attempts - 1, 0), 3600))


def send_key(enrollment_id: int, step_id: int) -> str:
    return f"journey:{enrollment_id}:{step_id}"


@dataclass(slots=True)
class Move:
    """One enrollment in memory while it moves."""

    id: int
    journey_id: int
    contact_id: int
    version: int
    step_id: int | None
    context: dict[str, Any]
    entered_at: datetime
    triggered_at: datetime
    attempts: int
    base: datetime  # when this move was due: waits count from here
    status: str = Enrollment.Status.ACTIVE
    next_run_at: datetime | None = None
    finished_at: datetime | None = None
    exit_reason: str = ""
    last_error: str = ""
    moving: bool = True
    context_changed: bool = False
    logs: list[dict[str, Any]] = field(default_factory=list)

    def log(self, step: Step | None, action: str, detail: str = "", *, at: datetime) -> None:
        self.logs.append(
            {
                "enrollment_id": self.id,
                "step_id": step.pk if step else None,
                "step_name": step.name[:200] if step else "",
                "version": self.version,
                "action": str(action),
                "detail": detail[:1000],
                "at": at,
            }
        )

    def go(self, step_id: int | None) -> None:
        self.step_id = step_id

    def wait(self, step_id: int | None, due: datetime, now: datetime) -> None:
        self.step_id = step_id
        self.base = max(self.base, due)  # a later wait counts from here, even when this one is already over
        if due <= now:
            return  # already due: keep moving
        self.status, self.next_run_at, self.moving = Enrollment.Status.WAITING, due, False

    def end(self, status: str, reason: str, now: datetime) -> None:
        self.status, self.finished_at, self.exit_reason, self.moving = status, now, reason[:200], False
        self.next_run_at = None
        if status != Enrollment.Status.FAILED:
            self.step_id = None  # the path is in the log; a failed run keeps its step to be retried


class Graph:
    """A journey's steps, with the default successor of each: the step at the next position, unless that step
    starts another path (it is a branch's "no" or a split's path B), where the path ends."""

    def __init__(self, steps: Sequence[Step]):
        ordered = sorted(steps, key=lambda s: (s.position, s.pk))
        self.steps = {s.pk: s for s in ordered}
        path_starts = {s.no_step_id for s in ordered if s.no_step_id}
        self.following = {a.pk: b.pk for a, b in itertools.pairwise(ordered) if b.pk not in path_starts}

    def next_of(self, step: Step) -> int | None:
        return step.next_step_id if step.next_step_id else self.following.get(step.pk)


@dataclass
class Batch:
    now: datetime
    journeys: dict[int, Journey]
    graphs: dict[int, Graph]
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: ``monotonic()`` after which steps that call out (sends, webhooks, notifications) are put off to the
    #: next claim, so that a slow endpoint cannot hold the batch's transaction beyond the claim lease.
    deadline: float = float("inf")

    def contact_data(self, contact_ids: set[int]) -> dict[int, dict[str, Any]]:
        missing = contact_ids - set(self.contacts)
        if missing:
            for row in Contact.objects.filter(id__in=missing).values(
                "id",
                "name",
                "email",
                "phone",
                "locale",
                "time_zone",
                "order_count",
                "total_revenue",
                "external_id",
                "attributes",
                "erased_at",
            ):
                self.contacts[row["id"]] = row
        return {cid: self.contacts[cid] for cid in contact_ids if cid in self.contacts}


# --- Claiming ------------------------------------------------------------------------------------------------------


def _due(now: datetime, lease: datetime):
    """Open enrollments of active journeys due at ``now``, unclaimed or claimed before ``lease``."""
    return (
        Enrollment.objects.filter(
            status__in=Enrollment.OPEN, next_run_at__lte=now, journey__status=Journey.Status.ACTIVE
        )
        .filter(Q(claim="") | Q(claimed_at__lt=lease))
        .order_by("next_run_at", "id")
    )


def enrollments_claim(*, now: datetime, limit: int, at: datetime | None = None) -> tuple[str, list[int]]:
    """Claim up to ``limit`` enrollments due at ``now`` for one advance; returns (token, ids). ``at`` is the moment of
    the claim (default ``now``): a tick's later batches are claimed later than the tick's ``now``, and their lease
    counts from then."""
    token = uuid.uuid4().hex
    at = at or now
    lease = at - timedelta(seconds=settings.LOOP_JOURNEY_CLAIM_LEASE)
    with transaction.atomic():
        candidates = _due(now, lease)
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        ids = list(candidates.values_list("id", flat=True)[:limit])
        if not ids:
            return token, []
        Enrollment.objects.filter(id__in=ids, status__in=Enrollment.OPEN).filter(
            Q(claim="") | Q(claimed_at__lt=lease)
        ).update(claim=token, claimed_at=at)
        claimed = list(Enrollment.objects.filter(id__in=ids, claim=token).values_list("id", flat=True))
    return token, claimed


# --- Step kinds ----------------------------------------------------------------------------------------------------


def _zone(name: str | None) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name) if name else zoneinfo.ZoneInfo(settings.TIME_ZONE)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def _as_date(value: Any, zone: zoneinfo.ZoneInfo) -> date | None:
    if isinstance(value, datetime):
        return value.astimezone(zone).date() if timezone.is_aware(value) else value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(zone).date() if timezone.is_aware(parsed) else parsed.date()


def wait_until_due(step: Step, *, base: datetime, zone: zoneinfo.ZoneInfo, data: dict[str, Any]) -> datetime | None:
    """The first moment at or after ``base`` that meets the step's date, weekday and time of day (in ``zone``);
    None when the date it waits for is missing."""
    at = step.until_time or time(0, 0)
    local = base.astimezone(zone)
    if step.until_date_field:
        root, _, name = step.until_date_field.partition(".")
        source = data.get("event" if root == "event" else "attributes") or {}
        day = _as_date(source.get(name), zone)
        if day is None:
            return None
        day += timedelta(days=step.until_offset_days)
        return datetime.combine(day, step.until_time or time(9, 0), tzinfo=zone)
    candidate = datetime.combine(local.date(), at, tzinfo=zone)
    if candidate < local:
        candidate += timedelta(days=1)
    if step.until_weekday is not None:
        candidate += timedelta(days=(step.until_weekday - candidate.weekday()) % 7)
    return candidate


def wait_until_problem(step: Step, due: datetime | None, *, base: datetime, zone: zoneinfo.ZoneInfo) -> str:
    """Why a wait until a date cannot be kept (the run exits): the date is missing, or was on an earlier day (a
    coupon that expired last week gets no "expires today"). A time already past *today* is kept: it runs at once."""
    if due is None:
        return f"no date in {step.until_date_field}"
    if step.until_date_field and due.astimezone(zone).date() < base.astimezone(zone).date():
        return f"date passed: {due.astimezone(zone).date().isoformat()}"
    return ""


def _wait_duration(step: Step, moves: list[Move], batch: Batch) -> None:
    following = batch.graphs[step.journey_id].next_of(step)
    for move in moves:
        due = move.base + timedelta(minutes=step.wait_minutes)
        move.log(step, "wait", f"until {due.isoformat()}", at=batch.now)
        move.wait(following, due, batch.now)


def _wait_until(step: Step, moves: list[Move], batch: Batch) -> None:
    following = batch.graphs[step.journey_id].next_of(step)
    contacts = batch.contact_data({m.contact_id for m in moves})
    for move in moves:
        contact = contacts.get(move.contact_id) or {}
        data = {"event": move.context, "attributes": contact.get("attributes") or {}}
        zone = _zone(contact.get("time_zone"))
        due = wait_until_due(step, base=move.base, zone=zone, data=data)
        problem = wait_until_problem(step, due, base=move.base, zone=zone)
        if problem:
            move.log(step, Enrollment.Status.EXITED, problem, at=batch.now)
            move.end(Enrollment.Status.EXITED, problem, batch.now)
            continue
        move.log(step, "wait", f"until {due.isoformat()}", at=batch.now)
        move.wait(following, due, batch.now)


def step_message_campaign(step: Step):
    """The triggered campaign a send step sends: its own, or the one carrying the message written on the step
    (created on first use and kept equal to the step's text)."""
    from campaigns.models import Campaign, Variant

    if step.campaign_id:
        return step.campaign
    if step.inline_campaign_id is None:  # first use: one campaign even when two workers get here at once
        locked = Step.objects.select_for_update().filter(pk=step.pk).values_list("inline_campaign", flat=True)
        step.inline_campaign_id = locked.first()
        step.inline_campaign = Campaign.objects.filter(pk=step.inline_campaign_id).first()
    campaign = step.inline_campaign
    content = {
        "subject": step.subject,
        "body": step.body,
        "link_url": step.link_url,
        "variables": step.variables or {},
    }
    purpose = "advertising" if step.advertising else "informational"
    if campaign is None:
        campaign = Campaign.objects.create(
            name=f"{step.journey.name} · {step.name}"[:200],
            kind=Campaign.Kind.TRIGGERED,
            channel=step.channel,
            purpose=purpose,
            status=Campaign.Status.RUNNING,
            description="Message written on a journey step (edited there).",
        )
        Variant.objects.create(campaign=campaign, name="A", **content)
        Step.objects.filter(pk=step.pk).update(inline_campaign=campaign)
        step.inline_campaign = campaign
        return campaign
    if campaign.channel != step.channel or campaign.purpose != purpose:
        campaign.channel, campaign.purpose = step.channel, purpose
        campaign.save(update_fields=["channel", "purpose", "updated_at"])
    variant = campaign.variants.order_by("id").first()
    if variant is None:
        Variant.objects.create(campaign=campaign, name="A", **content)
    elif any(getattr(variant, k) != v for k, v in content.items()):
        Variant.objects.filter(pk=variant.pk).update(**content)
    return campaign


def _send(step: Step, moves: list[Move], batch: Batch) -> None:
    from campaigns.services.sending import campaign_send_one
    from journeys.services.surveys import survey_url

    following = batch.graphs[step.journey_id].next_of(step)
    campaign = step_message_campaign(step)

    def one(move: Move) -> None:
        send = campaign_send_one(
            campaign=campaign,
            contact_id=move.contact_id,
            key=send_key(move.id, step.pk),
            context={"event": {**move.context, "survey_url": survey_url(move.id)}},
            now=batch.now,
        )
        move.log(step, "send", f"send #{send.pk} ({send.status})", at=batch.now)
        move.go(following)

    _each(step, moves, batch, one)


def _branch(step: Step, moves: list[Move], batch: Batch) -> None:
    graph = batch.graphs[step.journey_id]
    contact_ids = {m.contact_id for m in moves}
    cond = Step.Condition
    try:
        if step.condition == cond.SEGMENT:
            members = set(
                step.condition_segment.contacts(now=batch.now).filter(id__in=contact_ids).values_list("id", flat=True)
            )
            verdicts = {m.id: m.contact_id in members for m in moves}
        elif step.condition == cond.EVENT_SINCE_ENTRY:
            earliest = min(m.triggered_at for m in moves)
            seen: dict[int, list[datetime]] = defaultdict(list)
            for contact_id, at in Event.objects.filter(
                contact_id__in=contact_ids, name=step.condition_event, occurred_at__gte=earliest
            ).values_list("contact_id", "occurred_at"):
                seen[contact_id].append(at)
            verdicts = {m.id: any(at >= m.triggered_at for at in seen[m.contact_id]) for m in moves}
        elif step.condition in (cond.OPENED, cond.CLICKED):
            verdicts = _engaged(step, moves, batch)
        else:
            contacts = batch.contact_data(contact_ids)
            verdicts = {}
            for m in moves:
                contact = contacts.get(m.contact_id) or {}
                data = {"event": m.context, "attributes": contact.get("attributes") or {}, "contact": contact}
                verdicts[m.id] = conditions_hold(step.condition_rules, data)
    except Exception as exc:  # a condition that cannot be evaluated fails the group's step: retried with backoff
        for move in moves:
            _fail(move, step, exc, batch)
        return
    for move in moves:
        yes = verdicts[move.id]
        move.log(step, "branch", "yes" if yes else "no", at=batch.now)
        move.go(graph.next_of(step) if yes else step.no_step_id)


def _engaged(step: Step, moves: list[Move], batch: Batch) -> dict[int, bool]:
    """Whether each enrollment's contact opened (clicked) its latest message of this journey: an open (click) event
    after the message was sent."""
    from campaigns.models import Send

    keys = {f"journey:{m.id}:" for m in moves}
    latest: dict[int, datetime] = {}
    sends = Send.objects.filter(
        contact_id__in={m.contact_id for m in moves}, key__startswith="journey:", sent_at__isnull=False
    ).values_list("key", "sent_at")
    for key, sent_at in sends:
        prefix = key.rsplit(":", 1)[0] + ":"
        if prefix in keys:
            enrollment_id = int(prefix.split(":")[1])
            latest[enrollment_id] = max(latest.get(enrollment_id, sent_at), sent_at)
    names = OPEN_EVENTS if step.condition == Step.Condition.OPENED else CLICK_EVENTS
    if not latest:
        return {m.id: False for m in moves}
    seen: dict[int, list[datetime]] = defaultdict(list)
    for contact_id, at in Event.objects.filter(
        contact_id__in={m.contact_id for m in moves}, name__in=names, occurred_at__gte=min(latest.values())
    ).values_list("contact_id", "occurred_at"):
        seen[contact_id].append(at)
    return {m.id: m.id in latest and any(at >= latest[m.id] for at in seen[m.contact_id]) for m in moves}


def split_bucket(step_id: int, contact_id: int) -> int:
    """0-99, stable per (step, contact)."""
    digest = hashlib.sha256(f"{step_id}:{contact_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def _random_split(step: Step, moves: list[Move], batch: Batch) -> None:
    graph = batch.graphs[step.journey_id]
    for move in moves:
        a = split_bucket(step.pk, move.contact_id) < step.split_percent
        move.log(step, "split", "A" if a else "B", at=batch.now)
        move.go(graph.next_of(step) if a else step.no_step_id)


def _action(step: Step, moves: list[Move], batch: Batch) -> None:
    from campaigns.personalization import render_text
    from crm.models import Tag
    from journeys import actions

    following = batch.graphs[step.journey_id].next_of(step)
    kind = Step.Action
    if step.action == kind.ADD_TAG:
        tag, _created = Tag.objects.get_or_create(name=step.action_name)
        through = Contact.tags.through
        through.objects.bulk_create(
            [through(contact_id=cid, tag_id=tag.pk) for cid in {m.contact_id for m in moves}], ignore_conflicts=True
        )
        for move in moves:
            move.log(step, "action", f"tag {step.action_name}", at=batch.now)
            move.go(following)
        return
    if step.action == kind.SET_ATTRIBUTE:
        contacts = batch.contact_data({m.contact_id for m in moves})
        rows = []
        for cid, contact in contacts.items():
            attributes = {**(contact.get("attributes") or {}), step.action_name: step.action_value}
            contact["attributes"] = attributes
            rows.append({"id": cid, "attributes": attributes})
        bulk_update_rows(Contact, rows)
        for move in moves:
            move.log(step, "action", f"{step.action_name} = {step.action_value}", at=batch.now)
            move.go(following)
        return
    if step.action == kind.ISSUE_COUPON:
        _issue_coupons(step, moves, batch)
        for move in moves:
            move.go(following)
        return
    contacts = batch.contact_data({m.contact_id for m in moves})

    def one(move: Move) -> None:
        contact = contacts.get(move.contact_id) or {}
        payload = {
            "journey": step.journey_id,
            "step": step.pk,
            "enrollment": move.id,
            "contact": move.contact_id,
            "external_id": contact.get("external_id"),
            "data": move.context,
        }
        if step.action == kind.WEBHOOK:
            status = actions.call_webhook(step.webhook_url, payload, key=send_key(move.id, step.pk))
            move.log(step, "action", f"webhook {status}", at=batch.now)
        else:
            render_data = {"contact": contact, "attributes": contact.get("attributes") or {}, "event": move.context}
            text = render_text(step.action_value, render_data) if step.action_value else step.name
            actions.notify(step.action_name, text, payload)
            move.log(step, "action", f"notify {step.action_name}", at=batch.now)
        move.go(following)

    _each(step, moves, batch, one)


def coupon_code(prefix: str, enrollment_id: int, step_id: int) -> str:
    """The code a coupon step issues: the prefix and 8 characters derived from (enrollment, step) with the secret
    key: the same on a retry (the coupon is issued once), not guessable from the ids."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"coupon:{enrollment_id}:{step_id}".encode(), hashlib.sha256)
    return f"{prefix}-{base64.b32encode(digest.digest()).decode()[:8]}"


def _issue_coupons(step: Step, moves: list[Move], batch: Batch) -> None:
    from crm.models import Coupon

    expires = None
    if step.coupon_valid_days:
        zone = zoneinfo.ZoneInfo(settings.TIME_ZONE)
        last_day = batch.now.astimezone(zone).date() + timedelta(days=step.coupon_valid_days)
        expires = datetime.combine(last_day, time(23, 59, 59), tzinfo=zone)
    coupons = [
        Coupon(
            contact_id=move.contact_id,
            code=coupon_code(step.action_name, move.id, step.pk),
            discount_amount=step.coupon_amount,
            issued_at=batch.now,
            expires_at=expires,
        )
        for move in moves
    ]
    Coupon.objects.bulk_create(coupons, ignore_conflicts=True)
    for move, coupon in zip(moves, coupons, strict=True):
        move.context, move.context_changed = {**move.context, "coupon_code": coupon.code}, True
        move.log(step, "action", f"coupon {coupon.code}", at=batch.now)


def _exit(step: Step, moves: list[Move], batch: Batch) -> None:
    for move in moves:
        move.log(step, Enrollment.Status.COMPLETED, "exit step", at=batch.now)
        move.end(Enrollment.Status.COMPLETED, f"exit step: {step.name}", batch.now)


HANDLERS: dict[str, Callable[[Step, list[Move], Batch], None]] = {
    Step.Kind.WAIT_DURATION: _wait_duration,
    Step.Kind.WAIT_UNTIL: _wait_until,
    Step.Kind.SEND: _send,
    Step.Kind.BRANCH: _branch,
    Step.Kind.RANDOM_SPLIT: _random_split,
    Step.Kind.ACTION: _action,
    Step.Kind.EXIT: _exit,
}


def _each(step: Step, moves: list[Move], batch: Batch, one: Callable[[Move], None]) -> None:
    """Run ``one`` per enrollment in a savepoint of its own: a failure undoes that enrollment's effects only. Past
    the batch's deadline the rest wait at this step for the next claim (due at once, no attempt counted)."""
    for move in moves:
        if monotonic() > batch.deadline:
            move.step_id = step.pk
            move.status, move.next_run_at, move.moving = Enrollment.Status.ACTIVE, batch.now, False
            continue
        try:
            with transaction.atomic():
                one(move)
        except Exception as exc:
            _fail(move, step, exc, batch)


def _fail(move: Move, step: Step, exc: Exception, batch: Batch) -> None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    move.finished_at, move.exit_reason = None, ""
    move.attempts += 1
    move.last_error = error
    if move.attempts >= settings.LOOP_JOURNEY_MAX_ATTEMPTS:
        move.log(step, Enrollment.Status.FAILED, error, at=batch.now)
        move.end(Enrollment.Status.FAILED, f"step failed: {step.name}", batch.now)
    else:
        due = batch.now + backoff(move.attempts)
        move.log(step, "retry", f"{error} (attempt {move.attempts}, again at {due.isoformat()})", at=batch.now)
        move.step_id = step.pk
        move.status, move.next_run_at, move.moving = Enrollment.Status.ACTIVE, due, False
    logger.warning("journeys.step_failed", enrollment_id=move.id, step_id=step.pk, attempts=move.attempts, error=error)


# --- Advancing -----------------------------------------------------------------------------------------------------

ROW_FIELDS = (
    "id",
    "journey_id",
    "contact_id",
    "version",
    "current_step_id",
    "context",
    "entered_at",
    "triggered_at",
    "attempts",
    "next_run_at",
)


def enrollments_advance(*, token: str, ids: Sequence[int], now: datetime) -> dict[str, int]:
    """Move the enrollments claimed with ``token`` (see the module docstring); one transaction. Returns counts by
    resulting status."""
    counts: dict[str, int] = defaultdict(int)
    with transaction.atomic():
        rows = Enrollment.objects.filter(id__in=list(ids), claim=token, status__in=Enrollment.OPEN)
        if connection.features.has_select_for_update:
            rows = rows.select_for_update(of=("self",))
        rows = list(rows.values_list(*ROW_FIELDS))
        if not rows:
            return {}
        journey_ids = {row[1] for row in rows}
        journeys = Journey.objects.in_bulk(journey_ids)
        steps_by_journey: dict[int, list[Step]] = defaultdict(list)
        for step in Step.objects.filter(journey_id__in=journey_ids).select_related(
            "journey", "campaign", "inline_campaign", "condition_segment"
        ):
            steps_by_journey[step.journey_id].append(step)
        graphs = {jid: Graph(steps_by_journey[jid]) for jid in journey_ids}
        batch = Batch(
            now=now,
            journeys=journeys,
            graphs=graphs,
            deadline=monotonic() + settings.LOOP_JOURNEY_CLAIM_LEASE / 4,
        )
        moves = [
            Move(
                id=r[0],
                journey_id=r[1],
                contact_id=r[2],
                version=r[3],
                step_id=r[4],
                context=r[5] or {},
                entered_at=r[6],
                triggered_at=r[7],
                attempts=r[8],
                base=min(r[9] or now, now),
            )
            for r in rows
        ]
        _run(moves, batch)
        for rows_of_a_shape in _rows(moves):
            bulk_update_rows(Enrollment, rows_of_a_shape)
        bulk_upsert(EnrollmentLog, [log for m in moves for log in m.logs])
    for m in moves:
        counts[m.status] += 1
    return dict(counts)


def _rows(moves: list[Move]) -> list[list[dict[str, Any]]]:
    """Rows for the bulk updates, grouped by shape: ended enrollments free their entry key, and the trigger data is
    written only where a step changed it."""
    groups: dict[tuple[bool, bool], list[dict[str, Any]]] = defaultdict(list)
    for m in moves:
        row = {
            "id": m.id,
            "current_step_id": m.step_id,
            "status": m.status,
            "next_run_at": m.next_run_at,
            "finished_at": m.finished_at,
            "exit_reason": m.exit_reason,
            "attempts": m.attempts,
            "last_error": m.last_error,
            "claim": "",
            "claimed_at": None,
        }
        if m.finished_at is not None:
            row["entry_key"] = None
        if m.context_changed:
            row["context"] = m.context
        groups[(m.finished_at is not None, m.context_changed)].append(row)
    return list(groups.values())


def _run(moves: list[Move], batch: Batch) -> None:
    pending = moves
    for _round in range(MAX_STEPS_PER_MOVE):
        if not pending:
            return
        groups: dict[int | None, list[Move]] = defaultdict(list)
        for move in pending:
            groups[move.step_id].append(move)
        for step_id, group in groups.items():
            step = None
            if step_id is not None:
                step = batch.graphs[group[0].journey_id].steps.get(step_id)
            if step is None:
                for move in group:
                    move.log(None, Enrollment.Status.COMPLETED, "", at=batch.now)
                    move.end(Enrollment.Status.COMPLETED, "", batch.now)
                continue
            marks = [len(move.logs) for move in group]
            try:
                with transaction.atomic():
                    HANDLERS[step.kind](step, group, batch)
            except Exception as exc:  # a step that failed for its whole group (e.g. a deadlock): retried, undone
                for move, mark in zip(group, marks, strict=True):
                    del move.logs[mark:]
                    move.moving = True
                    _fail(move, step, exc, batch)
        pending = [m for m in pending if m.moving]
    for move in pending:  # a loop without a wait: continue at the next tick
        move.status, move.next_run_at, move.moving = Enrollment.Status.ACTIVE, batch.now, False


@dataclass(frozen=True, slots=True)
class TickResult:
    claimed: int
    batches: int
    counts: dict[str, int]


def journeys_tick(*, now: datetime | None = None, batch_size: int | None = None, max_batches: int = 100) -> TickResult:
    """Claim and advance due enrollments until none is due (or ``max_batches``)."""
    from journeys.services.enrollment import journeys_enroll_scheduled

    now = now or timezone.now()
    journeys_enroll_scheduled(now=now)
    size = batch_size or settings.LOOP_JOURNEY_BATCH_SIZE
    total, batches = 0, 0
    counts: dict[str, int] = defaultdict(int)
    started = monotonic()
    while batches < max_batches:
        at = now + timedelta(seconds=monotonic() - started)  # the tick's clock, moving on with the real one
        token, ids = enrollments_claim(now=now, limit=size, at=at)
        if not ids:
            break
        batches += 1
        total += len(ids)
        for status, n in enrollments_advance(token=token, ids=ids, now=now).items():
            counts[status] += n
    if total:
        logger.info("journeys.tick", claimed=total, batches=batches, **counts)
    return TickResult(claimed=total, batches=batches, counts=dict(counts))
