"""Korean attribute and property keys (an imported column 등급, an event property 카테고리) match on SQLite as on
PostgreSQL: SQLite before 3.45 compares a JSON path's key with the stored key as written (escaped by Django)."""

from __future__ import annotations

import pytest

from crm.services.segments import segment_create
from crm.tests.factories import ContactFactory, EventFactory

pytestmark = pytest.mark.django_db


def members(*children) -> set:
    rules = {"version": 1, "root": {"type": "group", "op": "and", "children": list(children)}}
    return set(segment_create(name=f"s{len(str(children))}", rules=rules).contacts())


def test_a_korean_attribute_key_matches():
    vip = ContactFactory(attributes={"등급": "VIP", "포인트": 1200})
    ContactFactory(attributes={"등급": "일반", "포인트": 10})
    ContactFactory(attributes={"grade": "VIP"})
    grade = {"type": "attribute", "key": "등급", "value_type": "text", "op": "eq", "value": "VIP"}
    points = {"type": "attribute", "key": "포인트", "value_type": "number", "op": "gte", "value": 1000}
    assert members(grade) == {vip}
    assert members(points) == {vip}


def test_korean_event_property_keys_match_also_inside_lists():
    knit = ContactFactory()
    shoes = ContactFactory()
    EventFactory(contact=knit, name="Order Completed", properties={"상품": [{"카테고리": "니트"}], "결제": "카드"})
    EventFactory(contact=shoes, name="Order Completed", properties={"상품": [{"카테고리": "신발"}], "결제": "현금"})

    def bought(property: str, value: str) -> dict:
        where = [{"property": property, "value_type": "text", "op": "eq", "value": value}]
        return {"type": "event", "op": "did", "name": "Order Completed", "where": where}

    assert members(bought("상품[].카테고리", "니트")) == {knit}
    assert members(bought("결제", "현금")) == {shoes}
