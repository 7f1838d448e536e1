"""A run's figures, the one source of every report and of the automatic winner: counted per variant and for the
holdout against hand-computed numbers, conversions as attributed (last touch, once), settled runs stored once and
refreshed daily for 30 days."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError

from campaigns.models import AttributionCursor, Conversion, DeliveryStatus, Run, Send, Variant
from campaigns.reports import campaign_runs, daily_rates
from campaigns.selectors import HOLDOUT, UNASSIGNED, run_figures, run_totals, runs_figures, variant_goal_metrics
from campaigns.services.attribution import conversions_attribute, conversions_rebuild, run_conversions_attribute
from campaigns.services.run_figures import runs_due_for_figures, runs_store_figures
from campaigns.tests.factories import CampaignFactory, SendFactory, VariantFactory
from crm.tests.factories import ContactFactory, EventFactory

pytestmark = pytest.mark.django_db
T = datetime(2026, 12, 6, 20, 0, tzinfo=ZoneInfo("Asia/Seoul"))
GOAL = "Order Completed"


@pytest.fixture
def setup():
    """A run of 12 sends: variant A (6: 5 sent, 1 skipped), B (4: 3 sent, 1 failed), 2 holdout members."""
    campaign = CampaignFactory(goal_event=GOAL, attribution_window_hours=24, holdout_percent=10)
    a = campaign.variants.get()
    b = VariantFactory(campaign=campaign, name="B")
    run = Run.objects.create(
        campaign=campaign, scheduled_for=T, started_at=T, status=Run.Status.COMPLETED, finished_at=T, audience_count=12
    )
    people = ContactFactory.create_batch(12)

    def send(contact, variant, status=Send.Status.SENT, **kwargs):
        sent_at = T if status == Send.Status.SENT else None
        return SendFactory(
            campaign=campaign, run=run, contact=contact, variant=variant, status=status, sent_at=sent_at, **kwargs
        )

    a_sends = [
        send(people[0], a, delivered_at=T, opened_at=T, clicked_at=T),
        send(people[1], a, delivery_status=DeliveryStatus.DELIVERED, opened_at=T),
        send(people[2], a, delivered_at=T),
        send(people[3], a, delivery_status=DeliveryStatus.UNSUBSCRIBED),
        send(people[4], a),
        send(people[5], a, status=Send.Status.SKIPPED, skip_reason="no_consent"),
    ]
    b_sends = [
        send(people[6], b, delivered_at=T, clicked_at=T),
        send(people[7], b, delivered_at=T),
        send(people[8], b),
        send(people[9], b, status=Send.Status.FAILED),
    ]
    for contact in people[10:]:
        SendFactory(
            campaign=campaign,
            run=run,
            contact=contact,
            is_holdout=True,
            status=Send.Status.SKIPPED,
            skip_reason="holdout",
        )
    SendFactory(campaign=campaign, contact=people[0], variant=a, is_test=True, status=Send.Status.SENT, sent_at=T)

    def order(contact, hours: float, revenue: int | None = None):
        properties = {"revenue": revenue} if revenue is not None else {}
        return EventFactory(contact=contact, name=GOAL, occurred_at=T + timedelta(hours=hours), properties=properties)

    order(people[0], 1, 30000)  # A converts, 30,000
    order(people[0], 2, 12000)  # A again: the same send, 42,000 in all
    order(people[1], 30, 99000)  # after the window: nothing
    order(people[6], 5, 50000)  # B converts
    order(people[10], 3, 7000)  # a holdout member converts
    conversions_attribute(now=T + timedelta(days=3))
    return campaign, run, a_sends, b_sends


def test_figures_per_variant_and_holdout_against_hand_counted_numbers(setup):
    campaign, run, _a, _b = setup

    figures = runs_figures([run.pk])[run.pk]

    assert figures["A"] == {
        "audience": 6,
        "sent": 5,
        "skipped": 1,
        "failed": 0,
        "delivered": 3,  # delivered_at, or a "delivered" receipt
        "opened": 2,
        "clicked": 1,
        "unsubscribed": 1,
        "converted": 1,  # one send, two orders
        "revenue": Decimal("42000"),
    }
    assert figures["B"] == {
        "audience": 4,
        "sent": 3,
        "skipped": 0,
        "failed": 1,
        "delivered": 2,
        "opened": 0,
        "clicked": 1,
        "unsubscribed": 0,
        "converted": 1,
        "revenue": Decimal("50000"),
    }
    assert figures[HOLDOUT] == {"members": 2, "converted": 1, "revenue": Decimal("7000")}
    totals = run_totals(figures)
    assert (totals["sent"], totals["converted"], totals["revenue"]) == (8, 2, Decimal("92000"))

    metrics = variant_goal_metrics(run=run)  # the automatic winner sees the report's numbers
    b = campaign.variants.get(name="B")
    assert metrics[b.pk]["conversions"] == 1
    assert metrics[b.pk]["conversion_rate"] == pytest.approx(1 / 3)
    assert metrics[b.pk]["revenue_per_send"] == pytest.approx(50000 / 3)


def test_a_conversion_counts_for_the_last_touch_only(setup):
    """The same contact got a later send of another campaign with the same goal: the order is that send's."""
    _campaign, run, a_sends, _b = setup
    other = CampaignFactory(goal_event=GOAL, attribution_window_hours=24)
    contact = a_sends[2].contact
    SendFactory(
        campaign=other,
        contact=contact,
        variant=other.variants.get(),
        status=Send.Status.SENT,
        sent_at=T + timedelta(hours=2),
    )
    EventFactory(contact=contact, name=GOAL, occurred_at=T + timedelta(hours=4), properties={"total": 5000})
    conversions_attribute(now=T + timedelta(days=3))

    assert runs_figures([run.pk])[run.pk]["A"]["converted"] == 1  # unchanged: the later send took it
    assert Conversion.objects.get(campaign=other).revenue == 5000


