"""Entering and leaving journeys: set-based, inside the event-processing batch's transaction.

``journeys_handle_events`` is the ``crm.signals.events_recorded`` receiver's one call. For a batch of stored events:

1. **Entry**: for each active journey triggered by one of the batch's event names, the events whose properties meet
   its conditions, narrowed to the entry segment's members, become enrollments in one ``INSERT … ON CONFLICT DO
   NOTHING`` (``bulk_create(ignore_conflicts=True)``). The re-entry rule is enforced by the database: an open
   enrollment holds ``entry_key`` (the contact, or the event for "every time"), unique per journey, so a re-triggering
   contact never gets a second open enrollment, whatever runs concurrently; "once" and "every N days" also exclude
   contacts by their past enrollments.
2. **Exit**: open enrollments of journeys that list one of the batch's event names as an exit event end (one
   ``UPDATE``) when the exit event happened after the trigger: an "Order Completed" during the cart wait cancels the
   reminder before it is sent.
3. **Goal**: enrollments whose journey's goal event happened within the window after the trigger are marked
   converted (and end, if the journey exits on its goal).

Everything commits with the batch, exactly once (see ``crm.signals``). The first step runs at the next tick
(``journeys.tick``, every few seconds), which is also queued on commit when anything entered.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from config.logging import get_logger
from crm.models import Event
from journeys.conditions import conditions_hold
from journeys.models import Enrollment, Journey, Step

logger = get_logger(__name__)


@dataclass(slots=True)
class Candidate:
    """A contact about to enter a journey, with the trigger's data."""

    contact_id: int
    context: dict[str, Any] = field(default_factory=dict)
    event_id: int | None = None
    triggered_at: datetime | None = None


def journey_first_step(journey: Journey, steps: Sequence[Step] | None = None) -> Step | None:
    if journey.first_step_id:
        return journey.first_step
    if steps is not None:
        return min(steps, key=lambda s: (s.position, s.pk), default=None)
    return journey.steps.order_by("position", "id").first()


def _entry_key(journey: Journey, candidate: Candidate) -> str:
    if journey.trigger == Journey.Trigger.DATE and candidate.context.get("date"):
        return f"d:{candidate.contact_id}:{candidate.context['date']}"  # once per contact and date
    if journey.reentry == Journey.Reentry.EVERY_TIME:
        return f"e:{candidate.event_id}" if candidate.event_id is not None else f"u:{uuid.uuid4().hex}"
    return f"c:{candidate.contact_id}"


def journey_enroll(
    *, journey: Journey, candidates: Iterable[Candidate], now: datetime | None = None, check_segment: bool = True
) -> list[int]:
    """Enroll ``candidates`` in ``journey`` by its entry rules (audience segment, re-entry). Set-based; returns the
    ids of the new enrollments (a contact already in the journey is left as it is)."""
    now = now or timezone.now()
    candidates = list(candidates)
    if not candidates or journey.status != Journey.Status.ACTIVE:
        return []
    first = journey_first_step(journey)
    if first is None:
        logger.warning("journeys.no_steps", journey_id=journey.pk)
        return []
    contact_ids = {c.contact_id for c in candidates}
    if check_segment and journey.entry_segment_id:
        contact_ids &= set(
            journey.entry_segment.contacts(now=now).filter(id__in=contact_ids).values_list("id", flat=True)
        )
    past = Enrollment.objects.filter(journey=journey, contact_id__in=contact_ids)
    if journey.reentry == Journey.Reentry.ONCE:
        contact_ids -= set(past.values_list("contact_id", flat=True))
    elif journey.reentry == Journey.Reentry.EVERY_N_DAYS:
        recent = past.filter(entered_at__gt=now - timedelta(days=journey.reentry_days))
        contact_ids -= set(recent.values_list("contact_id", flat=True))
    rows: dict[str, Enrollment] = {}
    for candidate in candidates:
        if candidate.contact_id not in contact_ids:
            continue
        key = _entry_key(journey, candidate)
        if key in rows:
            continue  # the same contact twice in one batch: the first trigger wins
        rows[key] = Enrollment(
            journey=journey,
            contact_id=candidate.contact_id,
            version=journey.version,
            current_step=first,
            status=Enrollment.Status.ACTIVE,
            next_run_at=now,
            context=candidate.context,
            trigger_event_id=candidate.event_id,
            entry_key=key,
            entered_at=now,
            triggered_at=candidate.triggered_at or now,
        )
    if not rows:
        return []
    Enrollment.objects.bulk_create(rows.values(), ignore_conflicts=True, batch_size=500)
    ids = list(
        Enrollment.objects.filter(journey=journey, entry_key__in=list(rows), entered_at=now).values_list(
            "id", flat=True
        )
    )
    if ids:
        from journeys.tasks import tick

        transaction.on_commit(lambda: tick.delay())
        logger.info("journeys.entered", journey_id=journey.pk, count=len(ids))
    return ids


