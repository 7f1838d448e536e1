"""Campaign figures of the reports (campaigns.reports), checked against hand-counted sends."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from campaigns.models import Campaign, DeliveryStatus, Run, Send
from campaigns.reports import campaign_runs, daily_rates, next_runs, runs_between, totals
from campaigns.services.attribution import conversions_attribute
from campaigns.services.run_figures import runs_store_figures
from campaigns.tests.factories import CampaignFactory, SendFactory
from crm.tests.factories import ContactFactory, EventFactory

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
T0 = datetime(2026, 3, 1, 20, 0, tzinfo=SEOUL)


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Report figures are cached; ids repeat between tests."""
    from django.core.cache import cache

    cache.clear()


def sent(run, *, at, **fields):
    return SendFactory(
        campaign=run.campaign, run=run, status=Send.Status.SENT, sent_at=at, due_at=at, created_at=at, **fields
    )


@pytest.fixture
def recurring():
    return CampaignFactory(
        schedule=Campaign.Schedule.RECURRING, goal_event="Order Completed", attribution_window_hours=72
    )


def test_campaign_runs_counts_each_run_side_by_side(recurring):
    first = Run.objects.create(campaign=recurring, scheduled_for=T0, audience_count=5, status=Run.Status.COMPLETED)
    second = Run.objects.create(
        campaign=recurring, scheduled_for=T0 + timedelta(days=7), audience_count=3, status=Run.Status.COMPLETED
    )
    a, b, c, d = (ContactFactory() for _ in range(4))
    sent(first, at=T0, contact=a, delivered_at=T0, opened_at=T0, clicked_at=T0)
    sent(first, at=T0, contact=b, delivered_at=T0, opened_at=T0, delivery_status=DeliveryStatus.UNSUBSCRIBED)
    sent(first, at=T0, contact=c)
    sent(first, at=T0, contact=d, is_test=True, clicked_at=T0)  # a test send never counts
    SendFactory(campaign=recurring, run=first, status=Send.Status.SKIPPED, due_at=T0)
    EventFactory(contact=a, name="Order Completed", occurred_at=T0 + timedelta(hours=5))  # converts
    EventFactory(contact=b, name="Order Completed", occurred_at=T0 + timedelta(hours=73))  # too late
    EventFactory(contact=c, name="Product Viewed", occurred_at=T0 + timedelta(hours=1))  # not the goal
    later = T0 + timedelta(days=7)
    sent(second, at=later, contact=a, clicked_at=later)
    sent(second, at=later, contact=b)
    EventFactory(contact=b, name="Order Completed", occurred_at=later + timedelta(hours=1))
    conversions_attribute(now=T0 + timedelta(days=30))

    rows = campaign_runs(recurring)

    assert [row["run"] for row in rows] == ["2026-03-01 20:00", "2026-03-08 20:00"]  # oldest first
    one, two = rows
    assert (one["audience"], one["sent"], one["delivered"], one["opened"], one["clicked"]) == (5, 3, 2, 2, 1)
    assert (one["converted"], one["unsubscribed"]) == (1, 1)
    assert one["clicked_rate"] == pytest.approx(1 / 3)
    assert one["converted_rate"] == pytest.approx(1 / 3)
    assert (two["sent"], two["clicked"], two["converted"]) == (2, 1, 1)
    assert two["delivered_rate"] == 0.0


def test_campaign_without_goal_converts_nothing_and_a_run_without_sends_has_no_rates():
    campaign = CampaignFactory(schedule=Campaign.Schedule.RECURRING)
    run = Run.objects.create(campaign=campaign, scheduled_for=T0)
    [row] = campaign_runs(campaign)
    assert (row["sent"], row["converted"], row["clicked_rate"]) == (0, 0, None)
    sent(run, at=T0)
    EventFactory(contact=run.sends.get().contact, name="Order Completed", occurred_at=T0 + timedelta(hours=1))
    [row] = campaign_runs(campaign)
    assert (row["sent"], row["converted"]) == (1, 0)


