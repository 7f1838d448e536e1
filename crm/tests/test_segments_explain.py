""" "Why is this contact (not) in this segment?": each condition's true/false agrees with the members of that condition
alone, for every crafted contact and every tested condition; observed values are shown where cheap."""

from __future__ import annotations

import pytest
import time_machine
from django.utils import translation

from crm.models import Segment
from crm.segments.explain import describe, segment_explain
from crm.tests.segment_world import NAMES, NOW, World
from crm.tests.test_segments_conditions import (
    BAG_NOT_IN_90_DAYS,
    CART_ABANDONED,
    CASES,
    COUPON_EXPIRING_TODAY,
    VIP,
    WEEKEND_PROMO_THIS_WEEK,
    group,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    with time_machine.travel(NOW, tick=False):
        yield World()


def everything(world: World) -> dict:
    """One OR group whose children are all the tested conditions, in CASES order."""
    children = [case[1](world) if callable(case[1]) else case[1] for case in CASES]
    return {"version": 1, "root": group(*children, op="or")}


@pytest.mark.parametrize("name", NAMES)
def test_each_condition_is_true_exactly_for_its_members(world, name):
    segment = Segment.objects.create(name="all conditions", rules=everything(world))
    contact = world.contacts[name]

    explanation = segment_explain(segment=segment, contact=contact)

    assert explanation.member == segment.contains(contact)
    if name == "erased":  # conditions may hold, but an erased contact is in no segment
        assert explanation.erased
        assert not explanation.member
        return
    for case, child in zip(CASES, explanation.root.children, strict=True):
        assert child.matched == (name in case[2]), (case[0], name)


def test_nested_groups_and_observed_values(world):
    rules = {
        "version": 1,
        "root": group(
            WEEKEND_PROMO_THIS_WEEK,
            group(CART_ABANDONED, COUPON_EXPIRING_TODAY, op="or"),
            {"type": "attribute", "key": "city", "value_type": "text", "op": "eq", "value": "서울"},
            {"type": "consent", "purpose": "email"},
            {"type": "orders", "field": "days_since_last", "op": "lte", "value": 7},
        ),
    }
    segment = Segment.objects.create(name="mixed", rules=rules)
    with translation.override("en"):
        minji = segment_explain(segment=segment, contact=world.contacts["minji"])
        junho = segment_explain(segment=segment, contact=world.contacts["junho"])

    assert minji.member
    assert [(depth, node.path, node.matched) for depth, node in minji.flat()] == [
        (0, "root", True),
        (1, "root.children[0]", True),
        (1, "root.children[1]", True),
        (2, "root.children[1].children[0]", True),
        (3, "root.children[1].children[0].children[0]", True),
        (3, "root.children[1].children[0].children[1]", True),
        (2, "root.children[1].children[1]", True),
        (1, "root.children[2]", True),
        (1, "root.children[3]", True),
        (1, "root.children[4]", True),
    ]
    observed = {node.path: node.observed for _depth, node in minji.flat()}
    assert observed["root.children[0]"].startswith("1 matching, last at 2026-02-28 14:00")
    assert observed["root.children[1].children[1]"] == "TODAY"
    assert observed["root.children[2]"] == "서울"
    assert observed["root.children[3]"].startswith("granted")
    assert observed["root.children[4]"].startswith("2 day(s)")

    assert not junho.member
    matched = {node.path: node.matched for _depth, node in junho.flat()}
    assert matched == {
        "root": False,
        "root.children[0]": True,
        "root.children[1]": False,
        "root.children[1].children[0]": False,
        "root.children[1].children[0].children[0]": False,
        "root.children[1].children[0].children[1]": True,
        "root.children[1].children[1]": False,
        "root.children[2]": False,
        "root.children[3]": False,
        "root.children[4]": False,
    }
    observed = {node.path: node.observed for _depth, node in junho.flat()}
    assert observed["root.children[2]"] == "부산"
    assert observed["root.children[3]"].startswith("withdrawn")
    assert observed["root.children[4]"].startswith("101 day(s)")
    assert observed["root.children[1].children[1]"] == "no such coupon"


def test_explanation_of_segment_inclusion_and_negation(world):
    rules = {
        "version": 1,
        "root": group(
            {"type": "segment", "segment": world.vip_segment.pk},
            {"type": "tag", "tag": "vip", "negate": True},
        ),
    }
    segment = Segment.objects.create(name="VIP without tag", rules=rules)
    dohyun = segment_explain(segment=segment, contact=world.contacts["dohyun"])
    minji = segment_explain(segment=segment, contact=world.contacts["minji"])
    assert dohyun.member
    assert [n.matched for n in dohyun.root.children] == [True, True]
    assert not minji.member
    assert [n.matched for n in minji.root.children] == [True, False]
    with translation.override("en"):
        assert describe(rules["root"]["children"][1]) == "NOT has the tag “vip”"
        assert describe(rules["root"]["children"][0]) == "in the segment “VIP”"


def test_descriptions_read_like_sentences(world):
    with translation.override("en"):
        assert describe(VIP) == "any of these 2 conditions"
        assert describe(VIP["children"][0]) == "order history: number of orders is at least 3"
        assert describe(WEEKEND_PROMO_THIS_WEEK) == "did “주말 한정 할인” time is this week (Monday to Sunday)"
        assert describe(BAG_NOT_IN_90_DAYS["children"][1]) == (
            "did not do “Order Completed” where property “products[].category” is “가방” time within the last 90 days"
        )
        assert describe(COUPON_EXPIRING_TODAY) == "has a coupon (unused and not expired), expires at is today"
    with translation.override("ko"):
        assert describe(VIP) != "any of these 2 conditions"
