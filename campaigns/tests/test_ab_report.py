"""The run report's A/B figures end to end: sends, tracked opens and clicks, attributed conversions, statistics."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import translation

from campaigns.ab_report import ab_report, winner_in_words
from campaigns.models import Run, Send
from campaigns.services.attribution import conversions_attribute
from campaigns.services.run_figures import runs_store_figures
from campaigns.tests.factories import CampaignFactory
from campaigns.tests.test_admin import report_row
from crm.models import Contact
from crm.tests.factories import EventFactory, SourceFactory

pytestmark = pytest.mark.django_db
T = datetime(2026, 12, 6, 20, 0, tzinfo=ZoneInfo("Asia/Seoul"))


@pytest.fixture
def ab_run():
    """A: 200 sent, 20 buy; B: 200 sent, 40 buy; holdout: 100 members, 5 buy (every order 10,000원).
    A's first 50 were delivered and 30 opened, 10 clicked; B's 100 delivered, 60 opened, 25 clicked."""
    campaign = CampaignFactory(
        goal_event="Order Completed", attribution_window_hours=72, holdout_percent=20, variants=2
    )
    a, b = campaign.variants.order_by("id")
    run = Run.objects.create(campaign=campaign, scheduled_for=T, started_at=T, status=Run.Status.COMPLETED)
    contacts = Contact.objects.bulk_create([Contact(name=f"고객 {i}") for i in range(500)])
    sends = []
    for i, contact in enumerate(contacts):
        common = {"campaign": campaign, "run": run, "contact": contact, "channel": "email", "due_at": T}
        if i < 400:
            variant = a if i < 200 else b
            k = i % 200
            delivered = k < (50 if variant == a else 100)
            opened = k < (30 if variant == a else 60)
            clicked = k < (10 if variant == a else 25)
            sends.append(
                Send(
                    **common,
                    variant=variant,
                    status=Send.Status.SENT,
                    sent_at=T,
                    delivered_at=T + timedelta(minutes=1) if delivered else None,
                    opened_at=T + timedelta(hours=1) if opened else None,
                    clicked_at=T + timedelta(hours=1) if clicked else None,
                )
            )
        else:
            sends.append(Send(**common, variant=a, is_holdout=True, status=Send.Status.SKIPPED, skip_reason="holdout"))
    Send.objects.bulk_create(sends)
    source = SourceFactory()
    buyers = contacts[:20] + contacts[200:240] + contacts[400:405]
    for contact in buyers:
        EventFactory(
            contact=contact,
            source=source,
            name="Order Completed",
            occurred_at=T + timedelta(hours=3),
            properties={"total": 10000},
        )
    assert conversions_attribute(now=T + timedelta(days=4)) == 65
    return run


def test_ab_figures_against_hand_computed_numbers(ab_run):
    report = ab_report(ab_run, ["A", "B"])
    a, b = report["variants"]["A"], report["variants"]["B"]
    assert (a["sent"], a["delivered"], a["opened"], a["clicked"], a["converted"]) == (200, 50, 30, 10, 20)
    assert (b["sent"], b["delivered"], b["opened"], b["clicked"], b["converted"]) == (200, 100, 60, 25, 40)
    assert (a["open_rate"], b["click_rate"]) == ("15.0%", "12.5%")  # 30/200, 25/200
    assert (a["revenue"], b["revenue"]) == (200000, 400000)  # 20 and 40 orders × 10,000
    assert a["verdict"] == "control"
    # B 40/200 = 0.20, Wilson: center = (0.2 + 0.0096037)/1.0192073 = 0.2056541,
    # half = 1.959964·√(0.0008 + 0.0000240)/1.0192073 = 0.0552017 → 15.0% – 26.1%.
    assert b["interval"] == "15.0% – 26.1%"
    # B vs A: pooled = 60/400 = 0.15; se = √(0.15·0.85·(1/200 + 1/200)) = √0.001275 = 0.0357071;
    # z = (0.20 − 0.10)/0.0357071 = 2.80056; p = erfc(2.80056/√2) = 0.0051 → better.
    assert b["p_value"] == "0.005"
    assert b["verdict"] == "better"
    holdout = report["holdout"]
    # Treated 60/400 = 15 %, holdout 5/100 = 5 %: lift = (0.15 − 0.05)/0.05 = +200 %; incremental = 60 − 0.05·400 = 40.
    # pooled = 65/500 = 0.13; se = √(0.13·0.87·(1/400 + 1/100)) = 0.0376; z = 0.10/0.0376 = 2.6596; p = 0.0078.
    assert (holdout["members"], holdout["converted"]) == (100, 5)
    assert (holdout["treated_rate"], holdout["conversion_rate"], holdout["lift"]) == ("15.0%", "5.0%", "200.0%")
    assert holdout["incremental"] == 40.0
    assert holdout["p_value"] == "0.008"
    assert holdout["verdict"] == "better"


def test_the_run_report_page_shows_them_in_korean(ab_run, admin_client):
    page = admin_client.get(reverse("admin:campaigns_run_change", args=[ab_run.pk])).content.decode()
    assert report_row(page, "variant", "B")[6:] == [
        "100 (50.0%)",
        "60 (30.0%)",
        "25 (12.5%)",
        "40",
        "20.0%",
        "400,000",
        "15.0% – 26.1%",
        "0.005",
        "대조군보다 좋음",
    ]
    assert report_row(page, "variant", "A")[-1] == "대조군"
    assert report_row(page, "variant", "holdout")[:2] == ["대조군", "100"]
    lift = re.search(r'data-testid="run-holdout-lift">(.*?)</p>', page, re.S)[1]
    assert "리프트 200.0%" in lift
    assert "증분 전환 약 40.0건" in lift
    assert "대조군보다 유의미하게 많음" in lift


def test_a_settled_runs_report_reads_its_stored_figures_and_says_so(ab_run, admin_client, admin_user, time_machine):
    url = reverse("admin:campaigns_run_change", args=[ab_run.pk])
    live = report_row(admin_client.get(url).content.decode(), "variant", "B")
    Run.objects.filter(pk=ab_run.pk).update(finished_at=T)
    settled = T + timedelta(hours=ab_run.campaign.attribution_window_hours, days=1)
    assert runs_store_figures(now=settled) == 1
    time_machine.move_to(settled + timedelta(hours=2), tick=False)
    admin_client.force_login(admin_user)  # days later: a new session
    Send.objects.filter(run=ab_run, variant__name="B").update(clicked_at=None)  # not seen until the daily refresh

    page = admin_client.get(url).content.decode()

    assert report_row(page, "variant", "B") == live
    assert f"{settled.astimezone(ZoneInfo('Asia/Seoul')):%Y-%m-%d %H:%M}에 집계" in page


def test_the_winner_decision_in_words():
    explanation = {
        "metric": "conversion_rate",
        "goal_event": "Order Completed",
        "attribution_window_hours": 4,
        "variants": {
            "1": {"name": "A", "sent": 50, "conversions": 2, "conversion_rate": 0.04},
            "2": {"name": "B", "sent": 50, "conversions": 5, "conversion_rate": 0.1},
        },
        "winner": "B",
        "significance": {"runner_up": "A", "z": 1.17, "p_value": 0.24, "verdict": "too_small"},
    }
    words = winner_in_words(explanation)
    assert words.startswith(
        "테스트 그룹에서 4시간 안의 “Order Completed” 전환율이(가) 가장 높아 B을(를) 나머지 고객에게"
    )
    assert "A: 4.0% (50건 중 2건); B: 10.0% (50건 중 5건)" in words
    assert "테스트 그룹이 너무 작아" in words
    with translation.override("en"):
        words = winner_in_words(explanation | {"significance": {"p_value": 0.0004, "verdict": "better"}})
    assert words.startswith("B was sent to the rest because it had the highest conversion rate of “Order Completed”")
    assert words.endswith("The difference from the runner-up is statistically significant (p = < 0.001).")
    assert winner_in_words({}) == ""


def test_the_campaign_page_lists_each_runs_conversions(ab_run, admin_client):
    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[ab_run.campaign_id])).content.decode()

    def cell(name: str) -> str:
        return re.sub(r"<[^>]+>", "", re.search(rf'<td class="field-{name}">(.*?)</td>', page, re.S)[1]).strip()

    # 60 of the 400 sent converted (the holdout's 5 are not the message's): 15.0 %, 60 × 10,000원.
    assert (cell("converted"), cell("conversion_rate"), cell("revenue")) == ("60", "15.0%", "600,000")
