"""The campaigns' demo data: the weekend promo and the cart reminder, their past runs made by the real pipeline."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta

import pytest
import time_machine
from django_celery_beat.models import PeriodicTask

from campaigns import demo, tasks
from campaigns.models import Campaign, OutboxMessage, Run, Send
from campaigns.selectors import HOLDOUT, runs_figures
from campaigns.services.campaigns import campaign_pause
from campaigns.services.sending import OPEN_STATUSES
from crm.demo import demo_load_all, demo_loaders, demo_summary

pytestmark = pytest.mark.django_db

SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")
#: A Wednesday afternoon in Seoul: the last four Sundays are 2026-02-15, 02-22, 03-01 and 03-08.
NOW = datetime(2026, 3, 11, 14, 30, tzinfo=SEOUL)
SUNDAYS = [datetime(2026, 2, 15, 20, tzinfo=SEOUL) + timedelta(weeks=n) for n in range(4)]
CONTACTS = 300


@pytest.fixture
def no_tasks(monkeypatch):
    """The demo delivers in this process: a Celery task sent would be a bug."""

    def refuse(*args, **kwargs):
        raise AssertionError("the demo must not send Celery tasks")

    monkeypatch.setattr(tasks.send_chunk, "delay", refuse)
    monkeypatch.setattr(tasks.start_run, "delay", refuse)


@pytest.fixture
def loaded(no_tasks, settings):
    # Real providers configured: the demo still delivers to the outbox only.
    settings.LOOP_CHANNEL_BACKENDS = {"push": "no-such-provider", "sms": "no-such-provider"}
    with time_machine.travel(NOW, tick=False):
        created = demo_load_all(contacts=CONTACTS)
    return created


def promo() -> Campaign:
    return Campaign.objects.get(name=demo.WEEKEND_PROMO["name"])


def cart_reminder() -> Campaign:
    return Campaign.objects.get(name=demo.CART_REMINDER["name"])


def test_the_campaigns_contribute_their_demo_after_the_contacts(loaded):
    assert next(loader.app_label for loader in demo_loaders()) == "campaigns"  # then the apps after it (journeys)
    assert loaded["campaigns"] == 2
    assert loaded["variants"] == 3
    assert loaded["runs"] == 4
    assert loaded["campaign_sends"] == Send.objects.count()
    assert loaded["outbox_messages"] == OutboxMessage.objects.count() > 0
    assert "2 campaigns, 3 variants, 4 runs" in demo_summary(loaded)


def test_the_weekend_promo_is_scheduled_with_its_beat_entry(loaded):
    campaign = promo()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.created_at == NOW - demo.HISTORY
    assert campaign.segment.name == "이번 주 주말 프로모션 페이지 방문"
    assert [(v.name, v.weight) for v in campaign.variants.order_by("name")] == [("A", 1), ("B", 1)]
    task = PeriodicTask.objects.get(name=f"campaign:{campaign.pk}")
    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "20", "sun")
    assert str(task.crontab.timezone) == "Asia/Seoul"


def test_the_past_sundays_runs_went_through_the_pipeline(loaded):
    campaign = promo()
    runs = list(campaign.runs.order_by("scheduled_for"))
    assert [run.scheduled_for for run in runs] == SUNDAYS
    for run in runs:
        assert run.status == Run.Status.COMPLETED
        assert run.started_at == run.scheduled_for  # started by the schedule at that Sunday's 20:00
        assert run.audience_count == run.sends.count() > 0
        assert run.holdout_count == run.sends.filter(is_holdout=True).count()
        statuses = run.counts["status"]
        assert sum(statuses.values()) == run.audience_count
        # Per variant and holdout, every send is counted once, and every skip has its reason.
        assert sum(sum(row.values()) for row in run.counts["variants"].values()) == run.audience_count
        assert sum(run.counts["skip_reason"].values()) == statuses.get("skipped", 0)
        for send in run.sends.filter(status=Send.Status.SENT):
            assert send.sent_at >= run.scheduled_for
            assert send.sent_at < run.scheduled_for + timedelta(hours=12)  # at 20:00, or when a quiet-hours hold ended
    assert {name for run in runs for name in run.counts["variants"]} >= {"A", "B", "holdout"}
    reasons = {reason for run in runs for reason in run.counts["skip_reason"]}
    assert {"holdout", "no_consent", "no_ads_consent"} <= reasons
    for run in runs:
        # The report's figures: the sent sends of each variant and the holdout's members, as the run counted them.
        figures = runs_figures([run.pk])[run.pk]
        bases = {label: row["members" if label == HOLDOUT else "sent"] for label, row in figures.items()}
        sent = run.counts["variants"]
        assert bases == {
            label: (row.get("skipped", 0) if label == "holdout" else row.get("sent", 0))
            for label, row in sent.items()
            if label == "holdout" or row.get("sent")
        }


def test_everything_went_to_the_outbox_personalized_and_nothing_is_left_open(loaded):
    assert not Send.objects.filter(status__in=OPEN_STATUSES).exists()
    sent = Send.objects.filter(status=Send.Status.SENT).select_related("contact", "variant", "campaign")
    assert sent.count() == OutboxMessage.objects.count()
    assert set(sent.values_list("backend", flat=True)) == {"outbox"}
    for send in sent:
        body = send.outbox_message.body
        assert f"{send.contact.name}님" in body
        assert "#{" not in body
        if send.campaign.channel == "push":
            assert send.outbox_message.subject.startswith("(광고)")


def test_cart_reminders_name_the_product_left_in_the_cart(loaded):
    campaign = cart_reminder()
    assert campaign.kind == Campaign.Kind.TRIGGERED
    assert campaign.status == Campaign.Status.RUNNING
    sends = list(campaign.sends.select_related("contact__cart"))
    assert sends
    for send in sends:
        cart = send.contact.cart
        assert send.due_at == cart.checkout_started_at + demo.CART_REMINDER_DELAY
        if send.status == Send.Status.SENT:
            product = cart.items[0]["name"]
            assert send.outbox_message.body.endswith("무료수신거부 080-000-0000")
            assert f"최근 장바구니에 담은 {product} 10,000원 할인 중이에요!" in send.outbox_message.body


def test_loading_again_creates_nothing_on_the_same_or_a_later_day(loaded, no_tasks):
    before = (Run.objects.count(), Send.objects.count(), OutboxMessage.objects.count())
    with time_machine.travel(NOW, tick=False):
        assert not any(demo_load_all(contacts=CONTACTS).values())
    with time_machine.travel(NOW + timedelta(days=9), tick=False):
        assert not any(demo.load(now=NOW + timedelta(days=9)).values())
    assert (Run.objects.count(), Send.objects.count(), OutboxMessage.objects.count()) == before


def test_an_interrupted_load_is_completed_and_a_paused_campaign_is_left_alone(loaded, no_tasks):
    campaign = promo()
    latest = campaign.runs.order_by("-scheduled_for").first()
    latest.delete()  # as if the load had stopped before the last Sunday
    with time_machine.travel(NOW, tick=False):
        assert demo.load(now=NOW)["runs"] == 1
    assert campaign.runs.count() == 4

    campaign.runs.order_by("-scheduled_for").first().delete()
    campaign_pause(campaign=campaign)
    with time_machine.travel(NOW, tick=False):
        assert demo.load(now=NOW)["runs"] == 0
