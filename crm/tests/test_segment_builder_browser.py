"""The segment rule builder in a real browser: build "city = Seoul AND viewed a page in the last 7 days" by
clicking, watch the live count reach the exact number, save, and check the saved segment's members."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from crm.models import Segment
from crm.services.segments import segment_create
from crm.tests.factories import ContactFactory, ContactListFactory, EventFactory, TagFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWED = "Viewed Page"


@pytest.fixture
def people():
    """Six contacts: two match "Seoul AND Viewed Page within 7 days"; each other one misses by one condition."""
    now = timezone.now()
    seoul = {"city": "Seoul"}
    made = {
        "recent": ContactFactory(name="최근 방문", email="recent@example.com", attributes=seoul),
        "today": ContactFactory(name="오늘 방문", email="today@example.com", attributes=seoul),
        "old_visit": ContactFactory(name="오래전 방문", email="old-visit@example.com", attributes=seoul),
        "busan": ContactFactory(name="부산 방문", email="busan@example.com", attributes={"city": "Busan"}),
        "no_visit": ContactFactory(name="방문 없음", email="no-visit@example.com", attributes=seoul),
        "ordered": ContactFactory(name="주문만", email="ordered@example.com", attributes=seoul),
    }
    EventFactory(contact=made["recent"], name=VIEWED, occurred_at=now - timedelta(days=2))
    EventFactory(contact=made["today"], name=VIEWED, occurred_at=now - timedelta(hours=1))
    EventFactory(contact=made["today"], name=VIEWED, occurred_at=now - timedelta(days=30))
    EventFactory(contact=made["old_visit"], name=VIEWED, occurred_at=now - timedelta(days=10))
    EventFactory(contact=made["busan"], name=VIEWED, occurred_at=now - timedelta(days=1))
    EventFactory(contact=made["ordered"], name="Order Completed", occurred_at=now - timedelta(days=1))
    return made


def wait_for_count(page, count: int) -> None:
    """Wait until the preview of the latest rules (nothing pending: not busy) shows ``count`` members."""
    page.wait_for_selector(f'.loop-rb-preview:not(.loop-rb-busy) .loop-rb-count[data-count="{count}"]')


def test_build_a_segment_by_clicking_with_a_live_count(admin_page, people, screenshot):
    page = admin_page
    page.goto("/admin/crm/segment/add/")
    page.fill("#id_name", "서울 최근 방문자")
    wait_for_count(page, 6)  # no conditions yet: everybody
    assert page.locator("#id_rules").is_hidden()  # the JSON stays behind "JSON (advanced)"

    city = add_condition(page, "root", "attribute")
    # No key and no value yet: the server's messages are shown at the condition, the summary names it, and the
    # two inputs are marked.
    page.wait_for_selector(".loop-rb-preview:not(.loop-rb-busy) .loop-rb-problems li")
    problems = page.locator(".loop-rb-problems li").all_text_contents()
    assert len(problems) == 2
    assert all(problem.startswith("속성 (root.children[0]") for problem in problems), problems
    assert city.locator(".loop-rb-errors li").count() == 2
    assert city.locator(".loop-rb-invalid").count() == 2
    city.locator('[data-path="root.children[0].key"]').fill("city")
    city.locator('[data-path="root.children[0].value"]').fill("Seoul")
    wait_for_count(page, 5)

    event = add_condition(page, "root", "event")
    name = event.locator('[data-path="root.children[1].name"]')
    suggestions = page.locator(f"#{name.get_attribute('list')} option").evaluate_all("(all) => all.map(o => o.value)")
    assert suggestions == ["Order Completed", VIEWED]  # the event names seen so far
    name.fill(VIEWED)
    wait_for_count(page, 3)  # Seoul and viewed a page at any time
    event.locator('[data-path="root.children[1].when.op"]').select_option("within_last")
    event.locator('[data-path="root.children[1].when.value"]').fill("7")
    wait_for_count(page, 2)
    sample = {name.strip() for name in page.locator(".loop-rb-sample a").all_text_contents()}
    assert sample == {"최근 방문", "오늘 방문"}
    screenshot(page, "segment-builder", full_page=True)

    page.click("input[name=_save]")
    page.wait_for_url("**/admin/crm/segment/")
    segment = Segment.objects.get(name="서울 최근 방문자")
    assert segment.rules == {
        "version": 1,
        "root": {
            "type": "group",
            "op": "and",
            "negate": False,
            "children": [
                {"type": "attribute", "key": "city", "value_type": "text", "op": "eq", "value": "Seoul"},
                {
                    "type": "event",
                    "op": "did",
                    "name": VIEWED,
                    "when": {"op": "within_last", "unit": "days", "value": 7},
                },
            ],
        },
    }
    assert set(segment.contacts()) == {people["recent"], people["today"]}


def test_edit_a_segment_with_exclusion_and_the_json_view(admin_page, people, screenshot):
    page = admin_page
    seoul = {"type": "attribute", "key": "city", "value_type": "text", "op": "eq", "value": "Seoul"}
    visited = segment_create(
        name="최근 방문",
        rules={
            "version": 1,
            "root": {
                "type": "group",
                "op": "and",
                "children": [{"type": "event", "op": "did", "name": VIEWED, "when": {"op": "within_last", "value": 7}}],
            },
        },
    )
    segment = segment_create(
        name="서울, 최근 방문 제외",
        rules={
            "version": 1,
            "root": {
                "type": "group",
                "op": "and",
                "children": [seoul, {"type": "segment", "segment": visited.pk, "negate": True}],
            },
        },
    )
    page.goto(f"/admin/crm/segment/{segment.pk}/change/")
    wait_for_count(page, 3)  # Seoul, minus the two recent visitors
    include = page.locator('.loop-rb-condition[data-path="root.children[1]"] .loop-rb-include')
    assert include.input_value() == "out"
    include.select_option("in")
    wait_for_count(page, 2)

    page.click(".loop-rb-json-toggle")
    textarea = page.locator("#id_rules")
    assert textarea.is_visible()
    assert json.loads(textarea.input_value())["root"]["children"][1] == {"type": "segment", "segment": visited.pk}

    busan = {"version": 1, "root": {"type": "group", "op": "or", "children": [seoul | {"value": "Busan"}]}}
    textarea.fill(json.dumps(busan))
    wait_for_count(page, 1)
    assert page.locator('[data-path="root.children[0].value"]').input_value() == "Busan"
    assert page.locator(".loop-rb-group-op").input_value() == "or"

    textarea.fill('{"version": 1, "root": ')
    page.wait_for_selector(".loop-rb-count:not([data-count])")
    screenshot(page, "segment-builder-json", full_page=True)

    mystery = {"version": 1, "root": {"type": "group", "op": "and", "children": [{"type": "mystery"}]}}
    textarea.fill(json.dumps(mystery))
    page.wait_for_selector(".loop-rb-preview:not(.loop-rb-busy) .loop-rb-problems li")
    assert page.locator(".loop-rb-unknown code").text_content() == '{"type":"mystery"}'
    assert page.locator(".loop-rb-problems li").first.text_content().startswith("조건 (root.children[0].type): ")

    textarea.fill(json.dumps(busan))
    wait_for_count(page, 1)
    page.click('.loop-rb-condition[data-path="root.children[0]"] .loop-rb-remove')
    page.wait_for_selector(".loop-rb-hint")
    wait_for_count(page, 0)  # an empty OR group: nobody
    page.select_option(".loop-rb-group-op", "and")
    wait_for_count(page, 6)  # an empty AND group: everybody

    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    segment.refresh_from_db()
    assert segment.rules == {"version": 1, "root": {"type": "group", "op": "and", "children": []}}
    assert segment.version == 2
    assert segment.contacts().count() == 6


def add_condition(page, group_path: str, kind: str):
    """Pick a kind under the group and press "add"; the new condition's locator."""
    bar = page.locator(f'[data-path="{group_path}"] > .loop-rb-add')
    bar.locator(".loop-rb-kind-picker").select_option(kind)
    bar.locator(".loop-rb-add-condition").click()
    children = page.locator(f'[data-path="{group_path}"] > .loop-rb-children > li')
    return page.locator(f'[data-path="{group_path}.children[{children.count() - 1}]"]')