def journey_event_names() -> set[str]:
    """The event names some journey listens to: active triggers, exit events, goals (one small query)."""
    names: set[str] = set()
    rows = Journey.objects.exclude(status=Journey.Status.ARCHIVED).values_list(
        "status", "trigger", "trigger_event", "exit_events", "goal_event"
    )
    for status, trigger, trigger_event, exit_events, goal_event in rows:
        if status == Journey.Status.ACTIVE and trigger == Journey.Trigger.EVENT and trigger_event:
            names.add(trigger_event)
        if status == Journey.Status.DRAFT:
            continue  # nobody is in a draft
        names.update(name for name in exit_events or [] if isinstance(name, str))
        if goal_event:
            names.add(goal_event)
    return names


def _event_rows(event_ids: Sequence[int], *, names: set[str]) -> list[dict[str, Any]]:
    return list(
        Event.objects.filter(id__in=list(event_ids), name__in=names)
        .order_by("occurred_at", "id")
        .values("id", "contact_id", "name", "properties", "occurred_at")
    )


def journeys_handle_events(*, event_ids: Sequence[int], now: datetime | None = None) -> dict[str, int]:
    """Enroll, exit and convert for a batch of stored events (see the module docstring). Returns counts."""
    now = now or timezone.now()
    interesting = journey_event_names()
    if not interesting:
        return {}  # no journey listens: the batch's events are not even read
    events = _event_rows(event_ids, names=interesting)
    if not events:
        return {}
    names = {e["name"] for e in events}
    counts = {"entered": 0, "exited": 0, "converted": 0}
    triggered = Journey.objects.filter(
        status=Journey.Status.ACTIVE, trigger=Journey.Trigger.EVENT, trigger_event__in=names
    ).select_related("entry_segment", "first_step")
    for journey in triggered:
        candidates = [
            Candidate(
                contact_id=e["contact_id"],
                context=dict(e["properties"] or {}),
                event_id=e["id"],
                triggered_at=e["occurred_at"],
            )
            for e in events
            if e["name"] == journey.trigger_event and conditions_hold(journey.trigger_conditions, e["properties"] or {})
        ]
        try:
            with transaction.atomic():  # one journey that cannot enroll (a broken audience) does not stop the others
                counts["entered"] += len(journey_enroll(journey=journey, candidates=candidates, now=now))
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            logger.error("journeys.enroll_failed", journey_id=journey.pk, error=f"{type(exc).__name__}: {exc}"[:300])
    counts["exited"] = _exit_on_events(events, names, now=now)
    counts["converted"] = _goals(events, names, now=now)
    return counts


