"""The public pages (no login): signed links cannot be forged, altered, moved to another contact or used as open
redirects; every POST view is CSRF-protected except the documented exceptions; public pages are rate-limited."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from campaigns.unsubscribe import make_token
from config.tests.routes import all_routes
from crm.models import Consent
from crm.tests.factories import ConsentFactory, ContactFactory
from journeys.models import Enrollment, Journey
from journeys.services.surveys import SURVEY_MAX_AGE, survey_token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client():
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def two_contacts():
    contacts = [ContactFactory(email=f"{name}@example.com") for name in ("minjun", "seoyeon")]
    for contact in contacts:
        ConsentFactory(contact=contact, purpose="email")
    return contacts


def email_granted(contact) -> bool:
    return Consent.objects.get(contact=contact, purpose="email").granted


def unsubscribe_path(contact, channel="email") -> str:
    return f"/u/{make_token(contact_id=contact.pk, channel=channel, send_id=None)}/"


def altered(token: str) -> list[str]:
    """Every way of changing a signed token a visitor could try: a byte of the payload, of the signature, the payload
    of another token with this one's signature."""
    payload, _sep, signature = token.rpartition(":")
    flip = {"A": "B", "B": "A"}
    variants = [
        payload[:-1] + flip.get(payload[-1], "A") + ":" + signature,
        payload + ":" + signature[:-1] + flip.get(signature[-1], "A"),
        payload + ":",
        payload,
        token + "x",
    ]
    return [v for v in variants if v != token]


# --- Unsubscribe links ------------------------------------------------------------------------------------------


def test_an_unsubscribe_link_cannot_be_forged_or_altered(client, two_contacts):
    minjun, seoyeon = two_contacts
    token = unsubscribe_path(minjun).split("/")[2]
    forged = [
        "forged",
        signing.dumps({"c": seoyeon.pk, "ch": "email"}),  # no salt
        signing.dumps({"c": seoyeon.pk, "ch": "email"}, salt="journeys.survey"),  # another purpose's salt
        signing.dumps({"c": seoyeon.pk, "ch": "email"}, salt="loop.campaigns.unsubscribe", key="x" * 50),  # not our key
        *altered(token),
    ]
    for bad in forged:
        assert client.post(f"/u/{bad}/", {"List-Unsubscribe": "One-Click"}).status_code == 400, bad
    assert email_granted(minjun)
    assert email_granted(seoyeon)


