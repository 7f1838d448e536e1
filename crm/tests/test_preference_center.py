"""The preference center: a signed link per contact, the page in Korean and English, consent changes recorded
with their history, forged links refused, CSRF enforced."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import signing
from django.test import Client
from django.utils import timezone

from campaigns.personalization import build_render_data, render_text, template_errors
from crm.models import Consent, ConsentChange
from crm.preference_center import SALT, make_token, preference_center_path, preference_center_url, read_token
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=ZoneInfo("Asia/Seoul"))


@pytest.fixture
def contact():
    contact = ContactFactory(locale="")
    ConsentFactory(contact=contact, purpose="email", granted=True)
    ConsentFactory(contact=contact, purpose="ads", granted=True)
    ConsentFactory(contact=contact, purpose="sms", granted=False)
    return contact


def states(contact) -> dict[str, bool]:
    return dict(Consent.objects.filter(contact=contact).values_list("purpose", "granted"))


def test_the_page_shows_the_current_choices_in_korean(client, contact):
    response = client.get(preference_center_path(contact.pk), HTTP_ACCEPT_LANGUAGE="ko")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="ko">' in html
    assert "수신 설정" in html
    assert 'name="viewport"' in html
    form = response.context["form"]
    assert form.initial == {
        "email": True,
        "sms": False,
        "kakao": False,
        "push": False,
        "ads": True,
        "ads_night": False,
    }
    assert 'name="csrfmiddlewaretoken"' in html
    assert response["Cache-Control"].startswith("max-age=0")
    assert response["Referrer-Policy"] == "same-origin"


def test_english_by_browser_or_by_choice(client, contact):
    english = client.get(preference_center_path(contact.pk), HTTP_ACCEPT_LANGUAGE="en")
    assert "Message preferences" in english.content.decode()
    chosen = client.get(preference_center_path(contact.pk) + "?lang=en", HTTP_ACCEPT_LANGUAGE="ko")
    assert '<html lang="en">' in chosen.content.decode()


def test_saving_records_each_change_with_time_and_source(contact):
    client = Client(enforce_csrf_checks=True)
    path = preference_center_path(contact.pk)
    page = client.get(path)
    token = page.context["csrf_token"]
    with time_machine.travel(NOW, tick=False):
        response = client.post(
            path, {"csrfmiddlewaretoken": str(token), "email": "on", "sms": "on", "push": "on", "save": ""}
        )

    assert response.status_code == 302
    assert response["Location"].startswith(f"{path}?saved=3")
    assert states(contact) == {"email": True, "sms": True, "push": True, "ads": False}
    history = ConsentChange.objects.filter(contact=contact)
    changes = set(history.values_list("purpose", "granted", "source", "changed_at"))
    assert changes == {
        ("sms", True, "preference_center", NOW),
        ("push", True, "preference_center", NOW),
        ("ads", False, "preference_center", NOW),
    }
    confirmation = client.get(response["Location"])
    assert "저장" in confirmation.content.decode()


def test_stop_all_withdraws_every_consent(client, contact):
    response = client.post(preference_center_path(contact.pk), {"email": "on", "withdraw_all": ""})
    assert response.status_code == 302
    assert set(states(contact).values()) == {False}
    assert ConsentChange.objects.filter(contact=contact, source="preference_center").count() == 2  # email, ads


def test_saving_without_changes_writes_nothing(client, contact):
    client.post(preference_center_path(contact.pk), {"email": "on", "ads": "on"})
    assert not ConsentChange.objects.filter(contact=contact).exists()


def test_a_post_without_the_csrf_token_is_refused(contact):
    client = Client(enforce_csrf_checks=True)
    response = client.post(preference_center_path(contact.pk), {"sms": "on"})
    assert response.status_code == 403
    assert states(contact)["sms"] is False


@pytest.mark.parametrize(
    "token",
    [
        "forged",
        "eyJjIjoxfQ:1vAAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        signing.dumps({"c": 1}, salt="loop.campaigns.unsubscribe"),  # signed for something else
        signing.dumps({"contact": 1}, salt=SALT),  # right salt, no contact id
    ],
    ids=["forged", "bad-signature", "other-salt", "no-contact-id"],  # the signed ones carry a timestamp: fixed ids
)
def test_forged_or_foreign_tokens_answer_400(client, contact, token):
    response = client.get(f"/p/{token}/")
    assert response.status_code == 400
    response = client.post(f"/p/{token}/", {"sms": "on"})
    assert response.status_code == 400
    assert states(contact)["sms"] is False


def test_an_altered_token_for_another_contact_is_refused(client, contact):
    other = ContactFactory()
    payload, *rest = make_token(contact.pk).split(":")
    assert signing.b64_decode(payload.encode()) == f'{{"c":{contact.pk}}}'.encode()
    tampered = ":".join([signing.b64_encode(f'{{"c":{other.pk}}}'.encode()).decode(), *rest])
    assert client.get(f"/p/{tampered}/").status_code == 400
    assert client.get(f"/p/{make_token(other.pk)}/").status_code == 200


def test_an_erased_contact_is_not_found(client, contact):
    contact.erased_at = NOW
    contact.save(update_fields=["erased_at"])
    assert client.get(preference_center_path(contact.pk)).status_code == 404


def test_link_builder_and_personalization_variable(settings, contact, time_machine):
    time_machine.move_to(timezone.now(), tick=False)  # the links carry a timestamp: built twice, the same second
    settings.LOOP_PUBLIC_URL = "https://crm.example.com"
    url = preference_center_url(contact.pk)
    assert url.startswith("https://crm.example.com/p/")
    assert read_token(url.rsplit("/", 2)[-2]) == contact.pk

    data = build_render_data([contact.pk])[contact.pk]
    assert render_text("수신 설정: #{수신설정 링크}", data) == f"수신 설정: {url}"
    assert render_text("#{preferences_url}", data) == url

    settings.LOOP_PUBLIC_URL = ""
    assert render_text("#{수신설정 링크|고객센터로 문의}", data) == "고객센터로 문의"
    assert template_errors("수신 설정: #{수신설정 링크} #{수신 설정 링크} #{preferences_url}") == []
