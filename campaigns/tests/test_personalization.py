"""The #{…} syntax, formats, fallbacks, the sandbox and save-time validation."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.personalization import (
    build_render_data,
    format_number,
    render_text,
    template_errors,
)
from crm.tests.factories import CartFactory, ContactFactory, CouponFactory


def data(**parts):
    base = {"contact": {"name": "김민준", "time_zone": ""}, "attributes": {}, "cart": {}, "coupon": {}, "event": {}}
    base.update(parts)
    return base


def test_the_seed_cart_reminder():
    text = "#{고객명}님, 최근 장바구니에 담은 #{상품명} #{할인 금액:number}원 할인 중이에요!"
    rendered = render_text(
        text, data(event={"product_name": "캐시미어 니트"}, coupon={"discount_amount": Decimal("5000.00")})
    )
    assert rendered == "김민준님, 최근 장바구니에 담은 캐시미어 니트 5,000원 할인 중이에요!"


def test_fallback_when_missing_or_empty():
    assert render_text("#{고객명|고객}님", data(contact={"name": ""})) == "고객님"
    assert render_text("#{고객명|고객}님", data()) == "김민준님"
    assert render_text("#{속성.등급|일반}", data()) == "일반"
    assert render_text("[#{속성.등급}]", data()) == "[]"


def test_sources_attributes_event_cart_coupon_and_variant_variables():
    d = data(
        attributes={"등급": "VIP", "nested": {"level": 3}},
        event={"name": "니트", "price": 39000},
        cart={"items": [{"name": "장바구니 상품"}], "value": Decimal("78000"), "item_count": 2},
        coupon={"code": "SALE5", "expires_at": datetime(2026, 12, 6, 15, tzinfo=ZoneInfo("UTC"))},
        vars={"할인 금액": 7000},
    )
    text = (
        "#{속성.등급} #{attributes.nested.level} #{이벤트.price:number} #{상품명} #{장바구니 금액:number} "
        "#{장바구니 상품 수} #{쿠폰 코드} #{쿠폰 만료일:date} #{할인 금액:number}"
    )
    assert render_text(text, d) == "VIP 3 39,000 니트 78,000 2 SALE5 2026-12-07 7,000"


def test_product_name_falls_back_to_the_first_cart_item():
    assert render_text("#{상품명}", data(cart={"items": [{"name": "머플러"}]})) == "머플러"


def test_dates_are_shown_in_the_contacts_time_zone():
    moment = "2026-12-06T23:30:00Z"
    assert render_text("#{이벤트.at:date}", data(event={"at": moment})) == "2026-12-07"
    london = data(event={"at": moment})
    london["contact"]["time_zone"] = "Europe/London"
    assert render_text("#{이벤트.at:datetime}", london) == "2026-12-06 23:30"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5000, "5,000"), ("5000", "5,000"), (Decimal("1234567.50"), "1,234,567.5"), ("abc", "abc"), (0, "0")],
)
def test_number_format(value, expected):
    assert format_number(value) == expected


def test_django_logic_in_the_sandbox():
    text = "{% if cart.items %}장바구니에 {{ cart.items|length }}개{% else %}비어 있음{% endif %}"
    assert render_text(text, data(cart={"items": [1, 2]})) == "장바구니에 2개"
    assert render_text(text, data()) == "비어 있음"


@pytest.mark.parametrize(
    "template",
    [
        "{% load static %}",
        "{% debug %}",
        "{% include 'admin/base.html' %}",
        "{% extends 'base.html' %}",
        "{% url 'x' %}",
    ],
)
def test_dangerous_tags_are_refused_at_save(template):
    assert template_errors(template)


def test_html_is_escaped_but_text_is_not():
    d = data(contact={"name": "<b>김</b>"})
    assert render_text("<p>#{고객명}</p>", d, html=True) == "<p>&lt;b&gt;김&lt;/b&gt;</p>"
    assert render_text("#{고객명}", d) == "<b>김</b>"


def test_unknown_variables_and_formats_are_named():
    errors = template_errors("#{고객명} #{없는변수} #{할인 금액:money}")
    assert any("#{없는변수}" in e for e in errors)
    assert any("money" in e for e in errors)
    assert not template_errors("#{고객명|고객} #{속성.등급} #{이벤트.product_name} #{쿠폰 코드}")
    assert not template_errors("#{할인액:number}", extra_variables=["할인액"])
    assert template_errors("#{고객명")
    assert template_errors("{% if %}")


@pytest.mark.django_db
def test_render_data_comes_from_the_contact_cart_and_best_coupon():
    contact = ContactFactory(name="이서연", attributes={"등급": "GOLD"})
    CartFactory(contact=contact, items=[{"name": "니트", "price": 39000}], value=Decimal("39000"))
    CouponFactory(contact=contact, code="LATER", discount_amount=Decimal("3000"))
    CouponFactory(
        contact=contact, code="SOON", discount_amount=Decimal("5000"), expires_at=timezone.now() + timedelta(days=1)
    )
    CouponFactory(contact=contact, code="USED", discount_amount=Decimal("9000"), redeemed_at=timezone.now())
    CouponFactory(
        contact=contact, code="GONE", discount_amount=Decimal("9000"), expires_at=timezone.now() - timedelta(days=1)
    )
    other = ContactFactory(name="")

    rendered = build_render_data([contact.pk, other.pk], variables={"x": 1})
    text = "#{고객명|고객}님 #{속성.등급} #{상품명} #{쿠폰 코드} #{할인 금액:number} #{x}"
    assert render_text(text, rendered[contact.pk]) == "이서연님 GOLD 니트 SOON 5,000 1"
    assert render_text(text, rendered[other.pk]) == "고객님     1"


# --- Properties --------------------------------------------------------------------------------------------------

names = st.text(min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(name=names)
def test_a_value_is_never_evaluated_as_a_template(name):
    """Whatever a contact is called ({{ }}, {% %}, #{…}), the output is exactly that text."""
    assert render_text("#{고객명}", data(contact={"name": name})) == name


@settings(max_examples=200, deadline=None)
@given(name=names)
def test_html_output_is_the_escaped_value(name):
    from django.utils.html import escape

    assert render_text("#{고객명}", data(contact={"name": name}), html=True) == escape(name)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_characters="{}#%"), max_size=80))
def test_text_without_template_syntax_is_unchanged(text):
    assert render_text(text, data()) == text
    assert template_errors(text) == []


@settings(max_examples=200, deadline=None)
@given(number=st.integers(min_value=-(10**15), max_value=10**15))
def test_number_format_round_trips(number):
    formatted = render_text("#{x:number}", data(vars={"x": number}))
    assert int(formatted.replace(",", "")) == number
    assert formatted == f"{number:,}"


@settings(max_examples=100, deadline=None)
@given(fallback=st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=20))
def test_fallback_is_literal(fallback):
    assert render_text("#{고객명|" + fallback + "}", data(contact={"name": ""})) == fallback