def test_an_unsubscribe_link_acts_for_its_own_contact_only(client, two_contacts):
    minjun, seoyeon = two_contacts
    path = unsubscribe_path(minjun)
    assert client.post(path, {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert (
        client.post(path, {"List-Unsubscribe": "One-Click", "c": seoyeon.pk, "contact": seoyeon.pk}).status_code == 200
    )
    assert not email_granted(minjun)
    assert email_granted(seoyeon)  # replaying minjun's link, whatever the body says, never touches seoyeon


@pytest.mark.parametrize("param", ["next", "redirect", "redirect_to", "return_to", "url"])
def test_public_pages_are_no_open_redirects(client, two_contacts, param):
    minjun = two_contacts[0]
    journey = Journey.objects.create(name="after service")
    enrollment = Enrollment.objects.create(journey=journey, contact=minjun)
    evil = "https://evil.example/phish"
    for path in (unsubscribe_path(minjun), f"/s/{survey_token(enrollment.pk)}"):
        for response in (client.get(path, {param: evil}), client.get(f"{path}?{param}=//evil.example")):
            assert response.status_code == 200
            assert "evil.example" not in response.headers.get("Location", "")
            assert b"evil.example" not in response.content


# --- Survey links -----------------------------------------------------------------------------------------------


@pytest.fixture
def runs(two_contacts):
    journey = Journey.objects.create(name="after service")
    return [Enrollment.objects.create(journey=journey, contact=contact) for contact in two_contacts]


def test_a_survey_link_cannot_be_forged_altered_or_moved_to_another_run(runs):
    client = Client()  # the survey form carries its CSRF token; this test is about the link
    mine, other = runs
    token = survey_token(mine.pk)
    forged = [
        "forged",
        signing.dumps({"e": other.pk}),
        signing.dumps({"e": other.pk}, salt="loop.campaigns.unsubscribe"),
        make_token(contact_id=other.contact_id, channel="email", send_id=None),  # an unsubscribe token
        *altered(token),
    ]
    for bad in forged:
        assert client.post(f"/s/{bad}", {"score": "1"}).status_code == 404, bad
    assert client.post(f"/s/{token}", {"score": "5", "e": other.pk}).status_code == 200
    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.context["survey_score"] == 5
    assert "survey_score" not in other.context


def test_a_survey_link_expires(runs):
    token = survey_token(runs[0].pk)
    with time_machine.travel(timezone.now() + SURVEY_MAX_AGE + timedelta(minutes=1)):
        response = Client().get(f"/s/{token}")
    assert response.status_code == 404
    assert "survey_score" not in Enrollment.objects.get(pk=runs[0].pk).context


# --- CSRF -------------------------------------------------------------------------------------------------------

#: Views that take POSTs without a CSRF token, and why (docs/security.md). Everything else must be protected.
CSRF_EXEMPT = {
    "u/<str:token>/": "unsubscribe: RFC 8058 one-click POSTs from mailbox providers; the signed token is the authority",
    "forms/<slug:slug>": "lead forms: other sites post to them; Typeform posts are signed",
    "webhooks/anymail/": "ESP webhooks: authenticated by the webhook secret (basic auth) or the ESP's signature",
    "webhooks/twilio/": "Twilio status callbacks: authenticated by the X-Twilio-Signature HMAC of the auth token",
    "webhooks/solapi/": "Solapi delivery reports: authenticated by the secret in the URL (Solapi does not sign them)",
    "api/": "REST API: authenticated by API key, never by a cookie",
}


def test_csrf_middleware_is_on():
    assert "django.middleware.csrf.CsrfViewMiddleware" in settings.MIDDLEWARE


def test_no_view_is_csrf_exempt_except_the_documented_ones():
    routes = list(all_routes())
    assert len(routes) > 100  # the admin's views are in the walk
    exempt = sorted(route for route, callback in routes if getattr(callback, "csrf_exempt", False))
    unexplained = [route for route in exempt if not any(route.startswith(prefix) for prefix in CSRF_EXEMPT)]
    assert unexplained == []
    assert "u/<str:token>/" in exempt
    assert "forms/<slug:slug>" in exempt


def test_forms_refuse_a_post_without_the_csrf_token(client, runs, admin_user):
    assert client.post("/admin/login/", {"username": "admin", "password": "password"}).status_code == 403
    assert client.post(f"/s/{survey_token(runs[0].pk)}", {"score": "5"}).status_code == 403
    assert "survey_score" not in Enrollment.objects.get(pk=runs[0].pk).context
    assert client.post("/i18n/setlang/", {"language": "en"}).status_code == 403
    client.force_login(admin_user)
    contact = runs[0].contact
    response = client.post(f"/admin/crm/contact/{contact.pk}/change/", {"email": "evil@example.com"})
    assert response.status_code == 403
    contact.refresh_from_db()
    assert contact.email == "minjun@example.com"


# --- Rate limits ------------------------------------------------------------------------------------------------


@override_settings(LOOP_BAD_LINK_RATE_LIMIT="5/min", LOOP_SIGNED_LINK_RATE_LIMIT="3/min")
@pytest.mark.parametrize("prefix", ["/u/", "/s/"])
def test_bad_tokens_are_limited_per_address(client, runs, prefix):
    suffix = "/" if prefix == "/u/" else ""
    for i in range(5):
        assert client.get(f"{prefix}forged-{i}{suffix}", REMOTE_ADDR="203.0.113.7").status_code in (400, 404)
    refused = client.get(f"{prefix}forged-5{suffix}", REMOTE_ADDR="203.0.113.7")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    good = unsubscribe_path(runs[0].contact) if prefix == "/u/" else f"/s/{survey_token(runs[0].pk)}"
    assert client.get(good, REMOTE_ADDR="203.0.113.7").status_code == 429  # the address is refused meanwhile
    assert client.get(good, REMOTE_ADDR="198.51.100.2").status_code == 200  # others are not
    with time_machine.travel(timezone.now() + timedelta(minutes=1)):
        assert client.get(good, REMOTE_ADDR="203.0.113.7").status_code == 200  # the next window


@override_settings(LOOP_SIGNED_LINK_RATE_LIMIT="3/min")
def test_a_valid_link_is_limited_per_link_not_per_address(client):
    contacts = [ContactFactory(email=f"c{i}@example.com") for i in range(8)]
    # A mailbox provider posts the one-click unsubscribes of many recipients from one address: none is refused.
    paths = [unsubscribe_path(contact) for contact in contacts]
    for path in paths:
        assert client.post(path, {"List-Unsubscribe": "One-Click"}, REMOTE_ADDR="209.85.0.1").status_code == 200
    path = paths[0]
    statuses = [client.get(path, REMOTE_ADDR=f"198.51.100.{i}").status_code for i in range(3)]
    assert statuses == [200, 200, 429]  # the one link hammered from many addresses


OFF_SITE = ["https://evil.example/phish", "//evil.example", "/\\evil.example", "https:evil.example"]


@pytest.mark.parametrize("evil", OFF_SITE)
def test_the_language_switch_and_the_admin_login_do_not_redirect_off_site(evil, admin_user):
    client = Client()
    response = client.post("/i18n/setlang/", {"language": "en", "next": evil})
    assert response.status_code == 302
    assert "evil.example" not in response["Location"]
    response = client.post(f"/admin/login/?next={evil}", {"username": "admin", "password": "password"})
    assert response.status_code == 302
    assert "evil.example" not in response["Location"]
