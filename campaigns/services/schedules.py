"""Campaign schedules: the django-celery-beat PeriodicTask a recurring campaign owns, and cron arithmetic.

A recurring campaign owns exactly one ``PeriodicTask`` (named ``campaign:<id>``) and its own ``CrontabSchedule``
(the cron fields and the campaign's time zone). ``campaign_schedule_sync`` makes them match the campaign: created
when it is scheduled, changed with it, disabled while paused, deleted when it is cancelled, completed, made
non-recurring or deleted. Nothing else writes them, so a campaign never leaves an orphaned task behind.
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import date, datetime, time, timedelta

from celery.schedules import crontab
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from campaigns.models import Campaign

FIRE_TASK = "campaigns.fire_recurring"
#: Per-contact local time: the schedule fires when the earliest time zone (UTC+14) reaches the wall-clock time;
#: each contact's send is then due when their own zone reaches it.
LEAD_ZONE = zoneinfo.ZoneInfo("Etc/GMT-14")
#: How far back the last cron occurrence is looked for (a delayed delivery older than this starts nothing).
LOOKBACK = timedelta(days=2)

ACTIVE_STATUSES = {Campaign.Status.SCHEDULED, Campaign.Status.RUNNING}


def task_name(campaign: Campaign) -> str:
    return f"campaign:{campaign.pk}"


def parse_cron(campaign: Campaign) -> crontab:
    """The campaign's cron fields as a celery crontab; ValidationError naming the bad field."""
    fields = {
        "minute": campaign.cron_minute,
        "hour": campaign.cron_hour,
        "day_of_week": campaign.cron_day_of_week,
        "day_of_month": campaign.cron_day_of_month,
        "month_of_year": campaign.cron_month_of_year,
    }
    for name, value in fields.items():
        try:
            crontab(**{name: value or "*"})
        except (ValueError, TypeError) as exc:
            raise ValidationError({f"cron_{name}": _("Invalid value: %(error)s") % {"error": exc}}) from None
    return crontab(**{name: value or "*" for name, value in fields.items()})


def schedule_zone(campaign: Campaign) -> zoneinfo.ZoneInfo:
    """The zone the cron (or the one-time send_at) is evaluated in: the lead zone for per-contact local time."""
    return LEAD_ZONE if campaign.local_time else campaign.zone


def _matches(cron: crontab, moment: datetime) -> bool:
    dow = (moment.weekday() + 1) % 7  # celery: 0 = Sunday
    return (
        moment.minute in cron.minute
        and moment.hour in cron.hour
        and dow in cron.day_of_week
        and moment.day in cron.day_of_month
        and moment.month in cron.month_of_year
    )


