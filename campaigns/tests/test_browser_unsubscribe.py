"""The unsubscribe page in a real browser: a contact opens the link from an email, confirms, and is unsubscribed."""

from __future__ import annotations

import pytest

from campaigns.models import Suppression
from campaigns.tests.factories import SendFactory
from campaigns.unsubscribe import make_token
from crm.models import Consent
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_open_the_link_confirm_and_unsubscribe(browser_page, screenshot):
    contact = ContactFactory(email="minjun@example.com")
    ConsentFactory(contact=contact, purpose="email")
    send = SendFactory(contact=contact)
    page = browser_page

    page.goto(f"/u/{make_token(contact_id=contact.pk, channel='email', send_id=send.pk)}/")
    assert page.locator("html").get_attribute("lang") == "ko"
    assert page.locator("h1").text_content() == "수신 거부"
    assert "m*****@example.com" in page.locator("main").text_content()
    screenshot(page, "unsubscribe-confirm")
    assert Consent.objects.get(contact=contact, purpose="email").granted

    page.click("button[type=submit]")
    page.wait_for_load_state("load")
    assert page.locator("h1").text_content() == "수신 거부되었습니다"
    assert not Consent.objects.get(contact=contact, purpose="email").granted
    assert Suppression.objects.filter(contact=contact, channel="email").exists()

    page.click("a[lang=en]")
    page.wait_for_load_state("load")
    assert page.locator("h1").text_content() == "Unsubscribe"
