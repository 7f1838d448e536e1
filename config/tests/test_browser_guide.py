"""The marketer's guide (docs/guide/marketer.md), each workflow clicked through in a real browser as a person would,
with the outcome checked in the database; ``LOOP_SCREENSHOTS=1`` writes the guide's pictures
(docs/screenshots/guide-*.png).

1. Import contacts: upload a CSV in the admin, read the preview (counts, rows not imported, columns), confirm.
2. Build a segment with the visual rule builder and its live count.
3. Create an A/B campaign (two variants, a holdout, a goal), send it, and read its run report.
4. Build a journey from the cart-abandonment playbook: load it, edit its message, activate it; a checkout left
   30 minutes gets the edited message.

The weekly weekend promo (a recurring schedule fired by beat) is clicked through by
campaigns/tests/test_browser_weekend_promo.py, whose screenshots the guide shows too.
"""

from __future__ import annotations

import contextlib
import zoneinfo
from datetime import datetime, time, timedelta

import pytest
import time_machine
from django.utils import timezone

from campaigns.models import Campaign, OutboxMessage, Run, Send, SkipReason
from campaigns.services.attribution import conversions_attribute
from campaigns.tests.conftest import eager_celery  # noqa: F401 (autouse: the send tasks run in this process)
from crm.models import Consent, Contact, ContactImport, Segment
from crm.tests.factories import ConsentFactory, ContactFactory, EventFactory, SourceFactory
from crm.tests.test_segment_builder_browser import add_condition, wait_for_count
from journeys.models import Enrollment, Journey, Step
from journeys.tests.conftest import T0, Shop

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def success_message(page) -> str:
    """The message the admin answered an action with (success or info, never a warning or an error)."""
    page.wait_for_selector(".messagelist li")
    message = page.locator(".messagelist li").first
    assert message.get_attribute("class") in ("success", "info"), message.text_content()
    return message.text_content().strip()


# --- 1. Import contacts -------------------------------------------------------------------------------------------

CONTACTS_CSV = """회원ID,이름,이메일,휴대폰,수신동의,등급,가입일
m001,김민준,minjun@example.com,010-1111-2222,Y,VIP,2024-03-05
m002,이서연,seoyeon@example.com,010-2222-3333,Y,일반,2024-04-11
m003,박지훈,jihoon@example.com,010-12,Y,VIP,2024-05-20
m004,최수아,sua@example.com,010-4444-5555,N,VIP,2024-06-01
m005,정하준,hajun@example.com,010-5555-6666,Y,일반,2024-07-15
m006,강지우,jiwoo@example.com,010-6666-7777,Y,VIP,2024-08-30
m001,김민준,minjun.kim@example.com,01011112222,Y,VIP,2024-03-05
"""


def test_import_contacts(admin_page, screenshot, tmp_path):
    page = admin_page
    file = tmp_path / "회원목록.csv"
    file.write_bytes(CONTACTS_CSV.encode("utf-8-sig"))  # Excel's "CSV UTF-8"

    page.click("#content-main a[href='/admin/crm/contact/']")  # 고객 on the home page
    page.click(".object-tools >> text=고객 가져오기")
    page.set_input_files("input[type=file]", str(file))
    page.fill("#id_tag", "11월 회원 가져오기")
    screenshot(page, "guide-import-upload")
    page.click("input[type=submit][value='올리고 미리보기']")

    page.wait_for_selector("#import-mapping")
    counts = {
        block.get_attribute("class"): block.locator("strong").text_content()
        for block in page.locator(".import-counts > div").all()
    }
    assert counts["new"] == "5"
    assert counts["skip"] == "1"
    assert counts["error"] == "1"
    errors = page.locator("#import-errors li").all_text_contents()
    assert errors[0] == "4행, 휴대폰: '010-12'은(는) 올바른 전화번호가 아닙니다."
    assert errors[1].startswith("8행: ")  # repeats row 2 (member ID m001): skipped, not a second 김민준
    assert len(errors) == 2
    actions = [action.strip() for action in page.locator("#import-sample .import-action").all_text_contents()]
    assert actions == ["신규", "신규", "오류", "신규", "신규", "신규", "건너뜀"]  # rows 2-8, in words
    first_row = page.locator("#import-sample tbody tr").first.text_content()
    assert "광고: 예" in first_row  # consent in words, not True
    mapping = dict(
        zip(
            page.locator("#import-mapping tbody td:first-child").all_text_contents(),
            page.locator("#import-mapping tbody td:last-child").all_text_contents(),
            strict=True,
        )
    )
    assert mapping["등급"] == "속성 '등급' (텍스트)"
    assert mapping["가입일"] == "속성 '가입일' (날짜)"
    assert Contact.objects.count() == 0  # only a preview so far
    page.click("#toggle-nav-sidebar")
    screenshot(page, "guide-import-preview", full_page=True)

    page.click("input[type=submit][value='확정하고 가져오기']")
    page.wait_for_selector(".import-counts")
    assert page.locator("#import-status").text_content().strip() == "완료"
    screenshot(page, "guide-import-result", full_page=True)

    contact_import = ContactImport.objects.get()
    assert contact_import.status == ContactImport.Status.COMPLETED
    assert (contact_import.new_count, contact_import.skipped_count, contact_import.error_count) == (5, 1, 1)
    assert set(Contact.objects.values_list("external_id", flat=True)) == {"m001", "m002", "m004", "m005", "m006"}
    minjun = Contact.objects.get(external_id="m001")
    assert (minjun.name, minjun.email, minjun.phone) == ("김민준", "minjun@example.com", "+821011112222")
    assert minjun.attributes == {"등급": "VIP", "가입일": "2024-03-05"}
    assert set(minjun.tags.values_list("name", flat=True)) == {"11월 회원 가져오기"}
    granted = set(Consent.objects.filter(contact=minjun, granted=True).values_list("purpose", flat=True))
    assert {"email", "sms", "ads"} <= granted
    assert not Consent.objects.filter(contact__external_id="m004", granted=True).exists()


