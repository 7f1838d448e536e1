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

from campaigns.assignment import Assigner, thresholds
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


#: Columns of the snapshot's INSERT besides the contact (in this order), the assignment and the finished time.
SNAPSHOT_COLUMNS = [
    "campaign_id",
    "run_id",
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
        due_ids, marked = _snapshot(run, now=now)
        run.status = Run.Status.SENDING
        run.started_at = now
        run.save(update_fields=["status", "started_at", "audience_count", "holdout_count", "winner_decide_at"])
        Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SCHEDULED).update(status=Campaign.Status.RUNNING)
        chunks = sends_enqueue(send_ids=due_ids, now=now, marked=marked)
    log.info("run_started", run=run.pk, campaign=campaign.pk, audience=run.audience_count, chunks=chunks)
    if not due_ids:
        run_finish_if_done(run_id=run.pk, now=now)
    return run


def campaign_audience(campaign: Campaign, *, now: datetime):
    """The campaign's segment members minus its excluded segment's, now (before the send-time checks)."""
    members = campaign.segment.contacts(now=now)
    if campaign.exclude_segment_id:
        members = members.exclude(pk__in=campaign.exclude_segment.contacts(now=now).values("pk"))
    return members


def _audience_sql(campaign: Campaign, *, now: datetime) -> tuple[str, list]:
    sql, params = campaign_audience(campaign, now=now).order_by().values("id").query.sql_with_params()
    return sql, list(params)


def _snapshot(run: Run, *, now: datetime) -> tuple[list[int], bool]:
    """Insert one send per audience member, assign variants, holdout and due times. Returns the ids due now and
    whether they are marked enqueued already.

    On PostgreSQL (unless the campaign sends in each contact's time zone) one ``INSERT … SELECT`` does it all: the
    assignment is computed in SQL from the same SHA-256 digest as ``Assigner`` (``assignment.thresholds``). Else
    the sends are inserted, then assigned in Python and updated in groups."""
    campaign = run.campaign
    if campaign.segment_id is None:
        raise ValueError("a broadcast campaign needs an audience segment")
    variants = list(campaign.variants.order_by("id"))
    if not variants:
        raise ValueError("a campaign needs at least one variant")
    audience_sql, audience_params = _audience_sql(campaign, now=now)
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
    if connection.vendor == "postgresql" and not campaign.local_time:
        result = _snapshot_assigned_in_sql(run, variants, assigner, audience_sql, audience_params, now=now)
        _analyze_after_large_snapshot(run)
        return result

    qn = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    columns = [*SNAPSHOT_COLUMNS[:2], "contact_id", *SNAPSHOT_COLUMNS[2:]]
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
    _analyze_after_large_snapshot(run)
    return due_now, False


#: Sends a snapshot inserts from which the table's planner statistics are refreshed at once (see below).
ANALYZE_AFTER = 10_000


def _analyze_after_large_snapshot(run: Run) -> None:
    """``ANALYZE`` the send table after a large snapshot, in its transaction (PostgreSQL samples the transaction's
    own new rows). Until autovacuum gets to it, the statistics do not know the new queued sends, and the planner
    reads the chunks' claim through the partial due-sends index instead of the primary key: measured 370 ms per
    500-send claim instead of 14 ms. ANALYZE samples a fixed number of rows (≈ 0.1–0.3 s)."""
    if connection.vendor == "postgresql" and (run.audience_count or 0) >= ANALYZE_AFTER:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(Send._meta.db_table)}")


#: 2**64, to read the digest's first 8 bytes (a signed bigint in SQL) as the unsigned integer Python reads.
_UNSIGNED = "(({0})::numeric + CASE WHEN ({0}) < 0 THEN 18446744073709551616 ELSE 0 END)"


