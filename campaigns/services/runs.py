"""Runs: create one per scheduled occurrence, take the audience snapshot, finish it; the beat tick.

The snapshot is one ``INSERT … SELECT`` of the segment's members (minus the excluded segment) into the send
ledger, then the A/B assignment in bulk (one ``UPDATE`` per group of sends that share variant, state and due
time), then chunk tasks for the sends due now. ``(run, contact)`` is unique and the run row is locked while its
snapshot is taken, so a run is snapshotted once whatever the number of tasks, workers or beat processes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import structlog
from django.db import IntegrityError, connection, transaction
from django.db.models import Count
from django.utils import timezone

from campaigns.assignment import Assigner
from campaigns.models import Campaign, Run, Send, SkipReason
from campaigns.services import schedules
from campaigns.services.sending import (
    OPEN_STATUSES,
    contact_zone,
    sends_dispatch_due,
    sends_enqueue,
    sends_recover_stale,
)

log = structlog.get_logger(__name__)

#: Sends per UPDATE when writing assignments.
UPDATE_BATCH = 5000


def run_create(*, campaign: Campaign, scheduled_for: datetime) -> tuple[Run, bool]:
    """The campaign's run for ``scheduled_for``, created once (a second call returns the first run)."""
    scheduled_for = scheduled_for.replace(microsecond=0)
    existing = Run.objects.filter(campaign=campaign, scheduled_for=scheduled_for).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            return Run.objects.create(campaign=campaign, scheduled_for=scheduled_for), True
    except IntegrityError:
        return Run.objects.get(campaign=campaign, scheduled_for=scheduled_for), False


def run_start(*, run_id: int, now: datetime | None = None) -> Run:
    """Take the run's audience snapshot and enqueue what is due. Idempotent: only a pending run is started, and
    only while its campaign is scheduled or running."""
    now = now or timezone.now()
    with transaction.atomic():
        run = Run.objects.select_for_update().select_related("campaign").get(pk=run_id)
        campaign = run.campaign
        if run.status != Run.Status.PENDING:
            return run
        if campaign.status == Campaign.Status.CANCELLED:
            Run.objects.filter(pk=run.pk).update(status=Run.Status.CANCELLED, finished_at=now)
            run.refresh_from_db()
            return run
        if campaign.status not in (Campaign.Status.SCHEDULED, Campaign.Status.RUNNING):
            return run  # paused (resumed later) or draft
        due_ids = _snapshot(run, now=now)
        run.status = Run.Status.SENDING
        run.started_at = now
        run.save(update_fields=["status", "started_at", "audience_count", "holdout_count", "winner_decide_at"])
        Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SCHEDULED).update(status=Campaign.Status.RUNNING)
        chunks = sends_enqueue(send_ids=due_ids, now=now)
    log.info("run_started", run=run.pk, campaign=campaign.pk, audience=run.audience_count, chunks=chunks)
    if not due_ids:
        run_finish_if_done(run_id=run.pk, now=now)
    return run


def _audience_sql(campaign: Campaign, *, now: datetime) -> tuple[str, list]:
    members = campaign.segment.contacts(now=now)
    if campaign.exclude_segment_id:
        members = members.exclude(pk__in=campaign.exclude_segment.contacts(now=now).values("pk"))
    sql, params = members.order_by().values("id").query.sql_with_params()
    return sql, list(params)