def _exit_on_events(events: list[dict[str, Any]], names: set[str], *, now: datetime) -> int:
    journeys = {
        j.pk: j
        for j in Journey.objects.filter(status__in=[Journey.Status.ACTIVE, Journey.Status.PAUSED]).exclude(
            exit_events=[]
        )
        if set(j.exit_events or []) & names
    }
    if not journeys:
        return 0
    by_contact: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_contact[e["contact_id"]].append(e)
    open_rows = Enrollment.objects.filter(
        journey_id__in=list(journeys), contact_id__in=list(by_contact), status__in=Enrollment.OPEN
    ).values_list("id", "journey_id", "contact_id", "triggered_at")
    reasons: dict[str, list[int]] = defaultdict(list)
    for enrollment_id, journey_id, contact_id, triggered_at in open_rows:
        exits = set(journeys[journey_id].exit_events)
        hit = next((e for e in by_contact[contact_id] if e["name"] in exits and e["occurred_at"] >= triggered_at), None)
        if hit is not None:
            reasons[hit["name"]].append(enrollment_id)
    exited = 0
    for name, ids in reasons.items():
        exited += enrollments_end(ids=ids, status=Enrollment.Status.EXITED, reason=f"event: {name}", now=now)
    return exited


def enrollments_end(*, ids: Sequence[int], status: str, reason: str, now: datetime) -> int:
    """End open enrollments (one UPDATE): a pending step is cancelled, the entry key freed, a claim voided (the
    tick that holds it writes nothing for an enrollment that is no longer its own). Logged per enrollment."""
    from journeys.models import EnrollmentLog

    ids = list(ids)
    ended = list(
        Enrollment.objects.filter(id__in=ids, status__in=Enrollment.OPEN).values_list(
            "id", "current_step_id", "version"
        )
    )
    if not ended:
        return 0
    count = Enrollment.objects.filter(id__in=[row[0] for row in ended], status__in=Enrollment.OPEN).update(
        status=status,
        finished_at=now,
        exit_reason=reason[:200],
        entry_key=None,
        next_run_at=None,
        claim="",
        current_step=None,  # the pending step is in the log line below
    )
    EnrollmentLog.objects.bulk_create(
        [
            EnrollmentLog(enrollment_id=eid, step_id=step_id, version=version, action=status, detail=reason, at=now)
            for eid, step_id, version in ended
        ]
    )
    return count


def _goals(events: list[dict[str, Any]], names: set[str], *, now: datetime) -> int:
    journeys = {j.pk: j for j in Journey.objects.filter(goal_event__in=names).exclude(status=Journey.Status.DRAFT)}
    if not journeys:
        return 0
    by_contact: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_contact[e["contact_id"]].append(e)
    oldest_window = max(j.goal_window_hours for j in journeys.values())
    rows = Enrollment.objects.filter(
        journey_id__in=list(journeys),
        contact_id__in=list(by_contact),
        goal_reached_at__isnull=True,
        triggered_at__gte=now - timedelta(hours=oldest_window) - timedelta(days=1),
    ).values_list("id", "journey_id", "contact_id", "triggered_at")
    reached: dict[datetime, list[int]] = defaultdict(list)
    exit_ids: list[int] = []
    for enrollment_id, journey_id, contact_id, triggered_at in rows:
        journey = journeys[journey_id]
        window_end = triggered_at + timedelta(hours=journey.goal_window_hours)
        hit = next(
            (
                e
                for e in by_contact[contact_id]
                if e["name"] == journey.goal_event and triggered_at <= e["occurred_at"] <= window_end
            ),
            None,
        )
        if hit is not None:
            reached[hit["occurred_at"]].append(enrollment_id)
            if journey.exit_on_goal:
                exit_ids.append(enrollment_id)
    count = 0
    for at, ids in reached.items():
        count += Enrollment.objects.filter(id__in=ids, goal_reached_at__isnull=True).update(goal_reached_at=at)
    if exit_ids:
        enrollments_end(ids=exit_ids, status=Enrollment.Status.COMPLETED, reason="goal reached", now=now)
    return count


