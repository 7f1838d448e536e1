"""Recurring campaigns: the PeriodicTask each owns, and the weekend promo firing at the right minute."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from campaigns.models import Campaign, Run, Send
from campaigns.services.campaigns import (
    campaign_cancel,
    campaign_delete,
    campaign_pause,
    campaign_resume,
    campaign_save,
    campaign_schedule,
    campaign_snapshot,
)
from campaigns.services.runs import campaign_fire_recurring
from campaigns.services.schedules import cron_last_occurrence, next_run_at
from campaigns.tasks import fire_recurring
from campaigns.tests.factories import CampaignFactory, SegmentFactory
from config.celery import app as celery_app
from crm.tests.factories import ContactFactory, TagFactory

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")


def weekend_promo(**overrides) -> Campaign:
    """The seed's example: every Sunday 20:00 Asia/Seoul, to everyone who viewed the promo page (a tag here)."""
    values = {
        "name": "주말 프로모션 마감 알림",
        "channel": "push",
        "segment": SegmentFactory(tag="viewed-weekend-promo"),
        "schedule": Campaign.Schedule.RECURRING,
        "cron_minute": "0",
        "cron_hour": "20",
        "cron_day_of_week": "sun",
        "time_zone": "Asia/Seoul",
    }
    values.update(overrides)
    return CampaignFactory(**values)


def orphans() -> tuple[int, int]:
    tasks = PeriodicTask.objects.filter(name__startswith="campaign:")
    crontabs = CrontabSchedule.objects.filter(periodictask__isnull=True)
    return tasks.exclude(campaign__isnull=False).count(), crontabs.count()


# --- Ownership ---------------------------------------------------------------------------------------------------


def test_scheduling_a_recurring_campaign_creates_its_task_with_the_crontab_in_its_time_zone():
    campaign = weekend_promo()
    assert campaign.periodic_task is None

    campaign_schedule(campaign=campaign)

    campaign.refresh_from_db()
    task = campaign.periodic_task
    assert task.name == f"campaign:{campaign.pk}"
    assert task.task == "campaigns.fire_recurring"
    assert json.loads(task.kwargs) == {"campaign_id": campaign.pk}
    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "20", "sun")
    assert str(task.crontab.timezone) == "Asia/Seoul"


def test_changing_the_schedule_changes_the_same_task_and_crontab():
    campaign = weekend_promo()
    campaign_schedule(campaign=campaign)
    campaign.refresh_from_db()
    task_id, crontab_id = campaign.periodic_task_id, campaign.periodic_task.crontab_id
    before = campaign_snapshot(campaign)

    campaign.cron_hour = "19"
    campaign.time_zone = "Asia/Tokyo"
    campaign.ends_on = date(2026, 12, 31)
    campaign_save(campaign=campaign, before=before)

    task = PeriodicTask.objects.get(pk=task_id)
    assert task.crontab_id == crontab_id
    assert task.crontab.hour == "19"
    assert str(task.crontab.timezone) == "Asia/Tokyo"
    assert task.expires == datetime(2027, 1, 1, tzinfo=ZoneInfo("Asia/Tokyo"))
    change = campaign.changes.filter(action="changed").get()
    assert change.diff["cron_hour"] == ["20", "19"]
    assert orphans() == (0, 0)


def test_pause_disables_resume_enables_cancel_deletes():
    campaign = weekend_promo()
    campaign_schedule(campaign=campaign)

    campaign_pause(campaign=campaign)
    assert not PeriodicTask.objects.get(name=f"campaign:{campaign.pk}").enabled
    campaign_resume(campaign=campaign)
    assert PeriodicTask.objects.get(name=f"campaign:{campaign.pk}").enabled
    campaign_cancel(campaign=campaign)

    assert not PeriodicTask.objects.filter(name=f"campaign:{campaign.pk}").exists()
    assert CrontabSchedule.objects.count() == 0
    assert [c.action for c in campaign.changes.order_by("id")] == ["scheduled", "paused", "resumed", "cancelled"]