# --- 2. Build a segment -------------------------------------------------------------------------------------------


def vip(*purposes: str, grade: str = "VIP", **fields):
    contact = ContactFactory(attributes={"등급": grade}, **fields)
    for purpose in purposes:
        ConsentFactory(contact=contact, purpose=purpose)
    return contact


def test_build_a_segment(admin_page, screenshot):
    page = admin_page
    members = [vip("email", "ads") for _ in range(3)]
    vip("email")  # VIP without advertising consent
    vip("email", "ads", grade="일반")
    vip("ads", grade="일반")

    page.goto("/admin/")
    page.click("#content-main a[href='/admin/crm/segment/add/']")  # 세그먼트 + 추가
    page.fill("#id_name", "광고 수신 동의한 VIP")
    page.fill("#id_description", "등급이 VIP이고 광고성 정보 수신에 동의한 고객")
    wait_for_count(page, 6)  # no conditions: every contact
    grade = add_condition(page, "root", "attribute")
    grade.locator('[data-path="root.children[0].key"]').fill("등급")
    grade.locator('[data-path="root.children[0].value"]').fill("VIP")
    wait_for_count(page, 4)
    consent = add_condition(page, "root", "consent")
    consent.locator(".loop-rb-purpose").select_option("ads")
    wait_for_count(page, 3)
    shown = {name.strip() for name in page.locator(".loop-rb-sample a").all_text_contents()}
    assert shown == {contact.name for contact in members}
    page.click("#toggle-nav-sidebar")
    screenshot(page, "guide-segment-builder", full_page=True)

    page.click("input[name=_continue]")
    success_message(page)
    segment = Segment.objects.get(name="광고 수신 동의한 VIP")
    assert set(segment.contacts()) == set(members)
    assert [child["type"] for child in segment.rules["root"]["children"]] == ["attribute", "consent"]
    box = page.locator("#segment-members")
    assert box.locator("#member-count").text_content().strip() == "고객 3명"
    assert len(box.locator("#member-sample tbody tr").all()) == 3
    screenshot(page, "guide-segment-members", **clip(page, box, box))


# --- 3. An A/B campaign and its report --------------------------------------------------------------------------


@pytest.fixture
def daytime():
    """The next 14:00 in Seoul, the clock running: advertising is sent at once (not held for the night)."""
    local = timezone.now().astimezone(SEOUL)
    moment = datetime.combine(local.date(), time(14, 0), tzinfo=SEOUL)
    if moment < local:
        moment += timedelta(days=1)
    with time_machine.travel(moment, tick=True):
        yield moment


VIP_RULES = {
    "version": 1,
    "root": {
        "type": "group",
        "op": "and",
        "children": [
            {"type": "attribute", "key": "등급", "value_type": "text", "op": "eq", "value": "VIP"},
            {"type": "consent", "purpose": "ads"},
        ],
    },
}
#: VIPs with email and advertising consent: enough that a 10 % holdout is never empty (0.9^80 < 0.03 %).
REACHABLE_VIPS = 80