def _snapshot(run: Run, *, now: datetime) -> list[int]:
    """Insert one send per audience member, assign variants, holdout and due times. Returns the ids due now."""
    campaign = run.campaign
    if campaign.segment_id is None:
        raise ValueError("a broadcast campaign needs an audience segment")
    variants = list(campaign.variants.order_by("id"))
    if not variants:
        raise ValueError("a campaign needs at least one variant")
    qn = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    audience_sql, audience_params = _audience_sql(campaign, now=now)
    columns = [
        "campaign_id",
        "run_id",
        "contact_id",
        "is_holdout",
        "is_test",
        "channel",
        "advertising",
        "counts_toward_cap",
        "status",
        "skip_reason",
        "due_at",
        "attempts",
        "claim",
        "context",
        "address",
        "backend",
        "content",
        "provider_message_id",
        "error",
        "created_at",
    ]
    values = "%s, %s, audience.id, %s, %s, %s, %s, %s, %s, '', %s, 0, '', '{}', '', '', '{}', '', '', %s"
    # Only quoted identifiers and the ORM's own compiled SQL are interpolated; every value is a parameter.
    insert = f"INSERT INTO {qn(Send._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
    sql = insert + f"SELECT {values} FROM ({audience_sql}) audience"  # noqa: S608
    params = [
        campaign.pk,
        run.pk,
        False,
        False,
        campaign.channel,
        campaign.is_advertising,
        not campaign.frequency_cap_exempt,
        Send.Status.QUEUED,
        adapt(run.scheduled_for),
        adapt(now),
        *audience_params,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)

    auto_winner = campaign.auto_winner and len(variants) > 1
    if auto_winner:
        run.winner_decide_at = run.scheduled_for + timedelta(hours=campaign.winner_wait_hours)
    assigner = Assigner(
        campaign_id=campaign.pk,
        seed=campaign.assignment_seed,
        variants=[(v.pk, v.weight) for v in variants],
        holdout_percent=campaign.holdout_percent,
        test_percent=campaign.winner_test_percent if auto_winner else None,
    )
    delays = {v.pk: timedelta(minutes=v.send_delay_minutes) for v in variants}
    wall = run.scheduled_for.astimezone(schedules.LEAD_ZONE).replace(tzinfo=None) if campaign.local_time else None

    groups: dict[tuple, list[int]] = defaultdict(list)
    due_now: list[int] = []
    audience = holdout = 0
    rows = Send.objects.filter(run=run).order_by("id").values_list("id", "contact_id", "contact__time_zone")
    for send_id, contact_id, zone_name in rows.iterator(chunk_size=10_000):
        audience += 1
        assignment = assigner.assign(contact_id)
        if assignment.holdout:
            holdout += 1
            groups[(None, True, Send.Status.SKIPPED, SkipReason.HOLDOUT, run.scheduled_for)].append(send_id)
            continue
        base = wall.replace(tzinfo=contact_zone(zone_name)) if wall is not None else run.scheduled_for
        if assignment.variant_id is None:  # auto-winner remainder
            groups[(None, False, Send.Status.WAITING, "", run.winner_decide_at)].append(send_id)
            continue
        due = base + delays[assignment.variant_id]
        groups[(assignment.variant_id, False, Send.Status.QUEUED, "", due)].append(send_id)
        if due <= now:
            due_now.append(send_id)
    for (variant_id, is_holdout, status, reason, due), ids in groups.items():
        extra = {"finished_at": now} if status == Send.Status.SKIPPED else {}
        for start in range(0, len(ids), UPDATE_BATCH):
            Send.objects.filter(pk__in=ids[start : start + UPDATE_BATCH]).update(
                variant_id=variant_id, is_holdout=is_holdout, status=status, skip_reason=reason, due_at=due, **extra
            )
    run.audience_count = audience
    run.holdout_count = holdout
    return due_now


def run_counts(*, run: Run) -> dict:
    """Counts of a run's sends: by status, by skip reason, and per variant (holdout as its own row)."""
    by_status = dict(run.sends.values_list("status").annotate(n=Count("id")).order_by())
    by_reason = dict(
        run.sends.filter(status=Send.Status.SKIPPED).values_list("skip_reason").annotate(n=Count("id")).order_by()
    )
    per_variant: dict[str, dict[str, int]] = defaultdict(dict)
    rows = run.sends.values_list("variant__name", "is_holdout", "status").annotate(n=Count("id")).order_by()
    for name, is_holdout, status, n in rows:
        label = "holdout" if is_holdout else (name or "waiting")
        per_variant[label][status] = per_variant[label].get(status, 0) + n
    return {"status": by_status, "skip_reason": by_reason, "variants": dict(per_variant)}


