"""Lead capture: the public form endpoint (Typeform with its signature, Google Forms, HTML) → contact created or
updated → the lead_capture playbook sends the resource email and notifies the team."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import pytest
import responses
from django.test import override_settings

from campaigns.models import OutboxMessage
from crm.models import Consent, Contact
from crm.tests.factories import ContactFactory
from journeys.models import Enrollment, LeadForm
from journeys.tests.conftest import T0

pytestmark = pytest.mark.django_db
SLACK = "https://hooks.slack.com/services/T0/B0/lead"

#: A Typeform form_response webhook (shape of https://www.typeform.com/developers/webhooks/example-payload/).
TYPEFORM = {
    "event_id": "01HABCDEF",
    "event_type": "form_response",
    "form_response": {
        "form_id": "lT4Z3j",
        "token": "a3a12ec67a1365927098a606107fac15",
        "submitted_at": "2026-12-07T05:00:00Z",
        "hidden": {"utm_source": "instagram"},
        "definition": {"id": "lT4Z3j", "title": "전자책 신청"},
        "answers": [
            {"type": "text", "text": "윤도윤", "field": {"id": "f1", "type": "short_text", "ref": "name"}},
            {
                "type": "email",
                "email": "doyun@example.com",
                "field": {"id": "f2", "type": "email", "ref": "work_email"},
            },
            {"type": "boolean", "boolean": True, "field": {"id": "f3", "type": "yes_no", "ref": "consent"}},
            {
                "type": "choice",
                "choice": {"label": "마케팅"},
                "field": {"id": "f4", "type": "multiple_choice", "ref": "team"},
            },
        ],
    },
}


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@pytest.fixture
def lead_journey(playbook):
    journey = playbook("lead_capture")
    form = LeadForm.objects.get(journey=journey)
    form.typeform_secret = "tf-secret"
    form.save()
    return form


@responses.activate
@override_settings(LOOP_SLACK_WEBHOOK_URL=SLACK)
def test_typeform_submission_creates_the_contact_sends_the_resource_and_notifies_the_team(
    client, shop, lead_journey, settings
):
    settings.LOOP_TRACK_CLICKS = False  # the resource link as written (click tracking: campaigns test_tracking.py)
    responses.post(SLACK, body="ok")
    body = json.dumps(TYPEFORM, ensure_ascii=False).encode()
    response = client.post(
        f"/forms/{lead_journey.slug}",
        body,
        content_type="application/json",
        HTTP_TYPEFORM_SIGNATURE=sign(body, "tf-secret"),
    )
    assert response.status_code == 201
    assert response.json() == {"ok": True, "entered": True}
    contact = Contact.objects.get(email="doyun@example.com")
    assert contact.name == "윤도윤"
    assert Consent.objects.get(contact=contact).purpose == "email"  # the consent checkbox
    enrollment = Enrollment.objects.get(contact=contact)
    assert enrollment.context["utm_source"] == "instagram"
    assert enrollment.context["team"] == "마케팅"
    shop.tick(T0 + timedelta(seconds=15))
    message = OutboxMessage.objects.get(send__contact=contact)
    assert message.subject == "요청하신 자료를 보내 드려요"
    assert "https://example.com/resource.pdf" in message.body
    assert json.loads(responses.calls[0].request.body) == {"text": "새 리드: 윤도윤 (doyun@example.com), 폼 resource"}


def test_a_typeform_submission_without_a_valid_signature_is_refused(client, lead_journey):
    body = json.dumps(TYPEFORM).encode()
    for header in ({}, {"HTTP_TYPEFORM_SIGNATURE": sign(body, "wrong")}):
        response = client.post(f"/forms/{lead_journey.slug}", body, content_type="application/json", **header)
        assert response.status_code == 401
    assert not Contact.objects.exists()


def test_google_forms_json_updates_the_existing_contact_by_email(client, lead_journey):
    LeadForm.objects.filter(pk=lead_journey.pk).update(typeform_secret="")
    existing = ContactFactory(email="Minjun@Example.com", name="김민준", phone="")
    body = {"responses": {"이메일": "minjun@example.com", "전화번호": "010-1234-5678", "이름": "다른 이름"}}
    response = client.post(f"/forms/{lead_journey.slug}", body, content_type="application/json")
    assert response.status_code == 201
    existing.refresh_from_db()
    assert (existing.phone, existing.name) == ("+821012345678", "김민준")  # fills blanks, keeps what is known
    assert Contact.objects.count() == 1


def test_html_form_redirects_and_bad_input_is_a_400_with_field_errors(client, lead_journey):
    LeadForm.objects.filter(pk=lead_journey.pk).update(
        typeform_secret="", redirect_url="https://shop.example.com/thanks"
    )
    ok = client.post(f"/forms/{lead_journey.slug}", {"email": "a@example.com", "name": "강지우", "website": ""})
    assert ok.status_code == 302
    assert ok["Location"] == "https://shop.example.com/thanks"
    bad = client.post(f"/forms/{lead_journey.slug}", {"email": "not-an-email", "phone": "12"})
    assert bad.status_code == 400
    bot = client.post(f"/forms/{lead_journey.slug}", {"email": "b@example.com", "website": "http://spam"})
    assert bot.status_code == 400
    api = client.post(f"/forms/{lead_journey.slug}", {"name": "no contact"}, content_type="application/json")
    assert api.status_code == 400
    assert set(api.json()["errors"]) == {"email"}
    assert list(Contact.objects.values_list("email", flat=True)) == ["a@example.com"]
    assert client.get(f"/forms/{lead_journey.slug}").status_code == 405
    assert client.post("/forms/unknown", {"email": "c@example.com"}).status_code == 404


@override_settings(LOOP_LEAD_FORM_RATE_LIMIT="2/min")
def test_submissions_from_one_address_are_rate_limited(client, lead_journey):
    LeadForm.objects.filter(pk=lead_journey.pk).update(typeform_secret="")
    codes = [client.post(f"/forms/{lead_journey.slug}", {"email": f"r{i}@example.com"}).status_code for i in range(3)]
    assert codes == [200, 200, 429]
    assert Contact.objects.count() == 2