def fieldset(page, field: str):
    return page.locator("fieldset.module", has=page.locator(field))


def clip(page, first, last) -> dict:
    """Screenshot options for the part of the page from ``first``'s top to ``last``'s bottom."""
    top, bottom = first.bounding_box(), last.bounding_box()  # in the viewport; a full-page clip is in the page
    scroll = page.evaluate("window.scrollY")
    box = {
        "x": top["x"],
        "y": top["y"] + scroll,
        "width": top["width"],
        "height": bottom["y"] + bottom["height"] - top["y"],
    }
    return {"full_page": True, "clip": box}


def fill_variant(page, index: int, **values: str) -> None:
    for field, value in values.items():
        page.fill(f"#id_variants-{index}-{field}", value)


def test_an_ab_campaign_and_its_report(daytime, admin_page, screenshot):
    from crm.services.segments import segment_create

    page = admin_page
    segment_create(name="광고 수신 동의한 VIP", rules=VIP_RULES)
    reachable = {vip("email", "ads").pk for _ in range(REACHABLE_VIPS)}
    no_email_consent = {vip("ads").pk for _ in range(5)}  # in the segment, but they never agreed to email
    vip("email", "ads", grade="일반")  # not in the segment

    page.goto("/admin/campaigns/campaign/add/")
    page.fill("#id_name", "VIP 11월 할인 쿠폰 A/B")
    page.select_option("#id_channel", "email")
    page.select_option("#id_purpose", "advertising")
    page.select_option("#id_segment", label="광고 수신 동의한 VIP")
    page.fill("#id_goal_event", "Order Completed")
    page.fill("#id_attribution_window_hours", "72")
    page.select_option("#id_schedule", "now")
    page.fill("#id_holdout_percent", "10")
    fill_variant(
        page,
        0,
        name="A",
        weight="1",
        subject="VIP 고객님께 5,000원 쿠폰",
        body="#{고객명|고객}님, VIP 전용 5,000원 할인 쿠폰을 드려요.",
    )
    page.locator("#variants-group .add-row a").click()
    fill_variant(
        page,
        1,
        name="B",
        weight="1",
        subject="이번 주만! VIP 10% 할인",
        body="#{고객명|고객}님, 이번 주에만 VIP 10% 할인을 받으세요.",
    )
    page.click("#toggle-nav-sidebar")
    screenshot(
        page, "guide-campaign-ab-audience", **clip(page, fieldset(page, "#id_name"), fieldset(page, "#id_goal_event"))
    )
    screenshot(
        page,
        "guide-campaign-ab-variants",
        **clip(page, fieldset(page, "#id_holdout_percent"), page.locator("#variants-group")),
    )
    page.click("input[name=_continue]")
    success_message(page)
    campaign = Campaign.objects.get()
    assert campaign.status == Campaign.Status.DRAFT
    assert [(v.name, v.weight) for v in campaign.variants.order_by("name")] == [("A", 1), ("B", 1)]

    page.click("button[data-action=send_now]")
    success_message(page)
    run = Run.objects.get(campaign=campaign)
    assert run.status == Run.Status.COMPLETED
    sends = {s.contact_id: s for s in run.sends.select_related("variant")}
    assert set(sends) == reachable | no_email_consent
    holdout = {cid for cid, s in sends.items() if s.is_holdout}
    assert holdout
    assert all(sends[cid].skip_reason == SkipReason.HOLDOUT for cid in holdout)
    delivered = {cid for cid, s in sends.items() if s.status == Send.Status.SENT}
    assert delivered == reachable - holdout
    assert {sends[cid].variant.name for cid in delivered} == {"A", "B"}
    skipped = no_email_consent - holdout
    assert skipped  # (all five held out: 1 run in 100,000)
    assert {sends[cid].skip_reason for cid in skipped} == {SkipReason.NO_CONSENT}
    subjects = set(OutboxMessage.objects.values_list("subject", flat=True))
    assert all(subject.startswith("(광고)") for subject in subjects)
    assert OutboxMessage.objects.count() == len(delivered)

    # Two recipients of A and one of B buy: A converts 2, B 1.
    by_variant = {name: sorted(cid for cid in delivered if sends[cid].variant.name == name) for name in ("A", "B")}
    source = SourceFactory(name="shop")
    for cid in [*by_variant["A"][:2], *by_variant["B"][:1]]:
        EventFactory(contact_id=cid, source=source, name="Order Completed", occurred_at=timezone.now())
    # The beat's attribution pass (every ATTRIBUTION_SECONDS) counts them as conversions of the sends.
    assert conversions_attribute(now=timezone.now() + timedelta(minutes=5)) == 3

    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    page.locator("#runs-group a.inlineviewlink").first.click()
    page.wait_for_selector("[data-testid=run-report]")
    for name, converted in (("A", 2), ("B", 1)):
        cells = [c.strip() for c in page.locator(f"tr[data-variant={name}] > *").all_text_contents()]
        assert cells[0] == name
        assert cells[2] == str(len(by_variant[name]))  # sent
        assert cells[9:11] == [str(converted), f"{converted / len(by_variant[name]):.1%}"]  # converted, rate
    assert page.locator("tr[data-variant=holdout] > *").nth(1).text_content().strip() == str(len(holdout))
    reason = [c.strip() for c in page.locator("tr[data-reason=no_consent] > *").all_text_contents()]
    assert reason[0] == "채널 수신 동의 없음"
    assert reason[-1] == str(len(skipped))
    page.locator("[data-testid=run-report]").scroll_into_view_if_needed()  # (the navigation is still collapsed)
    screenshot(page, "guide-campaign-report", full_page=True)