def test_the_runs_chart_and_the_daily_rates_show_the_same_figures(setup):
    campaign, _run, _a, _b = setup
    with time_machine.travel(T + timedelta(days=3), tick=False):
        (row,) = campaign_runs(campaign)
        days = daily_rates(since=T - timedelta(days=1), until=T + timedelta(days=1))
    assert (row["sent"], row["skipped"], row["failed"], row["converted"], row["revenue"]) == (8, 1, 1, 2, 92000)
    assert row["clicked_rate"] == pytest.approx(2 / 8)
    assert sum(day["sent"] for day in days) == 8
    assert sum(day["converted"] for day in days) == 2
    assert sum(day["revenue"] for day in days) == Decimal("92000")


def test_sends_waiting_for_the_winner_count_in_the_run_not_in_a_variant(setup):
    campaign, run, _a, _b = setup
    SendFactory(campaign=campaign, run=run, status=Send.Status.WAITING)
    figures = runs_figures([run.pk])[run.pk]
    assert figures[UNASSIGNED]["audience"] == 1
    assert run_totals(figures)["audience"] == 11


def test_a_settled_run_is_stored_once_then_refreshed_daily_for_30_days(setup):
    _campaign, run, a_sends, _b = setup
    settles = T + timedelta(hours=24) + timedelta(days=1)  # window + a day

    assert runs_store_figures(now=settles - timedelta(minutes=1)) == 0  # not settled yet
    assert runs_store_figures(now=settles) == 1
    run.refresh_from_db()
    assert run.figures_at == settles
    assert run.figures["A"]["sent"] == 5
    assert Decimal(run.figures["A"]["revenue"]) == 42000
    assert runs_store_figures(now=settles + timedelta(hours=1)) == 0  # stored: not counted again within the day

    # A late click after the figures were stored: the report keeps the stored figures until the daily refresh.
    Send.objects.filter(pk=a_sends[4].pk).update(clicked_at=settles)
    assert run_figures(run, now=settles + timedelta(hours=2))["A"]["clicked"] == 1
    assert runs_store_figures(now=settles + timedelta(days=1)) == 1
    run.refresh_from_db()
    assert run_figures(run, now=settles + timedelta(days=1))["A"]["clicked"] == 2
    assert run_figures(run, now=settles + timedelta(days=1))["A"]["revenue"] == Decimal("42000")

    # Thirty days after the run, its figures stay as they are.
    assert not runs_due_for_figures(now=T + timedelta(days=31)).exists()


def test_an_open_run_is_counted_at_every_call_and_a_long_window_settles_later(setup):
    campaign, run, a_sends, _b = setup
    campaign.attribution_window_hours = 24 * 7
    campaign.save()
    assert runs_store_figures(now=T + timedelta(days=3)) == 0  # a week's window: still open
    Send.objects.filter(pk=a_sends[4].pk).update(opened_at=T + timedelta(days=3))
    assert run_figures(run, now=T + timedelta(days=3))["A"]["opened"] == 3
    assert runs_store_figures(now=T + timedelta(days=8)) == 1


def test_counting_conversions_again_drops_the_stored_figures(setup):
    """The campaign's window narrowed after its figures were stored: the report shows the new rule's count."""
    campaign, run, _a, _b = setup
    settles = T + timedelta(days=2)
    assert runs_store_figures(now=settles) == 1
    campaign.attribution_window_hours = 2  # A's first order (1 h) still counts, B's (5 h) no longer
    campaign.save()
    conversions_rebuild(campaign=campaign)
    run.refresh_from_db()
    assert run.figures_at is None
    figures = run_figures(run, now=settles)
    assert (figures["A"]["converted"], figures["B"]["converted"]) == (1, 0)


def test_a_variant_named_holdout_is_refused_and_an_old_one_counted_apart(setup):
    campaign, run, _a, _b_sends = setup
    b = campaign.variants.get(name="B")
    b.name = "Holdout"
    with pytest.raises(ValidationError):
        b.full_clean()
    Variant.objects.filter(pk=b.pk).update(name="holdout")  # from before the name was reserved
    figures = runs_figures([run.pk])[run.pk]
    assert figures[f"holdout (#{b.pk})"]["sent"] == 3
    assert figures[HOLDOUT]["members"] == 2
    assert run_totals(figures)["sent"] == 8


def test_a_run_cancelled_before_its_end_was_recorded_settles_from_its_start(setup):
    _campaign, run, _a, _b = setup
    Run.objects.filter(pk=run.pk).update(status=Run.Status.CANCELLED, finished_at=None)
    assert runs_store_figures(now=T + timedelta(days=2)) == 1


def test_the_winner_attributes_its_runs_pending_goal_events_only(setup):
    """Before deciding, the goal events of the run's own contacts are attributed; the rest waits for beat's pass."""
    _campaign, run, a_sends, _b = setup
    cursor = AttributionCursor.objects.get()
    late = EventFactory(contact=a_sends[2].contact, name=GOAL, occurred_at=T + timedelta(hours=6))
    stranger = EventFactory(name=GOAL, occurred_at=T + timedelta(hours=6))
    assert run_conversions_attribute(run=run, now=T + timedelta(days=3)) == 1
    assert Conversion.objects.filter(event=late).exists()
    assert not Conversion.objects.filter(event=stranger).exists()
    assert AttributionCursor.objects.get().last_event_id == cursor.last_event_id  # the beat pass's mark untouched
    assert runs_figures([run.pk])[run.pk]["A"]["converted"] == 2
