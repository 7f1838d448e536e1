"""Clocks and time zones (issue #12): DST in a contact's zone, a contact in UTC+14, a recurring campaign across the
year boundary, and the server's clock in UTC while the workspace is in Asia/Seoul. Every moment is set with
time-machine; every expectation is an instant written in the zone a person would state it in."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from campaigns.models import Campaign, Run, Send
from campaigns.services.campaigns import campaign_schedule
from campaigns.services.runs import campaign_fire_recurring, campaigns_tick
from campaigns.services.schedules import cron_last_occurrence, next_run_at
from campaigns.services.sending import quiet_until
from campaigns.tests.factories import CampaignFactory, SegmentFactory
from campaigns.tests.test_pipeline import people, start
from config.celery import app as celery_app

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
NEW_YORK = ZoneInfo("America/New_York")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # UTC+14, the first place a day begins
EARLIEST = ZoneInfo("Etc/GMT-14")


def daily(**overrides) -> Campaign:
    values = {
        "schedule": Campaign.Schedule.RECURRING,
        "cron_minute": "0",
        "cron_hour": "9",
        "time_zone": "Asia/Seoul",
        "segment": SegmentFactory(),
    }
    values.update(overrides)
    return CampaignFactory(**values)


def due_times(run: Run) -> dict[int, datetime]:
    return dict(run.sends.values_list("contact_id", "due_at"))


# --- DST in the contact's zone -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "utc_hour"),
    [
        (datetime(2026, 3, 7), 14),  # Saturday, EST (UTC-5)
        (datetime(2026, 3, 8), 13),  # Sunday, clocks sprang forward at 02:00: EDT (UTC-4)
        (datetime(2026, 10, 31), 13),  # Saturday, EDT
        (datetime(2026, 11, 1), 14),  # Sunday, clocks fell back at 02:00: EST again
    ],
)
def test_local_time_sends_at_nine_on_the_contacts_wall_clock_through_dst(day, utc_hour):
    new_yorker = people(1, "email", time_zone="America/New_York")[0]
    campaign = daily(local_time=True)
    campaign_schedule(campaign=campaign)

    fire = datetime(day.year, day.month, day.day, 9, tzinfo=EARLIEST)  # the task fires in the earliest zone
    run = campaign_fire_recurring(campaign_id=campaign.pk, now=fire)

    due = due_times(run)[new_yorker.pk]
    assert due == datetime(day.year, day.month, day.day, 9, tzinfo=NEW_YORK)
    assert due.astimezone(UTC).hour == utc_hour
    assert due.astimezone(NEW_YORK).hour == 9


def test_quiet_hours_end_at_eight_local_on_the_night_the_clocks_spring_forward(django_capture_on_commit_callbacks):
    new_yorker = people(1, "email", "ads", time_zone="America/New_York")[0]
    night = datetime(2026, 3, 7, 21, 30, tzinfo=NEW_YORK)  # EST; the clocks jump at 02:00
    run = start(CampaignFactory(purpose="advertising"), now=night, capture=django_capture_on_commit_callbacks)

    send = run.sends.get(contact=new_yorker)
    assert send.status == Send.Status.HELD
    assert send.due_at == datetime(2026, 3, 8, 8, tzinfo=NEW_YORK)
    assert send.due_at - night == timedelta(hours=9, minutes=30)  # one wall-clock hour shorter than usual
    assert send.due_at.astimezone(UTC) == datetime(2026, 3, 8, 12, tzinfo=UTC)

    with (
        time_machine.travel(send.due_at - timedelta(minutes=1), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        campaigns_tick(now=send.due_at - timedelta(minutes=1))
    assert run.sends.get(contact=new_yorker).status == Send.Status.HELD
    with time_machine.travel(send.due_at, tick=False), django_capture_on_commit_callbacks(execute=True):
        campaigns_tick(now=send.due_at)
    sent = run.sends.get(contact=new_yorker)
    assert sent.status == Send.Status.SENT
    assert sent.sent_at.astimezone(NEW_YORK).hour == 8


def test_quiet_hours_across_the_fall_back_night_last_until_eight_est():
    # 01:30 happens twice on 2026-11-01 in New York; both are quiet and both end at 08:00 EST (13:00 UTC).
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
    for moment in (first, second):
        assert quiet_until(now=moment, zone=NEW_YORK, hours=(21, 8)) == datetime(2026, 11, 1, 13, tzinfo=UTC)
    # 08:00 EST is not quiet any more.
    assert quiet_until(now=datetime(2026, 11, 1, 13, tzinfo=UTC), zone=NEW_YORK, hours=(21, 8)) is None


# --- UTC+14 --------------------------------------------------------------------------------------------------------


def test_a_contact_in_utc_plus_14_is_held_by_their_own_night_not_seouls(django_capture_on_commit_callbacks):
    seoul_noon = datetime(2026, 12, 7, 12, tzinfo=SEOUL)  # 17:00 in Kiritimati: not quiet
    seoul_evening = datetime(2026, 12, 7, 17, tzinfo=SEOUL)  # 22:00 in Kiritimati: quiet

    kiribati = people(1, "email", "ads", time_zone="Pacific/Kiritimati")[0]
    run = start(CampaignFactory(purpose="advertising"), now=seoul_noon, capture=django_capture_on_commit_callbacks)
    assert run.sends.get(contact=kiribati).status == Send.Status.SENT

    late = start(CampaignFactory(purpose="advertising"), now=seoul_evening, capture=django_capture_on_commit_callbacks)
    held = late.sends.get(contact=kiribati)
    assert held.status == Send.Status.HELD
    # 08:00 on Tuesday Dec 8 in Kiritimati is still Monday Dec 7 in UTC (18:00) and Tuesday 03:00 in Seoul.
    assert held.due_at == datetime(2026, 12, 8, 8, tzinfo=KIRITIMATI)
    assert held.due_at.astimezone(UTC) == datetime(2026, 12, 7, 18, tzinfo=UTC)


def test_local_time_for_utc_plus_14_is_due_the_moment_the_task_fires(django_capture_on_commit_callbacks):
    kiribati = people(1, "email", time_zone="Pacific/Kiritimati")[0]
    seoul = people(1, "email", time_zone="")[0]
    campaign = daily(local_time=True)
    campaign_schedule(campaign=campaign)
    fire = datetime(2026, 12, 7, 9, tzinfo=EARLIEST)

    with time_machine.travel(fire, tick=False), django_capture_on_commit_callbacks(execute=True):
        run = campaign_fire_recurring(campaign_id=campaign.pk, now=fire)

    due = due_times(run)
    assert due[kiribati.pk] == fire  # the first wall clock to reach 09:00: sent at once, not a day late
    assert due[seoul.pk] == datetime(2026, 12, 7, 9, tzinfo=SEOUL)
    assert run.sends.get(contact=kiribati).status == Send.Status.SENT
    assert run.sends.get(contact=seoul).status == Send.Status.QUEUED  # five hours later, by the tick


# --- The year boundary -----------------------------------------------------------------------------------------------


def test_a_daily_campaign_runs_on_december_31_and_january_1_once_each():
    people(2, "email")
    campaign = daily()
    campaign_schedule(campaign=campaign)
    eve = datetime(2026, 12, 31, 9, tzinfo=SEOUL)

    for moment in (eve, eve + timedelta(seconds=40), eve + timedelta(days=1), eve + timedelta(days=1, minutes=3)):
        campaign_fire_recurring(campaign_id=campaign.pk, now=moment)

    runs = list(Run.objects.order_by("scheduled_for").values_list("scheduled_for", flat=True))
    assert runs == [eve, datetime(2027, 1, 1, 9, tzinfo=SEOUL)]
    assert Send.objects.count() == 4
    campaign.refresh_from_db()
    assert next_run_at(campaign, now=eve + timedelta(hours=1)) == datetime(2027, 1, 1, 9, tzinfo=SEOUL)


def test_a_new_years_midnight_cron_fires_in_the_workspace_zone_not_utc():
    campaign = daily(cron_hour="0", cron_day_of_month="1", cron_month_of_year="1")
    campaign.status = Campaign.Status.SCHEDULED
    midnight = datetime(2027, 1, 1, 0, tzinfo=SEOUL)  # still Dec 31 15:00 in UTC

    assert next_run_at(campaign, now=datetime(2026, 12, 31, 14, tzinfo=UTC)) == midnight
    assert cron_last_occurrence(campaign, now=midnight + timedelta(seconds=30)) == midnight
    assert cron_last_occurrence(campaign, now=midnight - timedelta(minutes=1)) is None
    # After it: next year's.
    assert next_run_at(campaign, now=midnight + timedelta(minutes=1)) is None or next_run_at(
        campaign, now=midnight + timedelta(minutes=1)
    ) == datetime(2028, 1, 1, 0, tzinfo=SEOUL)


def test_the_day_31_cron_after_december_31_comes_back_on_january_31():
    campaign = daily(cron_day_of_month="31")
    campaign.status = Campaign.Status.SCHEDULED
    assert next_run_at(campaign, now=datetime(2026, 12, 31, 10, tzinfo=SEOUL)) == datetime(2027, 1, 31, 9, tzinfo=SEOUL)


# --- Server clock in UTC, workspace in Asia/Seoul -----------------------------------------------------------------


@pytest.fixture
def server_in_utc(settings):
    """The process runs with TZ=UTC (a container's default) while the workspace time zone is Asia/Seoul."""
    settings.TIME_ZONE = "Asia/Seoul"  # first: Django's setting_changed handler sets TZ to it
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if previous is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = previous
    time.tzset()


def test_server_in_utc_beat_fires_the_seoul_schedule_at_seoul_time(server_in_utc):
    assert time.localtime(0).tm_zone == "UTC"
    campaign = daily(cron_hour="20", cron_day_of_week="sun")
    campaign_schedule(campaign=campaign)
    task = PeriodicTask.objects.get(pk=Campaign.objects.get(pk=campaign.pk).periodic_task_id)
    sunday_8pm = datetime(2026, 12, 6, 20, tzinfo=SEOUL)  # 11:00 UTC
    task.last_run_at = sunday_8pm - timedelta(days=7)
    task.save()

    with time_machine.travel(datetime(2026, 12, 6, 11, 0, 1, tzinfo=UTC), tick=False):
        due, _next = ModelEntry(task, app=celery_app).is_due()
        assert due
        run = campaign_fire_recurring(campaign_id=campaign.pk)
    with time_machine.travel(datetime(2026, 12, 6, 10, 59, 30, tzinfo=UTC), tick=False):
        due, _next = ModelEntry(task, app=celery_app).is_due()
        assert not due
    assert run.scheduled_for == sunday_8pm


def test_server_in_utc_quiet_hours_follow_the_workspace_zone(server_in_utc, django_capture_on_commit_callbacks):
    local = people(1, "email", "ads", time_zone="")[0]  # no zone of their own: the workspace's
    utc_afternoon = datetime(2026, 12, 7, 13, 30, tzinfo=UTC)  # 22:30 in Seoul

    run = start(CampaignFactory(purpose="advertising"), now=utc_afternoon, capture=django_capture_on_commit_callbacks)

    send = run.sends.get(contact=local)
    assert send.status == Send.Status.HELD
    assert send.due_at == datetime(2026, 12, 8, 8, tzinfo=SEOUL)
    assert send.due_at.astimezone(UTC) == datetime(2026, 12, 7, 23, tzinfo=UTC)
