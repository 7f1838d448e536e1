"""Journey figures (journeys.reports): the funnel per step, the median time to convert and the seeds' metrics,
checked against hand-counted enrollments; and the funnel on the journey's page with its CSV."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import translation

from campaigns.models import Send
from campaigns.tests.factories import CampaignFactory, SendFactory
from crm.tests.factories import ContactFactory, EventFactory, OrderFactory, user_with_role
from journeys.models import Enrollment, EnrollmentLog, Journey, Step
from journeys.reports import (
    journey_funnel,
    journey_sends_between,
    lead_conversion,
    median_time_to_convert,
    reengagement,
    repurchase,
    survey_collection,
)

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=SEOUL)


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Report figures are cached; ids repeat between tests."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def english():
    """Selectors' labels in English (a request to the admin still speaks Korean by default)."""
    with translation.override("en"):
        yield


def enroll(journey, *, at=T0, status=Enrollment.Status.COMPLETED, step=None, goal_after=None, **fields):
    return Enrollment.objects.create(
        journey=journey,
        contact=fields.pop("contact", None) or ContactFactory(),
        entered_at=at,
        triggered_at=at,
        status=status,
        current_step=step,
        goal_reached_at=at + goal_after if goal_after else None,
        **fields,
    )


def log(enrollment, step, action, detail="", at=T0):
    return EnrollmentLog.objects.create(
        enrollment=enrollment, step=step, step_name=step.name if step else "", action=action, detail=detail, at=at
    )


@pytest.fixture
def world():
    """A survey journey: wait → send (the survey link) → end, and six enrollments (one too old to count)."""
    journey = Journey.objects.create(
        name="서비스 이후 관리",
        trigger=Journey.Trigger.EVENT,
        trigger_event="Service Ended",
        goal_event="Order Completed",
    )
    wait = Step.objects.create(
        journey=journey, position=1, name="2일 대기", kind=Step.Kind.WAIT_DURATION, wait_minutes=60
    )
    send = Step.objects.create(
        journey=journey,
        position=2,
        name="만족도 설문",
        kind=Step.Kind.SEND,
        channel="kakao",
        body="설문에 답해 주세요: #{이벤트.survey_url}",
    )
    campaign = CampaignFactory(kind="triggered")
    e1 = enroll(journey, goal_after=timedelta(hours=2), context={"survey_score": 5})
    log(e1, wait, "wait")
    log(e1, send, "send")
    SendFactory(campaign=campaign, contact=e1.contact, key=f"journey:{e1.pk}:{send.pk}", status=Send.Status.SENT)
    log(e1, None, Enrollment.Status.COMPLETED)
    e2 = enroll(journey, status=Enrollment.Status.WAITING, step=wait)
    log(e2, wait, "wait")
    e3 = enroll(journey, status=Enrollment.Status.ACTIVE, step=send)  # due at the send step, not run yet
    log(e3, wait, "wait")
    e4 = enroll(journey, status=Enrollment.Status.EXITED, exit_reason="exit event Order Completed")
    log(e4, wait, "wait")
    log(e4, wait, Enrollment.Status.EXITED, "exit event Order Completed")
    e5 = enroll(journey, status=Enrollment.Status.FAILED, goal_after=timedelta(hours=6))
    log(e5, wait, "wait")
    log(e5, send, "send")
    SendFactory(campaign=campaign, contact=e5.contact, key=f"journey:{e5.pk}:{send.pk}", status=Send.Status.SKIPPED)
    log(e5, send, Enrollment.Status.FAILED, "ChannelError: down")
    old = enroll(journey, at=T0 - timedelta(days=100), goal_after=timedelta(hours=1))
    log(old, wait, "wait", at=T0 - timedelta(days=100))
    return {"journey": journey, "wait": wait, "send": send}


def test_funnel_per_step_counts_reached_waiting_sent_converted_and_exits(world):
    funnel = journey_funnel(world["journey"], since=T0 - timedelta(days=90))

    wait, send = funnel["steps"]
    assert (wait["reached"], wait["waiting"], wait["sent"], wait["converted"], wait["exited"]) == (5, 1, None, 2, 1)
    assert wait["exits"] == [("exit event Order Completed", 1)]
    # e1 and e5 ran it, e3 stands at it; only e1's message was sent (e5's was skipped).
    assert (send["reached"], send["waiting"], send["sent"], send["converted"], send["exited"]) == (3, 1, 1, 2, 1)
    assert send["exits"] == [("failed", 1)]
    assert funnel["end"] == {"exited": 1, "exits": [("completed", 1)]}
    assert (funnel["entered"], funnel["converted"], funnel["open"]) == (5, 2, 2)
    assert funnel["conversion_rate"] == pytest.approx(0.4)
    assert funnel["median_to_convert"] == timedelta(hours=4)  # the middle of 2 h and 6 h


def test_median_of_an_odd_count_is_the_middle_one(world):
    enrollments = Enrollment.objects.filter(journey=world["journey"])  # 2 h, 6 h and the old one's 1 h
    assert median_time_to_convert(enrollments) == timedelta(hours=2)
    assert median_time_to_convert(enrollments.filter(goal_reached_at__isnull=True)) is None


def test_journey_sends_between_counts_messages_and_sent(world):
    [row] = journey_sends_between(since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1))
    assert (row["journey"], row["step"], row["messages"], row["sent"]) == ("서비스 이후 관리", "만족도 설문", 2, 1)