def journey_enroll_contacts(
    *, journey: Journey, contact_ids: Iterable[int], context: dict[str, Any] | None = None, now: datetime | None = None
) -> list[int]:
    """Enroll contacts by hand, from the API or a form (triggers "API" and "form"), with optional trigger data."""
    return journey_enroll(
        journey=journey, candidates=[Candidate(contact_id=c, context=dict(context or {})) for c in contact_ids], now=now
    )


#: Segment-entry and date triggers are checked at most this often (seconds): a segment's members are one query.
SCHEDULED_INTERVAL = 60
SCHEDULED_KEY = "journeys:scheduled-checked"


def journeys_enroll_scheduled(*, now: datetime | None = None, force: bool = False) -> dict[int, int]:
    """Segment-entry and date triggers (the tick calls it; at most once a minute unless ``force``).

    Segment entry: contacts who are members of the trigger segment now and were not at the previous check enter
    (by the re-entry rule); the members are remembered per journey (``SegmentMember``), so a contact who leaves and
    comes back enters again, and one who stays does not re-enter when a run finishes. At activation every current
    member is new. Date: contacts whose date attribute plus the offset is today enter once the time of day has come,
    once per date (the date is in the enrollment's trigger data). Returns journey id → entered."""
    from django.core.cache import cache

    now = now or timezone.now()
    if not force and not cache.add(SCHEDULED_KEY, now.isoformat(), timeout=SCHEDULED_INTERVAL):
        return {}
    result: dict[int, int] = {}
    for journey in Journey.objects.filter(
        status=Journey.Status.ACTIVE, trigger__in=[Journey.Trigger.SEGMENT_ENTRY, Journey.Trigger.DATE]
    ).select_related("trigger_segment", "entry_segment", "first_step"):
        with transaction.atomic():
            if journey.trigger == Journey.Trigger.SEGMENT_ENTRY:
                candidates = _segment_entries(journey, now=now)
            else:
                candidates = _date_entries(journey, now=now)
            entered = journey_enroll(journey=journey, candidates=candidates, now=now)
        if entered:
            result[journey.pk] = len(entered)
    return result


def _segment_entries(journey: Journey, *, now: datetime) -> list[Candidate]:
    from journeys.models import SegmentMember

    if journey.trigger_segment is None:
        return []
    members = set(journey.trigger_segment.contacts(now=now).values_list("id", flat=True))
    known = SegmentMember.objects.filter(journey=journey)
    previous = set(known.values_list("contact_id", flat=True))
    new, gone = members - previous, previous - members
    if gone:
        gone_list = sorted(gone)
        for start in range(0, len(gone_list), 5000):
            known.filter(contact_id__in=gone_list[start : start + 5000]).delete()
    SegmentMember.objects.bulk_create(
        [SegmentMember(journey=journey, contact_id=cid, since=now) for cid in sorted(new)],
        batch_size=5000,
        ignore_conflicts=True,
    )
    return [Candidate(contact_id=cid, context={"segment": journey.trigger_segment.name}) for cid in sorted(new)]


def _date_entries(journey: Journey, *, now: datetime) -> list[Candidate]:
    import zoneinfo

    from django.conf import settings

    local = now.astimezone(zoneinfo.ZoneInfo(settings.TIME_ZONE))
    if local.time() < (journey.date_time or time(9, 0)):
        return []
    target = (local.date() - timedelta(days=journey.date_offset_days)).isoformat()
    attribute = journey.date_attribute
    ids = (
        journey_date_matches(attribute=attribute, day=target)
        .exclude(Q(journey_enrollments__journey=journey) & Q(journey_enrollments__context__date=target))
        .values_list("id", flat=True)
    )
    return [Candidate(contact_id=cid, context={"date": target, attribute: target}) for cid in ids]


def journey_date_matches(*, attribute: str, day: str):
    """Contacts whose attribute holds the date ``day`` (``YYYY-MM-DD``, or a datetime starting with it)."""
    from crm.models import Contact

    return Contact.objects.not_erased().filter(
        Q(**{f"attributes__{attribute}": day}) | Q(**{f"attributes__{attribute}__startswith": day})
    )
