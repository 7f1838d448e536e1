"""Attribution of goal events to sends (docs/analytics.md, "Conversions").

A goal event (a campaign's ``goal_event``) *converts* for a send of that campaign when it happens after the send's
touch and within the campaign's attribution window (``touch < occurred_at <= touch + window``). The touch is the
send's ``sent_at``, or, for campaigns with ``attribution_basis = click``, its first counted click (``clicked_at``).
Only sent, non-test sends qualify.

**Last touch.** When several sends qualify for one event (two campaigns, or two runs of a recurring campaign), the
event is attributed to the one with the latest touch (ties: the later send). An event converts once
(``Conversion.event`` is unique among real sends).

**Holdout.** A holdout member's goal event within the window after the run's start is a *holdout conversion* of
that campaign (one per event and campaign, whatever else the contact received): the control group's rate, for the
lift.

**Revenue** is the event's ``revenue``, ``total`` or ``value`` property (the first present).

Computed incrementally by the beat task ``campaigns.attribute_conversions``: events stored since the last pass (an
id watermark in ``AttributionCursor``), only those received at least ``SETTLE`` ago so a transaction still
committing a lower id is not skipped; set-based (one query per campaign with that goal per batch, one bulk insert
that ignores what already exists), so running it twice changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.db import transaction
from django.db.models import DateTimeField, Exists, ExpressionWrapper, Max, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.models import AttributionCursor, Campaign, Conversion, Run, Send
from campaigns.selectors import _revenue
from campaigns.services.run_figures import runs_figures_forget

log = structlog.get_logger(__name__)

CURSOR = "conversions"
SETTLE = timedelta(minutes=1)
BATCH_SIZE = 5000


def _window_start(window: timedelta):
    return ExpressionWrapper(OuterRef("occurred_at") - Value(window), output_field=DateTimeField())


def _candidates(campaign: Campaign, events) -> tuple[dict[int, tuple], dict[int, tuple]]:
    """``({event id: (touch, send id)}, holdout likewise)`` of one campaign for the goal events ``events``."""
    window = timedelta(hours=campaign.attribution_window_hours)
    anchor = "clicked_at" if campaign.attribution_basis == Campaign.AttributionBasis.CLICK else "sent_at"
    sends = Send.objects.filter(
        campaign=campaign,
        contact_id=OuterRef("contact_id"),
        status=Send.Status.SENT,
        is_test=False,
        **{f"{anchor}__lt": OuterRef("occurred_at"), f"{anchor}__gte": _window_start(window)},
    ).order_by(f"-{anchor}", "-id")
    holdout = (
        Send.objects.filter(campaign=campaign, contact_id=OuterRef("contact_id"), is_holdout=True, is_test=False)
        .exclude(run=None)
        .annotate(start=Coalesce("run__started_at", "run__scheduled_for"))
        .filter(start__lt=OuterRef("occurred_at"), start__gte=_window_start(window))
        .order_by("-start", "-id")
    )
    rows = (
        events.filter(name=campaign.goal_event)
        .annotate(
            send_id=Subquery(sends.values("pk")[:1]),
            touch=Subquery(sends.values(anchor)[:1]),
            holdout_id=Subquery(holdout.values("pk")[:1]),
            holdout_start=Subquery(holdout.values("start")[:1]),
        )
        .filter(Exists(sends) | Exists(holdout))
        .values_list("pk", "send_id", "touch", "holdout_id", "holdout_start")
    )
    real: dict[int, tuple] = {}
    held: dict[int, tuple] = {}
    for event_id, send_id, touch, holdout_id, start in rows:
        if send_id is not None:
            real[event_id] = (touch, send_id)
        if holdout_id is not None:
            held[event_id] = (start, holdout_id)
    return real, held


def events_attribute(event_ids: list[int], *, now: datetime | None = None) -> int:
    """Attribute the goal events among ``event_ids``; returns the conversions added (0 for a repeat)."""
    from crm.models import Event

    now = now or timezone.now()
    events = Event.objects.filter(pk__in=event_ids)
    latest = events.aggregate(latest=Max("occurred_at"))["latest"]  # no send created after it can qualify
    if latest is None:
        return 0
    names = set(events.values_list("name", flat=True).distinct())
    campaigns = Campaign.objects.filter(goal_event__in=names).filter(
        Exists(Send.objects.filter(campaign=OuterRef("pk"), created_at__lte=latest))
    )
    best: dict[int, tuple] = {}
    holdout: list[tuple[int, tuple, int]] = []
    for campaign in campaigns:
        real, held = _candidates(campaign, events)
        for event_id, candidate in real.items():
            if event_id not in best or candidate > best[event_id]:
                best[event_id] = candidate
        holdout.extend((event_id, candidate, campaign.pk) for event_id, candidate in held.items())
    if not best and not holdout:
        return 0
    send_ids = {send_id for _touch, send_id in best.values()} | {c[1] for _e, c, _c in holdout}
    sends = {
        row[0]: row
        for row in Send.objects.filter(pk__in=send_ids).values_list("pk", "campaign_id", "run_id", "variant_id")
    }
    facts = {
        row[0]: row
        for row in Event.objects.filter(pk__in={*best, *(e for e, _c, _k in holdout)}).values_list(
            "pk", "contact_id", "occurred_at", "properties"
        )
    }
    rows = []
    for event_id, (touch, send_id), is_holdout in [(e, c, False) for e, c in best.items()] + [
        (e, c, True) for e, c, _k in holdout
    ]:
        _pk, campaign_id, run_id, variant_id = sends[send_id]
        _e, contact_id, occurred_at, properties = facts[event_id]
        rows.append(
            Conversion(
                event_id=event_id,
                send_id=send_id,
                campaign_id=campaign_id,
                run_id=run_id,
                variant_id=None if is_holdout else variant_id,
                contact_id=contact_id,
                is_holdout=is_holdout,
                revenue=_revenue(properties or {}),
                occurred_at=occurred_at,
                touched_at=touch,
                created_at=now,
            )
        )
    before = Conversion.objects.filter(event_id__in=[row.event_id for row in rows]).count()
    Conversion.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    added = Conversion.objects.filter(event_id__in=[row.event_id for row in rows]).count() - before
    return added


def conversions_attribute(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Attribute the goal events stored since the last pass (the beat task). Returns the conversions added."""
    from crm.models import Event

    now = now or timezone.now()
    goals = set(Campaign.objects.exclude(goal_event="").values_list("goal_event", flat=True).distinct())
    AttributionCursor.objects.get_or_create(name=CURSOR)
    added = 0
    while True:
        with transaction.atomic():
            cursor = AttributionCursor.objects.select_for_update().get(name=CURSOR)
            settled = Event.objects.filter(pk__gt=cursor.last_event_id, received_at__lte=now - SETTLE)
            upto = settled.order_by("pk").values_list("pk", flat=True)[batch_size - 1 : batch_size].first()
            if upto is None:
                upto = settled.aggregate(last=Max("pk"))["last"]
            if upto is None:
                break
            ids = list(
                Event.objects.filter(pk__gt=cursor.last_event_id, pk__lte=upto, name__in=goals).values_list(
                    "pk", flat=True
                )
            )
            if ids:
                added += events_attribute(ids, now=now)
            cursor.last_event_id = upto
            cursor.save(update_fields=["last_event_id", "updated_at"])
    if added:
        log.info("conversions_attributed", added=added)
    return added