def test_survey_collection_rate(world):
    figures = survey_collection(since=T0 - timedelta(days=1), until=T0 + timedelta(days=1))
    assert (figures["base"], figures["part"], figures["rate"]) == (2, 1, 0.5)
    assert survey_collection(since=T0 + timedelta(hours=1), until=T0 + timedelta(days=1))["base"] == 0


def test_lead_conversion_counts_first_orders_within_the_days_after_the_first_lead_moment():
    form_journey = Journey.objects.create(name="리드 수집", trigger=Journey.Trigger.FORM)
    converts = ContactFactory(first_order_at=T0 + timedelta(days=3))
    enroll(form_journey, contact=converts)
    enroll(form_journey, contact=converts, at=T0 + timedelta(days=1))  # a second submission: still one lead
    too_late = ContactFactory(first_order_at=T0 + timedelta(days=40))
    EventFactory(contact=too_late, name="Signed Up", occurred_at=T0)
    never = ContactFactory()
    EventFactory(contact=never, name="Signed Up", occurred_at=T0)
    both = ContactFactory(first_order_at=T0 + timedelta(days=2))  # signed up, then a form: the sign-up counts
    EventFactory(contact=both, name="Signed Up", occurred_at=T0 - timedelta(days=1))
    enroll(form_journey, contact=both, at=T0 + timedelta(days=5))
    customer = ContactFactory(first_order_at=T0 - timedelta(days=1))  # a customer already: not a lead
    EventFactory(contact=customer, name="Signed Up", occurred_at=T0)
    outside = ContactFactory(first_order_at=T0 + timedelta(days=1))
    EventFactory(contact=outside, name="Signed Up", occurred_at=T0 - timedelta(days=60))
    other_journey = Journey.objects.create(name="환영", trigger=Journey.Trigger.EVENT, trigger_event="Signed Up")
    enroll(other_journey, contact=ContactFactory(first_order_at=T0 + timedelta(days=1)))  # not a lead form

    figures = lead_conversion(since=T0 - timedelta(days=30), until=T0 + timedelta(days=10), days=30)

    assert (figures["base"], figures["part"]) == (4, 2)  # converts, too_late, never, both; converts and both
    assert figures["rate"] == 0.5


def test_reengagement_counts_winback_recipients_with_an_order_within_the_days():
    winback = Journey.objects.create(name="윈백", trigger=Journey.Trigger.SEGMENT_ENTRY, playbook="winback")
    back = enroll(winback)
    OrderFactory(contact=back.contact, placed_at=T0 + timedelta(days=3))
    late = enroll(winback)
    OrderFactory(contact=late.contact, placed_at=T0 + timedelta(days=31))
    before = enroll(winback)
    OrderFactory(contact=before.contact, placed_at=T0 - timedelta(days=1))
    other = enroll(Journey.objects.create(name="다른 여정", trigger=Journey.Trigger.EVENT))
    OrderFactory(contact=other.contact, placed_at=T0 + timedelta(days=1))

    figures = reengagement(since=T0 - timedelta(days=1), until=T0 + timedelta(days=1), days=30)

    assert (figures["base"], figures["part"]) == (3, 1)


def test_repurchase_rate_over_recent_customers():
    ContactFactory(order_count=1, last_order_at=T0)
    ContactFactory(order_count=2, last_order_at=T0)
    ContactFactory(order_count=5, last_order_at=T0)
    ContactFactory(order_count=3, last_order_at=T0 - timedelta(days=400))  # not a recent customer
    ContactFactory(order_count=0)
    ContactFactory(order_count=2, last_order_at=T0, erased_at=T0)

    figures = repurchase(since=T0 - timedelta(days=365))

    assert (figures["base"], figures["part"]) == (3, 2)
    assert figures["rate"] == pytest.approx(2 / 3)


def test_the_journey_page_shows_the_funnel_and_downloads_it_as_csv(admin_client, world, time_machine):
    time_machine.move_to(T0 + timedelta(hours=1))
    url = reverse("admin:journeys_journey_change", args=[world["journey"].pk])
    page = admin_client.get(url).content.decode()
    assert 'id="loop-funnel"' in page
    assert 'data-kpi="median">4시간 0분' in page
    assert "loop-funnel-chart-data" in page

    response = admin_client.get(url, {"format": "csv", "table": "funnel", "days": "90"})
    assert response["Content-Type"].startswith("text/csv")
    lines = response.content.decode("utf-8-sig").splitlines()
    assert len(lines) == 4  # header, two steps, the end of the journey
    assert lines[2].split(",")[:8] == ["2", "만족도 설문", "메시지 발송", "3", "1", "1", "2", "1"]

    assert admin_client.get(url, {"format": "csv", "table": "nope"}).status_code == 404


def test_an_analyst_exports_the_funnel_and_a_user_without_the_permission_cannot(client, world):
    url = reverse("admin:journeys_journey_change", args=[world["journey"].pk])
    client.force_login(user_with_role("Analyst"))
    assert client.get(url, {"format": "csv", "table": "funnel"}).status_code == 200
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    viewer = get_user_model().objects.create_user("journeys-only", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_journey"))
    client.force_login(viewer)
    assert client.get(url).status_code == 200  # the page, without the funnel
    assert 'id="loop-funnel"' not in client.get(url).content.decode()
    assert client.get(url, {"format": "csv", "table": "funnel"}).status_code == 403