@pytest.mark.parametrize("how", ["service", "queryset"])
def test_deleting_a_campaign_deletes_its_task_and_crontab(how):
    campaign = weekend_promo()
    campaign_schedule(campaign=campaign)
    other = weekend_promo(name="other")
    campaign_schedule(campaign=other)

    if how == "service":
        campaign_delete(campaign=campaign)
    else:
        Campaign.objects.filter(pk=campaign.pk).delete()  # e.g. the admin's bulk delete

    assert list(PeriodicTask.objects.values_list("name", flat=True)) == [f"campaign:{other.pk}"]
    assert CrontabSchedule.objects.count() == 1
    assert orphans() == (0, 0)


def test_a_campaign_that_stops_being_recurring_loses_its_task():
    campaign = weekend_promo()
    campaign_schedule(campaign=campaign)
    before = campaign_snapshot(campaign)
    campaign.schedule = Campaign.Schedule.ONCE
    campaign.send_at = datetime(2026, 12, 6, 20, tzinfo=SEOUL)
    campaign_save(campaign=campaign, before=before)

    assert PeriodicTask.objects.count() == 0
    assert CrontabSchedule.objects.count() == 0


def test_drafts_and_one_time_campaigns_have_no_task():
    campaign_schedule(
        campaign=CampaignFactory(schedule=Campaign.Schedule.ONCE, send_at=datetime(2030, 1, 1, tzinfo=SEOUL))
    )
    weekend_promo()  # draft

    assert PeriodicTask.objects.count() == 0


def test_an_invalid_cron_is_refused_naming_the_field():
    campaign = weekend_promo(cron_hour="25")
    with pytest.raises(ValidationError) as info:
        campaign_schedule(campaign=campaign)
    assert "25" in str(info.value)
    assert PeriodicTask.objects.count() == 0


# --- Firing at the right minute -------------------------------------------------------------------------------------

SUNDAY_8PM = datetime(2026, 12, 6, 20, 0, tzinfo=SEOUL)  # a Sunday


def beat_entry(campaign: Campaign, *, last_run_at: datetime) -> ModelEntry:
    task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
    task.last_run_at = last_run_at
    task.save()
    return ModelEntry(task, app=celery_app)


def test_the_weekend_promo_is_due_at_sunday_20_00_seoul_and_not_a_minute_before():
    campaign = weekend_promo()
    campaign_schedule(campaign=campaign)
    campaign.refresh_from_db()
    last_week = SUNDAY_8PM - timedelta(days=7)

    with time_machine.travel(SUNDAY_8PM - timedelta(seconds=30), tick=False):
        due, _next = beat_entry(campaign, last_run_at=last_week).is_due()
        assert not due
    with time_machine.travel(SUNDAY_8PM + timedelta(seconds=1), tick=False):
        due, next_check = beat_entry(campaign, last_run_at=last_week).is_due()
        assert due
    with time_machine.travel(SUNDAY_8PM + timedelta(minutes=1), tick=False):
        # Having run at 20:00, it is due again a week later.
        due, next_check = beat_entry(campaign, last_run_at=SUNDAY_8PM).is_due()
        assert not due
        assert abs(next_check - timedelta(days=7, minutes=-1).total_seconds()) < 2
    # Saturday 20:00 is not Sunday.
    with time_machine.travel(SUNDAY_8PM - timedelta(days=1, seconds=-1), tick=False):
        due, _next = beat_entry(campaign, last_run_at=last_week).is_due()
        assert not due