def test_daily_rates_bucket_by_local_day_with_every_day_present(recurring, settings):
    settings.TIME_ZONE = "Asia/Seoul"
    run = Run.objects.create(campaign=recurring, scheduled_for=T0)
    other = CampaignFactory(goal_event="Signed Up", attribution_window_hours=1)
    other_run = Run.objects.create(campaign=other, scheduled_for=T0)
    # 2026-03-01 23:30 Seoul is 14:30 UTC: still March 1st in the workspace.
    late = datetime(2026, 3, 1, 23, 30, tzinfo=SEOUL)
    x = sent(run, at=late, opened_at=late)
    sent(run, at=late + timedelta(hours=1))  # March 2nd
    y = sent(other_run, at=late, clicked_at=late)
    EventFactory(contact=x.contact, name="Order Completed", occurred_at=late + timedelta(hours=2))
    EventFactory(contact=y.contact, name="Signed Up", occurred_at=late + timedelta(minutes=30))
    EventFactory(contact=y.contact, name="Order Completed", occurred_at=late + timedelta(minutes=30))
    conversions_attribute(now=late + timedelta(days=30))

    rows = daily_rates(since=datetime(2026, 2, 28, tzinfo=SEOUL), until=datetime(2026, 3, 4, tzinfo=SEOUL))

    assert [row["day"].isoformat() for row in rows] == ["2026-02-28", "2026-03-01", "2026-03-02", "2026-03-03"]
    assert [row["sent"] for row in rows] == [0, 2, 1, 0]
    march1 = rows[1]
    assert (march1["opened"], march1["clicked"], march1["converted"]) == (1, 1, 2)  # each by its own goal
    assert march1["converted_rate"] == 1.0
    assert rows[0]["opened_rate"] is None
    total = totals(rows)
    assert (total["sent"], total["converted"]) == (3, 2)
    assert total["converted_rate"] == pytest.approx(2 / 3)


def test_runs_between_and_next_runs(time_machine):
    time_machine.move_to(T0)
    recurring = CampaignFactory(
        schedule=Campaign.Schedule.RECURRING,
        status=Campaign.Status.SCHEDULED,
        cron_minute="0",
        cron_hour="20",
        cron_day_of_week="sun",
        time_zone="Asia/Seoul",
    )
    once = CampaignFactory(
        schedule=Campaign.Schedule.ONCE, status=Campaign.Status.SCHEDULED, send_at=T0 + timedelta(days=1)
    )
    CampaignFactory(schedule=Campaign.Schedule.ONCE, status=Campaign.Status.DRAFT, send_at=T0)  # not scheduled
    run = Run.objects.create(campaign=recurring, scheduled_for=T0 - timedelta(hours=1), audience_count=2)
    sent(run, at=T0)
    SendFactory(campaign=recurring, run=run, status=Send.Status.SKIPPED, due_at=T0)

    [today] = runs_between(since=T0 - timedelta(hours=20), until=T0 + timedelta(hours=4))
    assert (today["campaign"], today["sent"], today["skipped"], today["audience"]) == (recurring.name, 1, 1, 2)

    upcoming = next_runs(now=T0 + timedelta(minutes=1))
    assert [row["campaign"] for row in upcoming] == [once.name, recurring.name]
    assert upcoming[1]["next_run_at"] == T0 + timedelta(days=7)


def test_a_settled_runs_stored_figures_are_shown_and_an_open_ones_counted_again(recurring, time_machine):
    time_machine.move_to(T0 + timedelta(days=10), tick=False)
    settled = Run.objects.create(
        campaign=recurring, scheduled_for=T0, status=Run.Status.COMPLETED, finished_at=T0 + timedelta(minutes=5)
    )
    recent = Run.objects.create(
        campaign=recurring,
        scheduled_for=T0 + timedelta(days=9),
        status=Run.Status.COMPLETED,
        finished_at=T0 + timedelta(days=9),
    )
    sent(settled, at=T0)
    sent(recent, at=T0 + timedelta(days=9))
    assert runs_store_figures() == 1  # the settled one (72 h window + 1 day); the recent one is still open
    assert [row["sent"] for row in campaign_runs(recurring)] == [1, 1]
    # A send that changes after the run settled is not counted until the daily refresh of its figures.
    sent(settled, at=T0, clicked_at=T0 + timedelta(days=9))
    sent(recent, at=T0 + timedelta(days=9))
    assert [row["sent"] for row in campaign_runs(recurring)] == [1, 2]
    time_machine.move_to(T0 + timedelta(days=11, hours=1), tick=False)
    assert runs_store_figures() == 1
    assert [row["sent"] for row in campaign_runs(recurring)] == [2, 2]
