"""The signed unsubscribe page /u/<token>/: confirm page (Korean/English), POST and RFC 8058 one-click without a CSRF
token, consent history and suppression, idempotence, forged tokens; the mailto form by inbound email."""

from __future__ import annotations

import pytest
from django.core import signing
from django.test import Client

from campaigns.models import Campaign, Suppression
from campaigns.services.suppressions import unsubscribe_by_mail
from campaigns.tests.factories import CampaignFactory, SendFactory
from campaigns.unsubscribe import SALT, make_token, unsubscribe_url
from crm.models import Consent, ConsentChange
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    """Django's client with CSRF checks on, as a browser or a mailbox provider meets them."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def subscriber():
    contact = ContactFactory(email="minjun@example.com")
    ConsentFactory(contact=contact, purpose="email")
    ConsentFactory(contact=contact, purpose="ads")
    send = SendFactory(contact=contact)
    return contact, send


def path_for(contact, send, channel="email") -> str:
    return f"/u/{make_token(contact_id=contact.pk, channel=channel, send_id=send.pk if send else None)}/"


def email_consent(contact) -> bool:
    return Consent.objects.get(contact=contact, purpose="email").granted


def test_get_shows_a_confirmation_in_korean_and_changes_nothing(client, subscriber):
    contact, send = subscriber

    response = client.get(path_for(contact, send), HTTP_ACCEPT_LANGUAGE="ko")

    assert response.status_code == 200
    page = response.content.decode()
    assert "이메일(으)로 메시지를 더 이상 받지 않으시겠어요?" in page
    assert "m*****@example.com" in page
    assert "minjun@" not in page
    assert '<form method="post"' in page
    assert email_consent(contact)
    assert not Suppression.objects.exists()
    assert response["Cache-Control"].startswith("max-age=0")


def test_get_in_english(client, subscriber):
    contact, send = subscriber

    response = client.get(path_for(contact, send) + "?lang=en")

    assert "Do you want to stop receiving messages by Email?" in response.content.decode()


def test_post_from_the_page_unsubscribes_without_a_csrf_token(client, subscriber):
    contact, send = subscriber

    response = client.post(path_for(contact, send))

    assert response.status_code == 200
    assert "수신 거부되었습니다" in response.content.decode()
    assert not email_consent(contact)
    assert Consent.objects.get(contact=contact, purpose="ads").granted  # only this channel
    change = ConsentChange.objects.get(contact=contact, purpose="email", granted=False)
    assert change.source == f"unsubscribe:link:send-{send.pk}"
    suppression = Suppression.objects.get(contact=contact)
    assert (suppression.channel, suppression.reason) == ("email", Suppression.Reason.UNSUBSCRIBED)


def test_rfc8058_one_click_post(client, subscriber, settings):
    settings.LOOP_PUBLIC_URL = "https://crm.shop.example"
    contact, send = subscriber
    url = unsubscribe_url(contact_id=contact.pk, channel="email", send_id=send.pk)

    response = client.post(
        url.removeprefix("https://crm.shop.example"),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 200
    assert not email_consent(contact)
    assert ConsentChange.objects.get(contact=contact, granted=False).source == (f"unsubscribe:one-click:send-{send.pk}")
    assert Suppression.objects.filter(contact=contact, channel="email").count() == 1


def test_unsubscribing_twice_changes_nothing_more(client, subscriber):
    contact, send = subscriber
    client.post(path_for(contact, send))

    response = client.post(
        path_for(contact, send), data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 200
    assert ConsentChange.objects.filter(contact=contact, granted=False).count() == 1
    assert Suppression.objects.filter(contact=contact).count() == 1


def test_an_existing_suppression_is_kept(client, subscriber):
    contact, send = subscriber
    Suppression.objects.create(contact=contact, channel="email", reason=Suppression.Reason.BOUNCED)

    client.post(path_for(contact, send))

    assert Suppression.objects.get(contact=contact).reason == Suppression.Reason.BOUNCED
    assert not email_consent(contact)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # signature altered
        lambda token: token.replace(
            token.split(":")[0], signing.dumps({"c": 999, "ch": "email"}, salt=SALT).split(":")[0]
        ),
        lambda token: signing.dumps({"c": 1, "ch": "email"}, salt="another.purpose"),  # another salt
        lambda token: signing.dumps({"contact": 1}, salt=SALT),  # signed, but not an unsubscribe request
        lambda token: signing.dumps({"c": 1, "ch": "fax"}, salt=SALT),  # unknown channel
        lambda token: "garbage",
    ],
)
def test_forged_or_altered_tokens_are_refused(client, subscriber, mangle):
    contact, send = subscriber
    token = make_token(contact_id=contact.pk, channel="email", send_id=send.pk)

    get = client.get(f"/u/{mangle(token)}/")
    post = client.post(
        f"/u/{mangle(token)}/", data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )

    assert get.status_code == post.status_code == 400
    assert "올바르지 않은 링크입니다" in get.content.decode()
    assert email_consent(contact)
    assert not Suppression.objects.exists()


def test_a_token_for_an_erased_or_deleted_contact_is_404(client, subscriber):
    contact, send = subscriber
    path = path_for(contact, send)
    contact.delete()

    assert client.get(path).status_code == 404
    assert client.post(path).status_code == 404


def test_unsubscribing_from_the_consent_notice_withdraws_advertising_consent(client, subscriber):
    contact, _send = subscriber
    notice = CampaignFactory(builtin=Campaign.Builtin.ADS_RECONSENT_EMAIL)
    send = SendFactory(contact=contact, campaign=notice)

    client.post(path_for(contact, send))

    assert not email_consent(contact)
    assert not Consent.objects.get(contact=contact, purpose="ads").granted


def test_mailto_unsubscribe_by_inbound_email(subscriber):
    contact, send = subscriber
    token = make_token(contact_id=contact.pk, channel="email", send_id=send.pk)

    assert unsubscribe_by_mail(subject=f"unsubscribe {token}", esp_name="Mailgun")
    assert not unsubscribe_by_mail(subject="unsubscribe not-a-token", esp_name="Mailgun")

    assert not email_consent(contact)
    assert ConsentChange.objects.get(contact=contact, granted=False).source == (
        f"unsubscribe:mailto:Mailgun:send-{send.pk}"
    )
    assert Suppression.objects.filter(contact=contact, channel="email").exists()


def test_an_inbound_email_to_the_mailto_address_unsubscribes(subscriber):
    """anymail's inbound signal (any ESP's inbound webhook) reaches the receiver with the mailed subject."""
    from anymail.inbound import AnymailInboundMessage
    from anymail.signals import AnymailInboundEvent, EventType, inbound

    contact, send = subscriber
    token = make_token(contact_id=contact.pk, channel="email", send_id=send.pk)
    message = AnymailInboundMessage.construct(
        from_email="minjun@example.com", to="unsubscribe@shop.example", subject=f"unsubscribe {token}", text=""
    )

    inbound.send(
        sender=object, event=AnymailInboundEvent(event_type=EventType.INBOUND, message=message), esp_name="Postmark"
    )

    assert not email_consent(contact)
    assert Suppression.objects.filter(contact=contact, channel="email").exists()