def conversions_rebuild(*, campaign: Campaign, now: datetime | None = None) -> int:
    """Attribute again the goal events of ``campaign``'s sends (after its window or basis changed): its conversions
    are removed and every goal event up to the watermark is attributed anew. Returns the conversions added."""
    from crm.models import Event

    with transaction.atomic():
        cursor, _created = AttributionCursor.objects.select_for_update().get_or_create(name=CURSOR)
        Conversion.objects.filter(campaign=campaign).delete()
        ids = list(
            Event.objects.filter(
                pk__lte=cursor.last_event_id,
                name=campaign.goal_event,
                contact__in=Send.objects.filter(campaign=campaign).values("contact_id"),
            ).values_list("pk", flat=True)
        )
        added = _attribute_in_batches(ids, now=now)
        runs_figures_forget(goal_events={campaign.goal_event})  # stored figures counted by the old rule
    return added


def run_conversions_attribute(*, run: Run, now: datetime | None = None) -> int:
    """Attribute, now, the goal events of ``run``'s contacts that the beat pass has not reached yet (received until
    ``SETTLE`` ago): what the automatic winner needs, bounded by the run's audience, without the cursor's lock. The
    beat pass later finds them attributed (the insert ignores what exists). Returns the conversions added."""
    from crm.models import Event

    now = now or timezone.now()
    goal = run.campaign.goal_event
    if not goal:
        return 0
    watermark = AttributionCursor.objects.filter(name=CURSOR).values_list("last_event_id", flat=True).first() or 0
    ids = list(
        Event.objects.filter(
            pk__gt=watermark,
            name=goal,
            received_at__lte=now - SETTLE,
            contact_id__in=Send.objects.filter(run=run, is_test=False).values("contact_id"),
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return _attribute_in_batches(ids, now=now)


def _attribute_in_batches(ids: list[int], *, now: datetime | None) -> int:
    """``events_attribute`` over ``ids`` in batches of ``BATCH_SIZE``; the conversions added."""
    return sum(events_attribute(ids[start : start + BATCH_SIZE], now=now) for start in range(0, len(ids), BATCH_SIZE))