def test_the_fired_task_makes_one_run_for_the_occurrence_even_when_delivered_twice(django_capture_on_commit_callbacks):
    tag = TagFactory(name="viewed-weekend-promo")
    members = [ContactFactory(tags=[tag]) for _ in range(3)]
    ContactFactory()  # did not view the promo
    campaign = weekend_promo()
    campaign.variants.update(body="#{고객명|고객}님, 주말 한정 할인이 4시간 뒤 종료돼요!")
    campaign_schedule(campaign=campaign)

    with time_machine.travel(SUNDAY_8PM + timedelta(seconds=3), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            fire_recurring.delay(campaign.pk)
        with django_capture_on_commit_callbacks(execute=True):
            fire_recurring.delay(campaign.pk)  # redelivered, or a second beat process
    late = time_machine.travel(SUNDAY_8PM + timedelta(minutes=2), tick=False)
    with late, django_capture_on_commit_callbacks(execute=True):
        fire_recurring.delay(campaign.pk)  # late: still the 20:00 occurrence

    run = Run.objects.get()
    assert run.scheduled_for == SUNDAY_8PM
    assert run.audience_count == 3
    assert set(Send.objects.values_list("contact_id", flat=True)) == {c.pk for c in members}


def test_each_week_gets_its_own_run():
    campaign = weekend_promo()
    campaign_schedule(campaign=campaign)
    for week in range(3):
        campaign_fire_recurring(campaign_id=campaign.pk, now=SUNDAY_8PM + timedelta(days=7 * week, seconds=5))

    assert [r.scheduled_for for r in Run.objects.order_by("scheduled_for")] == [
        SUNDAY_8PM + timedelta(days=7 * week) for week in range(3)
    ]


def test_runs_only_between_the_start_and_end_dates():
    campaign = weekend_promo(starts_on=date(2026, 12, 7), ends_on=date(2026, 12, 20))
    campaign_schedule(campaign=campaign)
    for week in range(4):  # Dec 6, 13, 20, 27
        campaign_fire_recurring(campaign_id=campaign.pk, now=SUNDAY_8PM + timedelta(days=7 * week))

    assert sorted(r.scheduled_for.date() for r in Run.objects.all()) == [date(2026, 12, 13), date(2026, 12, 20)]


def test_a_paused_campaign_fires_nothing():
    campaign = weekend_promo()
    campaign_schedule(campaign=campaign)
    campaign_pause(campaign=campaign)

    assert campaign_fire_recurring(campaign_id=campaign.pk, now=SUNDAY_8PM) is None
    assert not Run.objects.exists()


def test_last_and_next_occurrence():
    campaign = weekend_promo()
    campaign.status = Campaign.Status.SCHEDULED
    assert cron_last_occurrence(campaign, now=SUNDAY_8PM + timedelta(hours=5)) == SUNDAY_8PM
    assert cron_last_occurrence(campaign, now=SUNDAY_8PM - timedelta(minutes=1)) is None  # last week is > 2 days ago
    assert next_run_at(campaign, now=SUNDAY_8PM) == SUNDAY_8PM + timedelta(days=7)
    assert next_run_at(campaign, now=SUNDAY_8PM - timedelta(hours=1)) == SUNDAY_8PM


def test_per_contact_local_time_fires_in_the_earliest_zone_and_sends_at_each_contacts_20_00():
    seoul = ContactFactory(time_zone="")
    london = ContactFactory(time_zone="Europe/London")
    campaign = weekend_promo(local_time=True, segment=SegmentFactory())
    campaign_schedule(campaign=campaign)
    assert str(PeriodicTask.objects.get().crontab.timezone) == "Etc/GMT-14"

    fire = datetime(2026, 12, 6, 20, tzinfo=ZoneInfo("Etc/GMT-14"))
    run = campaign_fire_recurring(campaign_id=campaign.pk, now=fire)

    due = dict(run.sends.values_list("contact_id", "due_at"))
    assert due[seoul.pk] == SUNDAY_8PM
    assert due[london.pk] == datetime(2026, 12, 6, 20, tzinfo=ZoneInfo("Europe/London"))
    assert run.sends.filter(status=Send.Status.QUEUED).count() == 2