# --- 4. A journey from a playbook ---------------------------------------------------------------------------------

EDITED_MESSAGE = (
    "#{고객명|고객}님, 장바구니에 담은 #{상품명} 아직 고민 중이세요? 오늘 주문하면 #{할인 금액:number}원 할인!"
)


def test_a_journey_from_the_cart_abandonment_playbook(admin_page, screenshot):
    page = admin_page
    page.goto("/admin/journeys/journey/")
    page.click("text=플레이북 불러오기")
    page.check("input[value=cart_abandonment]")
    screenshot(page, "guide-journey-playbooks")
    page.click("#playbook-form input[type=submit]")
    page.wait_for_url("**/change/")
    journey = Journey.objects.get(playbook="cart_abandonment")
    assert journey.status == Journey.Status.DRAFT

    # The message step: open its "메시지" section, rewrite the text, save.
    page.click("#toggle-nav-sidebar")  # the form, without the navigation beside it
    remind = journey.steps.get(kind=Step.Kind.SEND)
    index = list(journey.steps.order_by("position", "id")).index(remind)
    step = page.locator(f"#steps-{index}")
    assert step.locator(f"#id_steps-{index}-name").input_value() == "장바구니 할인 알림"
    step.locator("details summary", has_text="메시지").click()
    body = step.locator(f"#id_steps-{index}-body")
    body.fill(EDITED_MESSAGE)
    body.scroll_into_view_if_needed()
    screenshot(page, "guide-journey-message")
    page.click("input[name=_continue]")
    success_message(page)
    remind.refresh_from_db()
    assert remind.body == EDITED_MESSAGE
    journey.refresh_from_db()
    assert journey.version == 2  # the edit of a step counts a new version

    page.click("button[data-action=activate]")
    success_message(page)
    journey.refresh_from_db()
    assert journey.status == Journey.Status.ACTIVE
    assert page.locator(".field-status .readonly").text_content().strip() == "활성"
    screenshot(page, "guide-journey-active")

    # The outcome: a checkout left for 30 minutes gets the edited message (KakaoTalk, advertising form).
    shop = Shop(lambda execute: contextlib.nullcontext())
    customer = shop.customer("u1", name="김민준")
    shop.track("Checkout Started", user="u1", at=T0, product_name="니트 가디건", value=39000)
    enrollment = Enrollment.objects.get(journey=journey, contact=customer)
    assert enrollment.status == Enrollment.Status.WAITING
    shop.tick(T0 + timedelta(minutes=30, seconds=15))
    [message] = OutboxMessage.objects.filter(send__contact=customer)
    assert "김민준님, 장바구니에 담은 니트 가디건 아직 고민 중이세요? 오늘 주문하면 3,000원 할인!" in message.body
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED

    page.reload()
    diagram = page.locator("svg.loop-journey-diagram")
    assert diagram.text_content().count("진입 1 ·") == 2  # the customer went through both steps
    diagram.scroll_into_view_if_needed()
    screenshot(page, "guide-journey-diagram")