def _snapshot_assigned_in_sql(
    run: Run, variants: list, assigner: Assigner, audience_sql: str, audience_params: list, *, now: datetime
) -> tuple[list[int], bool]:
    campaign = run.campaign
    qn = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    t = thresholds(assigner)
    delays = {v.pk: v.send_delay_minutes for v in variants}
    first = "('x' || encode(substring(d from 1 for 8), 'hex'))::bit(64)::bigint"
    second = "('x' || encode(substring(d from 9 for 8), 'hex'))::bit(64)::bigint"
    in_test = "true" if t.test is None else "m < %s::numeric"
    index = " + ".join(["(n >= %s::numeric)::int"] * len(t.bounds))
    columns = ["variant_id", *SNAPSHOT_COLUMNS[:2], "contact_id", *SNAPSHOT_COLUMNS[2:], "finished_at", "enqueued_at"]
    # Only quoted identifiers and the ORM's own compiled SQL are interpolated; every value is a parameter.
    sql = (
        f"WITH digest AS (SELECT audience.id AS contact_id, "  # noqa: S608
        f"sha256(convert_to(%s || audience.id::text, 'UTF8')) AS d FROM ({audience_sql}) audience), "
        f"numbers AS (SELECT contact_id, {_UNSIGNED.format(first)} AS n, {_UNSIGNED.format(second)} AS m "
        f"FROM digest), "
        f"picked AS (SELECT contact_id, n < %s::numeric AS holdout, {in_test} AS in_test, "
        f"LEAST({index}, %s) + 1 AS k FROM numbers), "
        f"assigned AS (SELECT contact_id, holdout, "
        f"CASE WHEN holdout OR NOT in_test THEN NULL ELSE (%s::bigint[])[k] END AS variant_id, "
        f"CASE WHEN holdout THEN %s WHEN NOT in_test THEN %s ELSE %s END AS status, "
        f"CASE WHEN holdout THEN %s::timestamptz WHEN NOT in_test THEN %s::timestamptz "
        f"ELSE %s::timestamptz + (%s::int[])[k] * interval '1 minute' END AS due_at FROM picked) "
        f"INSERT INTO {qn(Send._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
        f"SELECT variant_id, %s, %s, contact_id, holdout, false, %s, %s, %s, status, "
        f"CASE WHEN holdout THEN %s ELSE '' END, due_at, 0, '', '{{}}', '', '', '{{}}', '', '', %s, "
        f"CASE WHEN holdout THEN %s::timestamptz END, "
        f"CASE WHEN status = %s AND due_at <= %s::timestamptz THEN %s::timestamptz END "
        f"FROM assigned RETURNING id, is_holdout, enqueued_at IS NOT NULL"
    )
    params = [
        f"{assigner.campaign_id}:{assigner.seed}:",
        *audience_params,
        str(t.holdout),
        *([] if t.test is None else [str(t.test)]),
        *[str(bound) for bound in t.bounds],
        len(t.ids) - 1,
        "{" + ",".join(str(i) for i in t.ids) + "}",
        Send.Status.SKIPPED,
        Send.Status.WAITING,
        Send.Status.QUEUED,
        adapt(run.scheduled_for),
        adapt(run.winner_decide_at),
        adapt(run.scheduled_for),
        "{" + ",".join(str(delays[i]) for i in t.ids) + "}",
        campaign.pk,
        run.pk,
        campaign.channel,
        campaign.is_advertising,
        not campaign.frequency_cap_exempt,
        SkipReason.HOLDOUT,
        adapt(now),
        adapt(now),
        Send.Status.QUEUED,
        adapt(now),
        adapt(now),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    run.audience_count = len(rows)
    run.holdout_count = sum(1 for _id, is_holdout, _due in rows if is_holdout)
    return [send_id for send_id, _holdout, due in rows if due], True


def run_counts(*, run: Run) -> dict:
    """Counts of a run's sends: by status, by skip reason, and per variant (holdout as its own row): by status
    (``variants``) and by skip reason (``variant_skip_reasons``)."""
    by_status = dict(run.sends.values_list("status").annotate(n=Count("id")).order_by())
    by_reason = dict(
        run.sends.filter(status=Send.Status.SKIPPED).values_list("skip_reason").annotate(n=Count("id")).order_by()
    )
    per_variant: dict[str, dict[str, int]] = defaultdict(dict)
    reasons: dict[str, dict[str, int]] = defaultdict(dict)
    rows = (
        run.sends.values_list("variant__name", "is_holdout", "status", "skip_reason").annotate(n=Count("id")).order_by()
    )
    for name, is_holdout, status, reason, n in rows:
        label = "holdout" if is_holdout else (name or "waiting")
        per_variant[label][status] = per_variant[label].get(status, 0) + n
        if status == Send.Status.SKIPPED:
            reasons[label][reason] = reasons[label].get(reason, 0) + n
    return {
        "status": by_status,
        "skip_reason": by_reason,
        "variants": dict(per_variant),
        "variant_skip_reasons": dict(reasons),
    }


def run_finish_if_done(*, run_id: int, now: datetime | None = None) -> bool:
    """Complete a sending run whose sends are all finished; store its counts; move its campaign on."""
    now = now or timezone.now()
    if Send.objects.filter(run_id=run_id, status__in=OPEN_STATUSES).exists():
        return False  # the common answer after a chunk, without locking the run
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
        from campaigns.team_reports import run_report_notify

        run_report_notify(run=run)  # to CAMPAIGN_REPORT_DESTINATION, committed with the run
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
    sends (held, retried, delayed, local time) and due team notifications, finish runs that are done. Safe to run
    twice at once."""
    from campaigns.services.notifications import notifications_dispatch_due
    from campaigns.services.winner import runs_decide_due_winners

    now = now or timezone.now()
    result = {
        "runs_started": runs_start_due(now=now),
        "winners": runs_decide_due_winners(now=now),
        "recovered": sum(sends_recover_stale(now=now).values()),
        "enqueued": sends_dispatch_due(now=now),
        "notifications": notifications_dispatch_due(now=now),
    }
    finished = 0
    for run_id in list(Run.objects.filter(status=Run.Status.SENDING).values_list("pk", flat=True)):
        finished += run_finish_if_done(run_id=run_id, now=now)
    result["runs_finished"] = finished
    if any(result.values()):
        log.info("campaigns_tick", **result)
    return result
