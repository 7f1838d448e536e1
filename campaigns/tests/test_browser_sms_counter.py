"""The SMS/LMS/MMS counter in a real browser: it follows the text, the channel and the advertising notice with the
same byte rule as the server."""

from __future__ import annotations

import pytest

from campaigns.content_rules import advertising_overhead

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_counter_shows_the_type_while_typing(admin_page, screenshot):
    page = admin_page
    page.goto("/admin/campaigns/campaign/add/")
    counter = page.locator(".loop-sms-counter").first
    page.select_option("#id_channel", "push")
    assert counter.is_hidden()
    page.select_option("#id_channel", "sms")
    page.select_option("#id_purpose", "informational")
    body = page.locator("textarea[name='variants-0-body']")

    body.fill("가" * 44 + "a")  # 89 bytes
    assert counter.get_attribute("data-kind") == "SMS"
    assert "89" in counter.text_content()
    body.fill("가" * 45)  # 90 bytes
    assert counter.get_attribute("data-kind") == "SMS"
    body.fill("가" * 45 + "a")  # 91 bytes
    assert counter.get_attribute("data-kind") == "LMS"
    assert "91" in counter.text_content()
    assert "2,000" in counter.text_content()

    # advertising: the notice counts too, as on the server: "(광고)Loop Shop\n" … "\n무료수신거부 080-000-0000"
    assert advertising_overhead("sms") == 42
    body.fill("가" * 24)  # 48 bytes
    assert counter.get_attribute("data-kind") == "SMS"
    page.select_option("#id_purpose", "advertising")
    assert counter.get_attribute("data-kind") == "SMS"  # 90 bytes
    body.fill("가" * 24 + "a")
    assert counter.get_attribute("data-kind") == "LMS"  # 91 bytes

    page.select_option("#id_purpose", "informational")
    page.fill("input[name='variants-0-subject']", "제목")
    assert counter.get_attribute("data-kind") == "LMS"
    page.fill("input[name='variants-0-subject']", "")
    body.fill("가" * 1001)
    assert "loop-sms-over" in counter.get_attribute("class")
    screenshot(page, "sms-counter")
