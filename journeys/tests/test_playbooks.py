"""The playbooks end to end on a controlled clock: events in, messages out at the right time, exits and no
duplicates. Events go through the real ingest and processing (the ``events_recorded`` receiver enrolls), the engine
is ticked at chosen moments, and the messages are read from the outbox."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.core.management import call_command

from campaigns.models import OutboxMessage, Send
from crm.models import Event
from journeys.models import Enrollment, EnrollmentLog, Journey
from journeys.playbooks import CART_MESSAGE, PLAYBOOKS
from journeys.services.engine import coupon_code
from journeys.tests.conftest import SEOUL, T0

pytestmark = pytest.mark.django_db


def coupon_step_id(playbook_name: str) -> int:
    return Journey.objects.get(playbook=playbook_name).steps.get(action="issue_coupon").pk


def bodies(contact=None) -> list[str]:
    rows = OutboxMessage.objects.order_by("id")
    if contact is not None:
        rows = rows.filter(send__contact=contact)
    return list(rows.values_list("body", flat=True))


CART_LINE = "김민준님, 최근 장바구니에 담은 니트 가디건 3,000원 할인 중이에요!"


def checkout(shop, at, user="u1"):
    shop.track("Checkout Started", user=user, at=at, product_name="니트 가디건", value=39000)


# --- cart_abandonment ----------------------------------------------------------------------------------------------


def test_cart_reminder_is_sent_30_minutes_after_checkout_with_the_variables_rendered(shop, playbook):
    playbook("cart_abandonment")
    customer = shop.customer("u1", name="김민준")
    checkout(shop, T0)
    enrollment = Enrollment.objects.get(contact=customer)
    assert enrollment.status == Enrollment.Status.WAITING  # the tick queued on commit ran the wait step
    assert enrollment.next_run_at == T0 + timedelta(minutes=30)
    assert enrollment.context["product_name"] == "니트 가디건"

    shop.tick(T0 + timedelta(minutes=29, seconds=45))
    assert bodies() == []
    shop.tick(T0 + timedelta(minutes=30, seconds=15))  # the next tick, 15 s after the due time

    [body] = bodies(customer)
    assert CART_LINE in body.splitlines()
    assert body.startswith("(광고)")  # advertising form: the discount is an advertisement
    send = Send.objects.get(contact=customer)
    assert send.key == f"journey:{enrollment.pk}:{enrollment.journey.steps.get(kind='send').pk}"
    assert send.sent_at == T0 + timedelta(minutes=30, seconds=15)
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED
    assert list(enrollment.logs.values_list("action", flat=True)) == ["wait", "send", "completed"]


def test_an_order_during_the_wait_cancels_the_reminder(shop, playbook):
    playbook("cart_abandonment")
    customer = shop.customer("u1")
    checkout(shop, T0)
    shop.track("Order Completed", at=T0 + timedelta(minutes=12), order_id="o-1", total=39000)

    enrollment = Enrollment.objects.get(contact=customer)
    assert enrollment.status == Enrollment.Status.EXITED
    assert enrollment.exit_reason == "event: Order Completed"
    assert enrollment.goal_reached_at == T0 + timedelta(minutes=12)
    shop.tick(T0 + timedelta(minutes=31))
    shop.tick(T0 + timedelta(hours=5))
    assert bodies() == []
    assert not Send.objects.exists()


def test_an_order_before_the_checkout_does_not_cancel_it(shop, playbook):
    playbook("cart_abandonment")
    shop.customer("u1")
    shop.track("Order Completed", at=T0 - timedelta(minutes=5), order_id="o-0", total=1000)
    checkout(shop, T0)
    shop.tick(T0 + timedelta(minutes=30))
    assert len(bodies()) == 1


def test_a_contact_who_checks_out_again_during_the_wait_gets_one_reminder(shop, playbook):
    playbook("cart_abandonment")
    customer = shop.customer("u1")
    checkout(shop, T0)
    checkout(shop, T0 + timedelta(minutes=10))  # re-trigger while waiting: no second enrollment
    assert Enrollment.objects.filter(contact=customer).count() == 1
    shop.tick(T0 + timedelta(minutes=30))
    shop.tick(T0 + timedelta(minutes=40))
    shop.tick(T0 + timedelta(minutes=45))
    assert len(bodies(customer)) == 1
    # After the run finished, a new checkout starts a new run (re-entry "after finish").
    checkout(shop, T0 + timedelta(hours=3))
    assert Enrollment.objects.filter(contact=customer).count() == 2


def test_each_contact_gets_their_own_reminder_in_one_batch(shop, playbook):
    playbook("cart_abandonment")
    a = shop.customer("a", name="김민준")
    b = shop.customer("b", name="이서연")
    none = shop.customer("c", "email")  # no KakaoTalk consent: skipped by the send pipeline, not by the journey
    for user in ("a", "b", "c"):
        checkout(shop, T0, user=user)
    shop.tick(T0 + timedelta(minutes=30))
    assert len(bodies(a)) == len(bodies(b)) == 1
    assert "이서연님" in bodies(b)[0]
    assert bodies(none) == []
    assert Send.objects.get(contact=none).skip_reason == "no_consent"


def test_trigger_conditions_and_the_entry_segment_decide_who_enters(shop, playbook):
    from campaigns.tests.factories import SegmentFactory
    from crm.tests.factories import TagFactory

    vip = TagFactory(name="vip")
    playbook(
        "cart_abandonment",
        trigger_conditions=[{"property": "value", "op": "gte", "value": 30000}],
        entry_segment=SegmentFactory(tag="vip"),
    )
    member = shop.customer("m", tags=[vip])
    shop.customer("n")
    shop.track("Checkout Started", user="m", at=T0, product_name="양말", value=9000)  # below 30,000
    checkout(shop, T0, user="n")  # not in the segment
    assert not Enrollment.objects.exists()
    checkout(shop, T0, user="m")
    assert list(Enrollment.objects.values_list("contact_id", flat=True)) == [member.pk]


# --- welcome, wishlist, coupon expiry ------------------------------------------------------------------------------


def test_welcome_message_with_the_sign_up_coupon_right_away_once_ever(shop, playbook):
    playbook("welcome")
    customer = shop.customer("u1", name="박지훈")
    shop.track("Signed Up", at=T0)
    shop.tick(T0 + timedelta(seconds=15))
    coupon = customer.coupons.get()
    assert coupon.code == coupon_code("WELCOME", customer.journey_enrollments.get().pk, coupon_step_id("welcome"))
    assert coupon.discount_amount == 5000
    assert coupon.expires_at == datetime(2027, 1, 6, 23, 59, 59, tzinfo=SEOUL)  # 30 days, end of the day
    assert bodies(customer) == [
        f"박지훈님, 가입을 환영해요! 가입 축하 쿠폰 {coupon.code}으로 첫 구매 5,000원 할인을 받아 보세요."
    ]
    assert customer.tags.filter(name="신규 가입").exists()
    assert Enrollment.objects.get(contact=customer).status == Enrollment.Status.COMPLETED
    shop.track("Signed Up", at=T0 + timedelta(days=1))  # "once ever"
    shop.tick(T0 + timedelta(days=1, seconds=15))
    assert len(bodies(customer)) == 1
    assert Enrollment.objects.filter(contact=customer).count() == 1


def test_wishlist_reminder_the_next_day_unless_purchased(shop, playbook):
    playbook("wishlist")
    buyer = shop.customer("buyer")
    waverer = shop.customer("waverer", name="최수아")
    for user in ("buyer", "waverer"):
        shop.track("Product Added to Wishlist", user=user, at=T0, product_id="p-7", product_name="울 코트")
    shop.track("Order Completed", user="buyer", at=T0 + timedelta(hours=20), order_id="o-9", total=250000)
    shop.tick(T0 + timedelta(hours=23, minutes=59))
    assert bodies() == []
    shop.tick(T0 + timedelta(days=1, seconds=10))
    assert bodies(waverer) == ["최수아님, 찜하신 울 코트 아직 고민 중이세요? 지금 확인해 보세요."]
    assert bodies(buyer) == []


def test_coupon_expiry_message_on_the_morning_of_the_expiry_day_unless_used(shop, playbook):
    playbook("coupon_expiry")
    keeper = shop.customer("keeper", name="정하준")
    user = shop.customer("user")
    expires = datetime(2026, 12, 10, 23, 59, tzinfo=SEOUL)
    for who in ("keeper", "user"):
        shop.track("Coupon Issued", user=who, at=T0, coupon_code="WINTER10", expires_at=expires.isoformat())
    shop.track("Coupon Redeemed", user="user", at=T0 + timedelta(days=1), coupon_code="WINTER10")
    assert Enrollment.objects.get(contact=keeper).next_run_at == datetime(2026, 12, 10, 9, 0, tzinfo=SEOUL)
    shop.tick(datetime(2026, 12, 10, 8, 59, tzinfo=SEOUL))
    assert bodies() == []
    shop.tick(datetime(2026, 12, 10, 9, 0, 10, tzinfo=SEOUL))
    assert bodies(keeper) == ["정하준님, 보유하신 WINTER10 쿠폰이 오늘 만료돼요. 잊지 말고 사용하세요!"]
    assert bodies(user) == []


# --- loading ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PLAYBOOKS))
def test_every_playbook_loads_as_a_valid_draft(name, db):
    from journeys.services.journeys import journey_problems

    call_command("load_playbook", name, stdout=open("/dev/null", "w"))  # noqa: SIM115
    journey = Journey.objects.get(playbook=name)
    assert journey.status == Journey.Status.DRAFT
    assert journey.steps.count() == len(PLAYBOOKS[name]["steps"])
    assert journey_problems(journey=journey) == []


def test_the_cart_message_is_the_seeds(db):
    assert CART_MESSAGE == "#{고객명}님, 최근 장바구니에 담은 #{상품명} #{할인 금액:number}원 할인 중이에요!"
    assert EnrollmentLog.objects.count() == 0


# --- course (date trigger), winback (segment entry) ----------------------------------------------------------------


def test_course_reminder_the_day_before_materials_after_class_and_weekly_content(shop, playbook):
    playbook("course")
    student = shop.customer(
        "s1",
        name="강지우",
        attributes={"class_start": "2026-12-08", "class_end": "2026-12-10", "course_name": "도자기 클래스"},
    )
    shop.customer("other", attributes={"class_start": "2026-12-20"})
    shop.tick(datetime(2026, 12, 7, 9, 59, tzinfo=SEOUL))  # before 10:00 on the day before
    assert not Enrollment.objects.exists()
    shop.tick(datetime(2026, 12, 7, 10, 0, 15, tzinfo=SEOUL))
    assert bodies(student) == ["강지우님, 내일은 도자기 클래스 첫날이에요. 준비물을 확인해 주세요!"]
    shop.tick(datetime(2026, 12, 7, 10, 5, tzinfo=SEOUL))  # the next check: no second run for the same date
    assert Enrollment.objects.count() == 1
    enrollment = Enrollment.objects.get()
    assert enrollment.next_run_at == datetime(2026, 12, 10, 18, 0, tzinfo=SEOUL)
    shop.tick(datetime(2026, 12, 10, 18, 0, 10, tzinfo=SEOUL))
    materials = OutboxMessage.objects.get(channel="email", body__contains="수업 자료")
    assert materials.subject == "도자기 클래스 자료를 보내 드려요"
    shop.tick(datetime(2026, 12, 17, 18, 0, 10, tzinfo=SEOUL))
    assert OutboxMessage.objects.filter(send__contact=student).count() == 3
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED


def test_winback_enters_on_entering_the_segment_not_again_while_staying(shop, playbook):
    from crm.models import Contact

    playbook("winback")
    dormant = shop.customer("d", name="조예린")
    Contact.objects.filter(pk=dormant.pk).update(order_count=1, last_order_at=T0 - timedelta(days=91))
    shop.tick(T0)
    assert bodies(dormant) == [
        "(광고)Loop Shop\n조예린님, 오랜만이에요! 다시 찾아주시면 10,000원 할인해 드려요.\n무료수신거부 080-000-0000"
    ]
    shop.tick(T0 + timedelta(minutes=2))  # still a member, the run finished: entering is once per entry
    shop.tick(T0 + timedelta(days=100))  # still a member 100 days later: no new entry either
    assert len(bodies(dormant)) == 1
    # Orders again (leaves the segment), then is dormant again 91 days later: enters again.
    Contact.objects.filter(pk=dormant.pk).update(last_order_at=T0 + timedelta(days=101))
    shop.tick(T0 + timedelta(days=101, minutes=1))
    Contact.objects.filter(pk=dormant.pk).update(last_order_at=T0 + timedelta(days=101))
    shop.tick(T0 + timedelta(days=193))
    assert len(bodies(dormant)) == 2


def test_a_journey_that_cannot_enroll_does_not_stop_the_others(shop, playbook):
    from unittest import mock

    from crm.models import Segment

    broken = playbook("cart_abandonment", name="깨진 여정")
    playbook("cart_abandonment", name="정상 여정")
    Journey.objects.filter(pk=broken.pk).update(entry_segment=Segment.objects.create(name="broken", rules={}))
    shop.customer("u1")
    with mock.patch("crm.models.Segment.contacts", side_effect=ValueError("bad rules")):
        checkout(shop, T0)
    assert list(Enrollment.objects.values_list("journey__name", flat=True)) == ["정상 여정"]


def test_when_no_journey_listens_the_receiver_costs_one_small_query(db, django_assert_num_queries):
    from crm.tests.factories import EventFactory
    from journeys.playbooks import playbook_load
    from journeys.services.enrollment import journeys_handle_events

    ids = [e.pk for e in EventFactory.create_batch(3, name="Checkout Started")]
    playbook_load(name="cart_abandonment")  # a draft listens to nothing yet
    with django_assert_num_queries(1):
        assert journeys_handle_events(event_ids=ids) == {}


def test_after_service_survey_then_thanks_or_apology_then_referral_and_invitation(shop, playbook, client):
    import re

    playbook("after_service")
    happy = shop.customer("h", name="장하은", attributes={"service_end": "2026-12-04"})
    silent = shop.customer("s", name="임시우", attributes={"service_end": "2026-12-04"})
    day = datetime(2026, 12, 7, 10, 0, 10, tzinfo=SEOUL)  # 3 days after the service ended, 10:00
    shop.tick(day)
    [survey] = bodies(happy)
    assert survey.startswith("장하은님, 서비스는 만족스러우셨나요? 1분 설문에 답해 주세요: http://localhost:8000/s/")
    path = re.search(r"/s/\S+", survey).group(0)
    assert "장하은" in client.get(path).content.decode()
    assert client.post(path, {"score": "9"}).status_code == 400
    assert client.post(path, {"score": "5", "comment": "친절했어요"}).status_code == 200
    assert client.post(path, {"score": "1"}).status_code == 200  # answered once: the page thanks again
    assert Enrollment.objects.get(contact=happy).context["survey_score"] == 5
    assert Event.objects.get(name="Survey Answered").properties["comment"] == "친절했어요"
    assert client.get("/s/forged-token").status_code == 404

    shop.tick(day + timedelta(days=2))
    assert bodies(happy)[1] == "장하은님, 좋은 평가 감사합니다! 리뷰를 남겨 주시면 큰 힘이 돼요."
    assert bodies(silent)[1] == "임시우님, 기대에 미치지 못해 죄송합니다. 다음 이용 때 10,000원 할인해 드릴게요."
    shop.tick(day + timedelta(days=16))
    code = happy.coupons.get().code
    assert code.startswith("REF-")
    assert bodies(happy)[2] == f"장하은님, 친구에게 추천 코드 {code}를 알려 주세요. 친구도 5,000원 할인받아요!"
    shop.tick(day + timedelta(days=46))
    assert bodies(happy)[3].endswith("비슷한 상품과 활용법을 소개해 드려요.")
    assert Enrollment.objects.filter(status="completed").count() == 2
