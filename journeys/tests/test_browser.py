"""The journeys admin in a real browser: load a playbook, see its diagram, activate it."""

from __future__ import annotations

import pytest

from journeys.models import Journey

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_load_a_playbook_see_the_diagram_and_activate(admin_page, screenshot):
    page = admin_page
    page.goto("/admin/journeys/journey/")
    page.click("text=플레이북 불러오기")
    page.check("input[value=cart_abandonment]")
    page.click("#playbook-form input[type=submit]")
    page.wait_for_url("**/change/")
    diagram = page.locator("svg.loop-journey-diagram")
    assert diagram.is_visible()
    assert diagram.locator("g.step").count() == 2
    assert "장바구니 할인 알림" in diagram.text_content()
    diagram.scroll_into_view_if_needed()
    screenshot(page, "journey-cart-abandonment")
    page.click("button[data-action=activate]")
    page.wait_for_load_state("load")
    assert Journey.objects.get(playbook="cart_abandonment").status == Journey.Status.ACTIVE
