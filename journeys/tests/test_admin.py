"""The journeys admin: playbooks from a button, the lifecycle buttons, the path overview, enrollments with
filters and the retry of failed ones."""

from __future__ import annotations

import pytest
from django.urls import reverse

from crm.tests.factories import ContactFactory
from journeys.models import Enrollment, EnrollmentLog, Journey

pytestmark = pytest.mark.django_db


def test_load_a_playbook_then_activate_it_from_its_page(admin_client):
    page = admin_client.get(reverse("admin:journeys_journey_changelist"))
    assert reverse("admin:journeys_journey_playbooks") in page.content.decode()
    form = admin_client.get(reverse("admin:journeys_journey_playbooks"))
    assert "cart_abandonment" in form.content.decode()
    response = admin_client.post(reverse("admin:journeys_journey_playbooks"), {"playbook": "cart_abandonment"})
    journey = Journey.objects.get(playbook="cart_abandonment")
    assert response.url == reverse("admin:journeys_journey_change", args=[journey.pk])
    page = admin_client.get(response.url).content.decode()
    assert "장바구니 할인 알림" in page  # the steps inline and in the path overview
    assert 'data-action="activate"' in page
    admin_client.post(reverse("admin:journeys_journey_lifecycle", args=[journey.pk, "activate"]))
    journey.refresh_from_db()
    assert journey.status == Journey.Status.ACTIVE
    assert admin_client.get(reverse("admin:journeys_journey_lifecycle", args=[journey.pk, "pause"])).status_code == 403


def test_a_journey_that_cannot_run_is_not_activated_and_says_why(admin_client):
    journey = Journey.objects.create(name="빈 여정", trigger=Journey.Trigger.EVENT, trigger_event="Signed Up")
    response = admin_client.post(
        reverse("admin:journeys_journey_lifecycle", args=[journey.pk, "activate"]), follow=True
    )
    assert "여정에 단계가 없습니다." in response.content.decode()  # the admin speaks Korean by default
    journey.refresh_from_db()
    assert journey.status == Journey.Status.DRAFT


