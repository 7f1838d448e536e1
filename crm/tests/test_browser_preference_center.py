"""The preference center on a phone, in a real browser: the contact ticks and unticks choices, saves, sees the
confirmation, and the consent history records it."""

from __future__ import annotations

import pytest

from crm.models import Consent, ConsentChange
from crm.preference_center import preference_center_path
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_contact_changes_their_preferences_on_a_phone(chromium, live_server, screenshot):
    contact = ContactFactory(locale="")
    ConsentFactory(contact=contact, purpose="email")
    ConsentFactory(contact=contact, purpose="ads")
    context = chromium.new_context(
        base_url=live_server.url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="ko-KR",
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        page.goto(preference_center_path(contact.pk))
        assert page.locator("h1").text_content() == "수신 설정"
        assert page.locator("#id_email").is_checked()
        assert not page.locator("#id_push").is_checked()
        # Nothing overflows the phone's width.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "preference-center", full_page=True)

        page.locator("label[for=id_push]").click()
        page.locator("label[for=id_ads]").click()
        page.click("button[name=save]")
        page.wait_for_load_state("load")
        assert page.locator("[role=status]").text_content() == "수신 설정이 저장되었습니다."
        assert page.locator("#id_push").is_checked()
        assert not page.locator("#id_ads").is_checked()
    finally:
        context.close()

    assert dict(Consent.objects.filter(contact=contact).values_list("purpose", "granted")) == {
        "email": True,
        "ads": False,
        "push": True,
    }
    assert set(ConsentChange.objects.filter(contact=contact).values_list("purpose", "granted", "source")) == {
        ("push", True, "preference_center"),
        ("ads", False, "preference_center"),
    }
