"""A run's conversions for its report: per variant from each send, for the holdout from the run's start."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from campaigns.models import Send
from campaigns.selectors import run_conversions
from campaigns.services.campaigns import campaign_schedule
from campaigns.services.runs import run_create, run_start
from campaigns.tests.factories import CampaignFactory
from crm.tests.factories import ConsentFactory, ContactFactory, EventFactory

pytestmark = pytest.mark.django_db
SUNDAY = datetime(2026, 12, 6, 20, 0, tzinfo=ZoneInfo("Asia/Seoul"))


def test_conversions_per_variant_and_for_the_holdout_within_the_window(django_capture_on_commit_callbacks):
    contacts = ContactFactory.create_batch(60)
    for contact in contacts:
        ConsentFactory(contact=contact, purpose="email")
    campaign = CampaignFactory(goal_event="Order Completed", attribution_window_hours=24, holdout_percent=20)
    with time_machine.travel(SUNDAY, tick=False), django_capture_on_commit_callbacks(execute=True):
        campaign_schedule(campaign=campaign)
        run, _created = run_create(campaign=campaign, scheduled_for=SUNDAY)
        run_start(run_id=run.pk)
    sends = {s.contact_id: s for s in Send.objects.filter(run=run)}
    sent = [cid for cid, s in sends.items() if s.status == Send.Status.SENT]
    held_out = [cid for cid, s in sends.items() if s.is_holdout]
    assert len(sent) >= 3
    assert len(held_out) >= 3

    def order(contact_id: int, at: datetime, name: str = "Order Completed") -> None:
        EventFactory(contact_id=contact_id, name=name, occurred_at=at)

    order(sent[0], SUNDAY + timedelta(hours=1))  # converts
    order(sent[0], SUNDAY + timedelta(hours=2))  # a second order: still one conversion
    order(sent[1], SUNDAY - timedelta(hours=1))  # before the message: not a conversion
    order(sent[2], SUNDAY + timedelta(hours=25))  # after the window: not a conversion
    order(sent[2], SUNDAY + timedelta(hours=3), name="Product Viewed")  # not the goal
    order(held_out[0], SUNDAY + timedelta(hours=5))  # the holdout, measured from the run's start
    order(held_out[1], SUNDAY - timedelta(minutes=5))  # before the run: not a conversion

    result = run_conversions(run=run)

    assert result["holdout"] == {"base": len(held_out), "converted": 1, "rate": 1 / len(held_out)}
    assert set(result) == {"A", "holdout"}
    assert result["A"]["base"] == len(sent)
    assert result["A"]["converted"] == 1
    campaign.goal_event = ""
    campaign.save()
    run.refresh_from_db()
    assert run_conversions(run=run) == {}  # no goal, no conversions (the report says to set one)