def run_finish_if_done(*, run_id: int, now: datetime | None = None) -> bool:
    """Complete a sending run whose sends are all finished; store its counts; move its campaign on."""
    now = now or timezone.now()
    with transaction.atomic():
        run = Run.objects.select_for_update().select_related("campaign").get(pk=run_id)
        if run.status != Run.Status.SENDING or run.sends.filter(status__in=OPEN_STATUSES).exists():
            return False
        run.status = Run.Status.COMPLETED
        run.finished_at = now
        run.counts = run_counts(run=run)
        run.save(update_fields=["status", "finished_at", "counts"])
        campaign = run.campaign
        if campaign.status == Campaign.Status.RUNNING:
            if campaign.schedule == Campaign.Schedule.RECURRING:
                finished = campaign.ends_on and now.astimezone(campaign.zone).date() >= campaign.ends_on
                campaign.status = Campaign.Status.COMPLETED if finished else Campaign.Status.SCHEDULED
            elif not campaign.runs.filter(status__in=[Run.Status.PENDING, Run.Status.SENDING]).exists():
                campaign.status = Campaign.Status.COMPLETED
            Campaign.objects.filter(pk=campaign.pk).update(status=campaign.status)
            schedules.campaign_schedule_sync(campaign=campaign)
    log.info("run_completed", run=run.pk, counts=run.counts.get("status"))
    return True


def campaign_fire_recurring(*, campaign_id: int, now: datetime | None = None) -> Run | None:
    """What the campaign's PeriodicTask runs: create the run of the cron occurrence that is due now, once, and
    start it. A second delivery of the same occurrence (a retried task, two beat processes) finds the run made."""
    now = now or timezone.now()
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None or campaign.schedule != Campaign.Schedule.RECURRING:
        return None
    if campaign.status not in (Campaign.Status.SCHEDULED, Campaign.Status.RUNNING):
        return None
    occurrence = schedules.cron_last_occurrence(campaign, now=now)
    if occurrence is None or not schedules.within_dates(campaign, moment=occurrence):
        return None
    run, created = run_create(campaign=campaign, scheduled_for=occurrence)
    if created:
        log.info("recurring_run_created", campaign=campaign.pk, run=run.pk, scheduled_for=occurrence.isoformat())
    return run_start(run_id=run.pk, now=now)


def runs_start_due(*, now: datetime | None = None) -> int:
    """One-time campaigns whose time came get their run; pending runs of active campaigns are started."""
    now = now or timezone.now()
    started = 0
    horizon = now + timedelta(hours=26)  # per-contact local time starts up to ~26 h before the campaign zone
    for campaign in Campaign.objects.filter(
        status=Campaign.Status.SCHEDULED, schedule=Campaign.Schedule.ONCE, send_at__lte=horizon
    ):
        fire_at = campaign.send_at
        if campaign.local_time:
            wall = campaign.send_at.astimezone(campaign.zone).replace(tzinfo=None)
            fire_at = wall.replace(tzinfo=schedules.LEAD_ZONE)
        if fire_at > now or campaign.runs.exists():
            continue
        run, _created = run_create(campaign=campaign, scheduled_for=fire_at)
        run_start(run_id=run.pk, now=now)
        started += 1
    pending = Run.objects.filter(
        status=Run.Status.PENDING,
        scheduled_for__lte=now,
        campaign__status__in=[Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.CANCELLED],
    ).values_list("pk", flat=True)
    for run_id in list(pending):
        run_start(run_id=run_id, now=now)
        started += 1
    return started


def campaigns_tick(*, now: datetime | None = None) -> dict[str, int]:
    """The beat tick (every minute): start due runs, choose due A/B winners, recover stale claims, enqueue due
    sends (held, retried, delayed, local time), finish runs that are done. Safe to run twice at once."""
    from campaigns.services.winner import runs_decide_due_winners

    now = now or timezone.now()
    result = {
        "runs_started": runs_start_due(now=now),
        "winners": runs_decide_due_winners(now=now),
        "recovered": sum(sends_recover_stale(now=now).values()),
        "enqueued": sends_dispatch_due(now=now),
    }
    finished = 0
    for run_id in list(Run.objects.filter(status=Run.Status.SENDING).values_list("pk", flat=True)):
        finished += run_finish_if_done(run_id=run_id, now=now)
    result["runs_finished"] = finished
    if any(result.values()):
        log.info("campaigns_tick", **result)
    return result
