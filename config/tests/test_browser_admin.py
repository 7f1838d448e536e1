"""The admin in a real browser: login, Korean by default, the language switch, the grouped index."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_page_is_korean_and_login_reaches_the_grouped_index(browser_page, django_user_model, screenshot):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-password")
    page = browser_page
    page.goto("/admin/login/?next=/admin/")
    assert page.locator("html").get_attribute("lang") == "ko"
    page.fill("#id_username", "admin")
    page.fill("#id_password", "wrong")
    page.click("input[type=submit]")
    assert page.locator(".errornote").is_visible()

    page.fill("#id_password", "admin-password")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    assert "Loop CRM" in page.title()
    assert page.locator("caption a.section").first.text_content() == "고객"
    screenshot(page, "admin-index")


def test_language_switch_changes_the_admin_to_english(admin_page):
    page = admin_page
    page.click("form.loop-language button[value=en]")
    page.wait_for_load_state("load")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("caption a.section").first.text_content() == "Contacts"