def test_every_condition_type_can_be_built_by_clicking(admin_page):
    page = admin_page
    ContactFactory(attributes={"city": "Seoul"})
    spring = ContactListFactory(name="봄 행사")
    TagFactory(name="vip")
    visited = segment_create(name="방문자", rules={})
    page.goto("/admin/crm/segment/add/")
    page.fill("#id_name", "모든 조건")
    wait_for_count(page, 1)

    page.click('[data-path="root"] > .loop-rb-add .loop-rb-add-group')
    page.locator('[data-path="root.children[0]"] > .loop-rb-head .loop-rb-not input').check()
    email = add_condition(page, "root.children[0]", "field")
    email.locator(".loop-rb-op").select_option("in")
    email.locator(".loop-rb-list").fill("a@example.com, b@example.com")
    revenue = add_condition(page, "root.children[0]", "orders")
    revenue.locator(".loop-rb-field").select_option("revenue")
    revenue.locator(".loop-rb-op").select_option("between")
    revenue.locator('[data-path$=".value[0]"]').fill("1000")
    revenue.locator('[data-path$=".value[1]"]').fill("5000")
    add_condition(page, "root.children[0]", "cart")  # items: not empty

    coupon = add_condition(page, "root", "coupon")
    coupon.locator(".loop-rb-add-where").click()
    coupon.locator(".loop-rb-field").select_option("expires_at")
    coupon.locator(".loop-rb-op").select_option("today")
    wishlist = add_condition(page, "root", "wishlist")
    wishlist.locator(".loop-rb-add-where").click()
    wishlist.locator(".loop-rb-field").select_option("category")
    wishlist.locator(".loop-rb-value").fill("니트")
    add_condition(page, "root", "reachable").locator(".loop-rb-channel").select_option("kakao")
    consent = add_condition(page, "root", "consent")
    consent.locator(".loop-rb-purpose").select_option("ads")
    consent.locator(".loop-rb-state").select_option("withdrawn")
    add_condition(page, "root", "list").locator(".loop-rb-include").select_option("out")
    add_condition(page, "root", "tag").locator(".loop-rb-text").fill("vip")
    add_condition(page, "root", "segment")
    event = add_condition(page, "root", "event")
    event.locator(".loop-rb-event-op").select_option("did_not")
    event.locator('[data-path$=".name"]').fill("Order Completed")
    event.locator(".loop-rb-add-where").click()
    event.locator('[data-path$=".where[0].property"]').fill("total")
    event.locator('[data-path$=".where[0].value_type"]').select_option("number")
    event.locator('[data-path$=".where[0].op"]').select_option("gte")
    event.locator('[data-path$=".where[0].value"]').fill("100000")
    event.locator(".loop-rb-count-op").select_option("at_least")
    event.locator('[data-path$=".count.value"]').fill("2")
    event.locator(".loop-rb-when-op").select_option("between")
    event.locator('[data-path$=".when.value[0]"]').fill("2026-01-01")
    event.locator('[data-path$=".when.value[1]"]').fill("2026-02-01")

    wait_for_count(page, 0)  # the server accepted the whole document
    assert page.locator(".loop-rb-problems li").count() == 0
    built = json.loads(page.locator("#id_rules").input_value())
    assert built["root"]["children"] == [
        {
            "type": "group",
            "op": "or",
            "children": [
                {"type": "field", "field": "email", "op": "in", "value": ["a@example.com", "b@example.com"]},
                {"type": "orders", "field": "revenue", "op": "between", "value": [1000, 5000]},
                {"type": "cart", "field": "items", "op": "not_empty"},
            ],
            "negate": True,
        },
        {"type": "coupon", "state": "unused", "where": [{"field": "expires_at", "op": "today"}]},
        {"type": "wishlist", "where": [{"field": "category", "op": "eq", "value": "니트"}]},
        {"type": "reachable", "channel": "kakao"},
        {"type": "consent", "purpose": "ads", "state": "withdrawn"},
        {"type": "list", "list": spring.pk, "negate": True},
        {"type": "tag", "tag": "vip"},
        {"type": "segment", "segment": visited.pk},
        {
            "type": "event",
            "op": "did_not",
            "name": "Order Completed",
            "where": [{"property": "total", "value_type": "number", "op": "gte", "value": 100000}],
            "count": {"op": "at_least", "value": 2},
            "when": {"op": "between", "value": ["2026-01-01", "2026-02-01"]},
        },
    ]
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/crm/segment/")
    assert Segment.objects.get(name="모든 조건").rules["root"]["children"] == built["root"]["children"]