def test_enrollment_list_filters_and_retry_failed(admin_client):
    from journeys.playbooks import playbook_load

    journey = playbook_load(name="welcome")
    failed = Enrollment.objects.create(
        journey=journey,
        contact=ContactFactory(),
        current_step=journey.steps.first(),
        status=Enrollment.Status.FAILED,
        attempts=5,
        last_error="ActionError: webhook answered 500",
    )
    Enrollment.objects.create(journey=journey, contact=ContactFactory(), status=Enrollment.Status.COMPLETED)
    url = reverse("admin:journeys_enrollment_changelist")
    listing = admin_client.get(url, {"status__exact": "failed"}).content.decode()
    assert "webhook answered 500" in listing
    assert listing.count('class="action-select"') == 1
    admin_client.post(url, {"action": "retry_failed", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("active", 0)
    assert EnrollmentLog.objects.filter(enrollment=failed, action="retry").exists()
    detail = admin_client.get(reverse("admin:journeys_enrollment_change", args=[failed.pk])).content.decode()
    assert "retried by an operator" in detail


def test_dry_run_shows_the_path_times_and_rendered_message_without_sending(admin_client):
    import time_machine

    from campaigns.models import Send
    from crm.tests.factories import ConsentFactory
    from journeys.playbooks import playbook_load
    from journeys.tests.conftest import T0

    journey = playbook_load(name="cart_abandonment")
    contact = ContactFactory(external_id="u-77", name="김민준")
    ConsentFactory(contact=contact, purpose="kakao")
    url = reverse("admin:journeys_journey_dry_run", args=[journey.pk])
    assert url in admin_client.get(reverse("admin:journeys_journey_change", args=[journey.pk])).content.decode()
    with time_machine.travel(T0, tick=False):
        page = admin_client.post(url, {"contact": "u-77", "data": '{"product_name": "니트 가디건"}'})
    html = page.content.decode()
    assert "김민준님, 최근 장바구니에 담은 니트 가디건 3,000원 할인 중이에요!" in html
    assert "2026-12-07 14:30" in html  # 30 minutes after now, in the workspace time zone
    assert "no consent: ads" in html
    assert not Send.objects.exists()
    assert not Enrollment.objects.exists()
    bad = admin_client.post(url, {"contact": "nobody", "data": "[1]"}).content.decode()
    assert "errorlist" in bad


def test_the_journey_page_draws_the_diagram_with_live_counts(admin_client, shop, playbook):
    from datetime import timedelta

    from journeys.tests.conftest import T0

    journey = playbook("cart_abandonment")
    for user in ("a", "b", "c"):
        shop.customer(user)
        shop.track("Checkout Started", user=user, at=T0, product_name="니트")
    shop.track("Order Completed", user="c", at=T0 + timedelta(minutes=5), order_id="o1", total=1)
    page = admin_client.get(reverse("admin:journeys_journey_change", args=[journey.pk])).content.decode()
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="loop-journey-diagram"' in page
    _wait, remind = journey.steps.order_by("position")
    # 3 ran the wait; 2 wait to run the reminder (c exited during the wait, at the reminder step).
    assert "진입 3 · 대기 0 · 완료 0 · 이탈 0" in page
    assert "진입 0 · 대기 2 · 완료 0 · 이탈 1" in page
    assert f'data-step="{remind.pk}"' in page


def test_the_diagram_counts_completions_at_the_last_step_run(admin_client, django_capture_on_commit_callbacks):
    """The engine logs the end of a journey without a step; the diagram shows it on the step run last."""
    from journeys.tests.conftest import T0
    from journeys.tests.test_engine import consenting, enroll, journey, sms, tick

    j = journey(sms("안녕하세요"), sms("다시 안녕하세요"))
    enroll(j, consenting(2))
    tick(T0, django_capture_on_commit_callbacks)
    assert set(j.enrollments.values_list("status", flat=True)) == {Enrollment.Status.COMPLETED}

    page = admin_client.get(reverse("admin:journeys_journey_change", args=[j.pk])).content.decode()

    assert page.count("진입 2 · 대기 0 · 완료 0 · 이탈 0") == 1  # the first step
    assert page.count("진입 2 · 대기 0 · 완료 2 · 이탈 0") == 1  # the last: both completed after it


def test_the_contact_page_shows_the_contacts_journeys(admin_client):
    from journeys.playbooks import playbook_load

    journey = playbook_load(name="wishlist")
    contact = ContactFactory()
    Enrollment.objects.create(
        journey=journey, contact=contact, status=Enrollment.Status.EXITED, exit_reason="event: Order Completed"
    )
    page = admin_client.get(reverse("admin:crm_contact_change", args=[contact.pk])).content.decode()
    assert "찜 상품 리마인드" in page
    assert "event: Order Completed" in page


def test_an_analyst_sees_journeys_and_enrollments_but_changes_nothing(client):
    from crm.roles import ANALYST, MARKETER
    from crm.tests.factories import user_with_role
    from journeys.playbooks import playbook_load

    journey = playbook_load(name="welcome")
    failed = Enrollment.objects.create(
        journey=journey, contact=ContactFactory(), current_step=journey.steps.first(), status="failed"
    )
    client.force_login(user_with_role(ANALYST))
    listing = client.get(reverse("admin:journeys_enrollment_changelist"))
    assert listing.status_code == 200
    assert "retry_failed" not in listing.content.decode()
    client.post(
        reverse("admin:journeys_enrollment_changelist"), {"action": "retry_failed", "_selected_action": [failed.pk]}
    )
    failed.refresh_from_db()
    assert failed.status == "failed"
    assert client.post(reverse("admin:journeys_journey_lifecycle", args=[journey.pk, "activate"])).status_code == 403
    assert client.get(reverse("admin:journeys_journey_dry_run", args=[journey.pk])).status_code == 200
    client.force_login(user_with_role(MARKETER, username="marketer"))
    assert "retry_failed" in client.get(reverse("admin:journeys_enrollment_changelist")).content.decode()


def test_journey_changes_and_lifecycle_are_in_the_audit_trail(admin_client):
    from crm.models import AuditEntry
    from journeys.models import LeadForm
    from journeys.playbooks import playbook_load

    journey = playbook_load(name="lead_capture")
    admin_client.post(reverse("admin:journeys_journey_lifecycle", args=[journey.pk, "activate"]))
    entries = AuditEntry.objects.filter(object_id=str(journey.pk), object_type="journeys.journey").order_by("id")
    assert entries.last().changes["status"] == ["draft", "active"]
    assert AuditEntry.objects.filter(object_type="journeys.step").count() == 2
    form = LeadForm.objects.get()
    form.typeform_secret = "s3cret"
    form.save()
    assert "s3cret" not in str(list(AuditEntry.objects.values_list("changes", flat=True)))


def _form_data(form) -> dict:
    """POST data that resubmits a bound-able form as it is shown (JSON fields as JSON text)."""
    import json as _json

    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        key = form.add_prefix(name)
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                data[key] = "on"
        elif field.__class__.__name__ == "JSONField" and not isinstance(value, str):
            data[key] = _json.dumps(value)
        elif isinstance(value, list | tuple):
            data[key] = [str(v) for v in value]
        else:
            data[key] = str(value)
    return data


def test_editing_steps_in_the_admin_saves_them_and_counts_a_new_version(admin_client):
    from journeys.playbooks import playbook_load

    journey = playbook_load(name="cart_abandonment")
    url = reverse("admin:journeys_journey_change", args=[journey.pk])
    page = admin_client.get(url)
    data = _form_data(page.context["adminform"].form)
    formset = page.context["inline_admin_formsets"][0].formset
    data.update({f"{formset.prefix}-{k}": v for k, v in formset.management_form.initial.items()})
    for form in formset.forms:
        data.update(_form_data(form))
    send_form = next(f for f in formset.forms if f.instance.kind == "send")
    data[send_form.add_prefix("body")] = "#{고객명}님, 장바구니를 확인해 보세요!"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    journey.refresh_from_db()
    assert journey.version == 2
    assert journey.steps.get(kind="send").body == "#{고객명}님, 장바구니를 확인해 보세요!"
