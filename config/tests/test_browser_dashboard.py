"""The reports in a real browser: the dashboard on the admin index, a recurring campaign's runs chart and a journey's
funnel, each chart drawn by the vendored Chart.js. Screenshots for docs/analytics.md: dashboard.png,
campaign-runs-chart.png, journey-funnel.png."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Campaign, Run, Send
from campaigns.services.attribution import conversions_attribute
from campaigns.tests.factories import CampaignFactory
from crm.models import Contact, Event, Source
from crm.tests.factories import ContactFactory
from journeys.models import Enrollment, EnrollmentLog, Journey, Step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Report figures are cached; ids repeat between tests."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def reports_world(settings):
    """Six weekly runs of the weekend promo to 60 contacts, and a survey journey with 40 enrollments."""
    settings.LOOP_REPORT_CACHE_SECONDS = 0
    rng = random.Random(7)
    now = timezone.now()
    contacts = Contact.objects.bulk_create([Contact(name=f"고객{n}", email=f"c{n}@example.com") for n in range(60)])
    source = Source.objects.create(name="shop")
    promo = CampaignFactory(
        name="주말 프로모션 마감 알림",
        schedule=Campaign.Schedule.RECURRING,
        status=Campaign.Status.SCHEDULED,
        cron_minute="0",
        cron_hour="20",
        cron_day_of_week="sun",
        goal_event="Order Completed",
    )
    sends, events = [], []
    for week in range(6):
        at = now - timedelta(days=7 * (5 - week), hours=1)
        run = Run.objects.create(
            campaign=promo, scheduled_for=at, status=Run.Status.COMPLETED, audience_count=len(contacts)
        )
        for contact in contacts:
            roll = rng.random()
            sends.append(
                Send(
                    campaign=promo,
                    run=run,
                    contact=contact,
                    channel="email",
                    status=Send.Status.SENT if roll > 0.05 else Send.Status.SKIPPED,
                    due_at=at,
                    created_at=at,
                    sent_at=at if roll > 0.05 else None,
                    delivered_at=at if roll > 0.08 else None,
                    opened_at=at if 0.05 < roll < 0.4 + week * 0.03 else None,
                    clicked_at=at if 0.05 < roll < 0.15 + week * 0.02 else None,
                )
            )
            if 0.05 < roll < 0.1 + week * 0.01:
                events.append(
                    Event(
                        contact=contact,
                        source=source,
                        message_id=f"o-{week}-{contact.pk}",
                        name="Order Completed",
                        properties={"revenue": rng.choice((29000, 39000, 59000))},
                        occurred_at=at + timedelta(minutes=30),
                        received_at=at + timedelta(minutes=30),
                    )
                )
    Send.objects.bulk_create(sends)
    Event.objects.bulk_create(events)
    assert conversions_attribute(now=now) == len(events)  # beat's attribution pass: every order converts once

    journey = Journey.objects.create(
        name="서비스 이후 관리",
        status=Journey.Status.ACTIVE,
        trigger=Journey.Trigger.EVENT,
        trigger_event="Service Ended",
        goal_event="Order Completed",
    )
    wait = Step.objects.create(
        journey=journey, position=1, name="3일 대기", kind=Step.Kind.WAIT_DURATION, wait_minutes=60
    )
    survey = Step.objects.create(
        journey=journey,
        position=2,
        name="만족도 설문",
        kind=Step.Kind.SEND,
        channel="email",
        body="#{이벤트.survey_url}",
    )
    thanks = Step.objects.create(
        journey=journey, position=3, name="감사와 리뷰 요청", kind=Step.Kind.SEND, channel="email", body="감사합니다"
    )
    for _n in range(40):
        entered = now - timedelta(days=rng.randint(1, 20))
        stage = rng.random()
        enrollment = Enrollment.objects.create(
            journey=journey,
            contact=ContactFactory(),
            entered_at=entered,
            triggered_at=entered,
            status=Enrollment.Status.WAITING if stage < 0.2 else Enrollment.Status.COMPLETED,
            current_step=wait if stage < 0.2 else None,
            goal_reached_at=entered + timedelta(hours=rng.randint(2, 60)) if stage > 0.6 else None,
            context={"survey_score": 5} if stage > 0.45 else {},
        )
        logs = [EnrollmentLog(enrollment=enrollment, step=wait, step_name=wait.name, action="wait", at=entered)]
        if stage >= 0.2:
            logs.append(
                EnrollmentLog(enrollment=enrollment, step=survey, step_name=survey.name, action="send", at=entered)
            )
            if stage < 0.3:
                logs.append(
                    EnrollmentLog(
                        enrollment=enrollment,
                        step=survey,
                        step_name=survey.name,
                        action="exited",
                        detail="exit event Order Completed",
                        at=entered,
                    )
                )
            else:
                logs.append(
                    EnrollmentLog(enrollment=enrollment, step=thanks, step_name=thanks.name, action="send", at=entered)
                )
                logs.append(EnrollmentLog(enrollment=enrollment, action="completed", at=entered))
        EnrollmentLog.objects.bulk_create(logs)
    return {"promo": promo, "journey": journey}


def chart_drawn(page, canvas_id: str) -> None:
    page.wait_for_selector(f"canvas#{canvas_id}[data-drawn='1']")
    box = page.locator(f"canvas#{canvas_id}").bounding_box()
    assert box["width"] > 300
    assert box["height"] > 100


def test_dashboard_runs_chart_and_journey_funnel_in_the_browser(admin_page, reports_world, screenshot):
    page = admin_page
    page.goto("/admin/")
    assert page.locator("#loop-dashboard h2").text_content() == "대시보드"
    chart_drawn(page, "loop-daily-chart")
    assert page.locator(".loop-seed").count() == 4
    assert "재구매율" in page.locator("[data-metric=repurchase] .loop-seed-name").text_content()
    assert page.locator("#report-next_runs td").first.text_content() == "주말 프로모션 마감 알림"
    screenshot(page, "dashboard", full_page=True)
    page.locator(".loop-daily-details summary").click()
    with page.expect_download() as download:
        page.locator("#report-daily a.loop-csv").click()
    assert download.value.suggested_filename.startswith("dashboard-daily-")

    page.goto(f"/admin/campaigns/campaign/{reports_world['promo'].pk}/change/")
    chart_drawn(page, "loop-runs-chart")
    assert page.locator("#report-runs tbody tr").count() == 6
    page.locator("#loop-runs-report").scroll_into_view_if_needed()
    screenshot(page, "campaign-runs-chart")

    page.goto(f"/admin/journeys/journey/{reports_world['journey'].pk}/change/")
    chart_drawn(page, "loop-funnel-chart")
    assert page.locator("#loop-funnel [data-kpi=entered]").text_content() == "40"
    assert page.locator("#report-funnel tbody tr").count() >= 3
    page.locator("#loop-funnel").scroll_into_view_if_needed()
    screenshot(page, "journey-funnel")
