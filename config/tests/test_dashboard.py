"""The home dashboard on the admin index: what ran today, what runs next, the key rates with their chart, the seed
metrics with their definitions, and each table's CSV for whoever may view it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from campaigns.models import Campaign, Run, Send
from campaigns.services.attribution import conversions_attribute
from campaigns.tests.factories import CampaignFactory, SendFactory
from crm.tests.factories import ContactFactory, EventFactory, user_with_role

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
NOW = datetime(2026, 3, 8, 15, 0, tzinfo=SEOUL)  # a Sunday afternoon


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Report figures are cached; ids repeat between tests."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LOOP_REPORT_CACHE_SECONDS = 0


@pytest.fixture
def promo(time_machine):
    time_machine.move_to(NOW, tick=False)
    campaign = CampaignFactory(
        name="주말 프로모션 마감 알림",
        schedule=Campaign.Schedule.RECURRING,
        status=Campaign.Status.SCHEDULED,
        cron_minute="0",
        cron_hour="20",
        cron_day_of_week="sun",
        goal_event="Order Completed",
    )
    run = Run.objects.create(
        campaign=campaign, scheduled_for=NOW - timedelta(hours=5), audience_count=3, status=Run.Status.COMPLETED
    )
    sent_at = NOW - timedelta(hours=5)
    buyer = ContactFactory()
    SendFactory(
        campaign=campaign,
        run=run,
        contact=buyer,
        status="sent",
        sent_at=sent_at,
        clicked_at=sent_at,
        created_at=sent_at,
    )
    SendFactory(campaign=campaign, run=run, status=Send.Status.SENT, sent_at=sent_at, opened_at=sent_at)
    SendFactory(campaign=campaign, run=run, status=Send.Status.SKIPPED)
    EventFactory(
        contact=buyer, name="Order Completed", occurred_at=sent_at + timedelta(hours=1), properties={"revenue": 45000}
    )
    conversions_attribute(now=NOW + timedelta(minutes=5))  # beat's attribution pass
    old = Run.objects.create(campaign=campaign, scheduled_for=NOW - timedelta(days=7), status=Run.Status.COMPLETED)
    SendFactory(campaign=campaign, run=old, status=Send.Status.SENT, sent_at=NOW - timedelta(days=7))
    return campaign


def test_the_index_shows_the_dashboard_above_the_sections(admin_client, promo):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert page.index('id="loop-dashboard"') < page.index('class="app-contacts module')
    today = page[page.index('id="report-runs_today"') :]
    assert "주말 프로모션 마감 알림" in today[: today.index("</table>")]
    upcoming = page[page.index('id="report-next_runs"') :]
    assert "2026-03-08 20:00" in upcoming[: upcoming.index("</table>")]  # tonight's run
    chart = json.loads(page.split('id="loop-daily-chart-data" type="application/json">')[1].split("</script>")[0])
    assert len(chart["labels"]) == 30
    assert chart["labels"][-1] == "03-08"
    assert chart["datasets"][0]["data"][-1] == 2  # two sent today
    assert chart["datasets"][0]["data"][-8] == 1  # one a week ago
    assert chart["datasets"][3]["data"][-1] == 50.0  # clicks: one of two (percent)
    for metric in ("lead_to_customer", "review_collection", "reengagement", "repurchase"):
        assert f'data-metric="{metric}"' in page
    assert "리드" in page  # definitions in Korean next to the figures
    assert 'src="/static/vendor/chartjs/chart.umd.min.js"' in page


def test_each_table_downloads_as_csv(admin_client, promo):
    url = reverse("admin:index")
    daily = admin_client.get(url, {"format": "csv", "table": "daily"})
    assert daily["Content-Type"] == "text/csv; charset=utf-8"
    assert daily.content.startswith(b"\xef\xbb\xbf")  # a BOM: Excel reads the Korean headers
    lines = daily.content.decode("utf-8-sig").splitlines()
    assert len(lines) == 31
    assert lines[-1].split(",")[:8] == ["2026-03-08", "2", "0", "0.0000", "1", "0.5000", "1", "0.5000"]
    runs = admin_client.get(url, {"format": "csv", "table": "runs_today"}).content.decode("utf-8-sig")
    assert "주말 프로모션 마감 알림,2026-03-08 10:00" in runs
    seeds = admin_client.get(url, {"format": "csv", "table": "seed_metrics"}).content.decode("utf-8-sig")
    assert len(seeds.splitlines()) == 5
    for key in ("next_runs", "journey_sends_today"):
        assert admin_client.get(url, {"format": "csv", "table": key}).status_code == 200
    assert admin_client.get(url, {"format": "csv", "table": "contacts"}).status_code == 404


def test_an_analyst_exports_and_a_user_without_view_permissions_sees_no_dashboard(client, promo):
    client.force_login(user_with_role("Analyst"))
    assert client.get(reverse("admin:index"), {"format": "csv", "table": "daily"}).status_code == 200
    assert 'id="loop-dashboard"' in client.get(reverse("admin:index")).content.decode()

    user = get_user_model().objects.create_user("campaigns-only", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_campaign"))
    client.force_login(user)
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="report-next_runs"' in page
    assert 'id="report-daily"' not in page
    assert "loop-daily-chart-data" not in page
    assert client.get(reverse("admin:index"), {"format": "csv", "table": "daily"}).status_code == 403


def test_the_recurring_campaigns_page_charts_its_runs_and_exports_them(admin_client, promo):
    url = reverse("admin:campaigns_campaign_change", args=[promo.pk])
    page = admin_client.get(url).content.decode()
    chart = json.loads(page.split('id="loop-runs-chart-data" type="application/json">')[1].split("</script>")[0])
    assert chart["labels"] == ["2026-03-01 15:00", "2026-03-08 10:00"]
    assert [d["data"] for d in chart["datasets"]] == [[1, 2], [0, 1], [0, 1]]  # sent, clicked, converted
    runs_table = page[page.index('id="report-runs"') :]
    assert "<td>₩45,000</td>" in runs_table[: runs_table.index("</table>")]  # the buyer's order, as money
    csv = admin_client.get(url, {"format": "csv", "table": "runs"}).content.decode("utf-8-sig").splitlines()
    assert len(csv) == 3
    one_off = CampaignFactory()
    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[one_off.pk])).content.decode()
    assert "loop-runs-chart" not in page