def cron_last_occurrence(campaign: Campaign, *, now: datetime) -> datetime | None:
    """The latest wall-clock minute at or before ``now`` that the campaign's cron matches, as an aware datetime
    in the schedule zone; None when there is none within ``LOOKBACK``."""
    cron = parse_cron(campaign)
    zone = schedule_zone(campaign)
    local = now.astimezone(zone).replace(second=0, microsecond=0)
    for minutes in range(int(LOOKBACK.total_seconds() // 60) + 1):
        candidate = local - timedelta(minutes=minutes)
        if _matches(cron, candidate):
            return candidate
    return None


def cron_next_occurrence(campaign: Campaign, *, after: datetime, limit_days: int = 366) -> datetime | None:
    """The next matching minute after ``after`` (for the admin: "next run")."""
    cron = parse_cron(campaign)
    zone = schedule_zone(campaign)
    local = after.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = local.replace(hour=0, minute=0)
    for offset in range(limit_days):
        current = day + timedelta(days=offset)
        dow = (current.weekday() + 1) % 7
        if (
            current.day not in cron.day_of_month
            or current.month not in cron.month_of_year
            or dow not in cron.day_of_week
        ):
            continue
        for hour in sorted(cron.hour):
            for minute in sorted(cron.minute):
                candidate = datetime.combine(current.date(), time(hour, minute), tzinfo=zone)
                if candidate >= local:
                    return candidate
    return None


def within_dates(campaign: Campaign, *, moment: datetime) -> bool:
    """Whether ``moment`` falls between the campaign's start and end dates (in the campaign's time zone)."""
    day = moment.astimezone(campaign.zone).date()
    if campaign.starts_on and day < campaign.starts_on:
        return False
    return not (campaign.ends_on and day > campaign.ends_on)


def _start_of(day: date | None, zone: zoneinfo.ZoneInfo) -> datetime | None:
    return datetime.combine(day, time.min, tzinfo=zone) if day else None


@transaction.atomic
def campaign_schedule_sync(*, campaign: Campaign) -> PeriodicTask | None:
    """Make the campaign's PeriodicTask and CrontabSchedule match it. Returns the task, or None when it has none.

    Recurring and scheduled/running: task present and enabled. Recurring and paused: present, disabled. Anything
    else (draft, cancelled, completed, not recurring): no task, no crontab.
    """
    wanted = campaign.schedule == Campaign.Schedule.RECURRING and campaign.status in (
        ACTIVE_STATUSES | {Campaign.Status.PAUSED}
    )
    task = PeriodicTask.objects.filter(name=task_name(campaign)).select_related("crontab").first()
    if not wanted:
        if task is not None:
            _delete_task(task)
        if campaign.periodic_task_id is not None:
            Campaign.objects.filter(pk=campaign.pk).update(periodic_task=None)
            campaign.periodic_task = None
        return None

    parse_cron(campaign)
    zone = schedule_zone(campaign)
    cron_fields = {
        "minute": campaign.cron_minute,
        "hour": campaign.cron_hour,
        "day_of_week": campaign.cron_day_of_week,
        "day_of_month": campaign.cron_day_of_month,
        "month_of_year": campaign.cron_month_of_year,
        "timezone": zone,
    }
    if task is not None and task.crontab is not None:
        schedule = task.crontab
        for name, value in cron_fields.items():
            setattr(schedule, name, value)
        schedule.save()
    else:
        schedule = CrontabSchedule.objects.create(**cron_fields)
    ends = _start_of(campaign.ends_on, campaign.zone)
    values = {
        "task": FIRE_TASK,
        "crontab": schedule,
        "interval": None,
        "clocked": None,
        "solar": None,
        "kwargs": json.dumps({"campaign_id": campaign.pk}),
        "enabled": campaign.status in ACTIVE_STATUSES,
        "start_time": _start_of(campaign.starts_on, campaign.zone),
        "expires": ends + timedelta(days=1) if ends else None,
        "description": _("Recurring runs of campaign “%(name)s” (managed by the campaign; do not edit).")
        % {"name": campaign.name},
    }
    if task is None:
        task = PeriodicTask.objects.create(name=task_name(campaign), **values)
    else:
        old_crontab_id = task.crontab_id
        for name, value in values.items():
            setattr(task, name, value)
        task.save()
        if old_crontab_id and old_crontab_id != schedule.pk:
            CrontabSchedule.objects.filter(pk=old_crontab_id, periodictask__isnull=True).delete()
    if campaign.periodic_task_id != task.pk:
        Campaign.objects.filter(pk=campaign.pk).update(periodic_task=task)
        campaign.periodic_task = task
    return task


def _delete_task(task: PeriodicTask) -> None:
    crontab_id = task.crontab_id
    task.delete()
    if crontab_id:
        # The campaign's own crontab: deleted with its task unless something else adopted it.
        CrontabSchedule.objects.filter(pk=crontab_id, periodictask__isnull=True).delete()


def campaign_schedule_remove(*, campaign_id: int) -> None:
    """Delete a (deleted) campaign's task and crontab."""
    task = PeriodicTask.objects.filter(name=f"campaign:{campaign_id}").first()
    if task is not None:
        _delete_task(task)


def next_run_at(campaign: Campaign, *, now: datetime | None = None) -> datetime | None:
    """When the campaign runs next (None when it will not), for the admin."""
    now = now or timezone.now()
    if campaign.status not in ACTIVE_STATUSES:
        return None
    if campaign.schedule == Campaign.Schedule.ONCE:
        return campaign.send_at if not campaign.runs.exists() else None
    if campaign.schedule != Campaign.Schedule.RECURRING:
        return None
    moment = now
    for _attempt in range(400):
        moment = cron_next_occurrence(campaign, after=moment)
        if moment is None:
            return None
        if campaign.ends_on and moment.astimezone(campaign.zone).date() > campaign.ends_on:
            return None
        if within_dates(campaign, moment=moment):
            return moment
    return None
