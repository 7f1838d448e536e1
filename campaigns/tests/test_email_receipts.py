"""Receipts by anymail's tracking webhooks: Mailgun's and Postmark's recorded webhook payloads (with their
authentication) posted to /webhooks/anymail/…/tracking/ update the send and suppress the address on a hard bounce,
a complaint or an unsubscribe."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from django.test import Client

from campaigns.models import DeliveryStatus, Send, SkipReason, Suppression
from campaigns.services.sending import sends_process
from campaigns.tests.factories import CampaignFactory, SendFactory
from crm.models import Consent
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db

SIGNING_KEY = "mailgun-webhook-signing-key-test"
BASIC = "loop-webhooks:s3cret-webhook-password"
MAILGUN_URL = "/webhooks/anymail/mailgun/tracking/"
POSTMARK_URL = "/webhooks/anymail/postmark/tracking/"
MESSAGE_ID = "20261207030000.1.AAAA@mg.shop.example"
EVENT_AT = 1765076400.52  # 2025-12-07 03:00:00.52 UTC

#: A Mailgun webhook as Mailgun posts it (JSON, "event-data" with the signature block), here a permanent failure.
MAILGUN_FAILED = {
    "signature": {
        "timestamp": "1765076401",
        "token": "8c2a6d0f3e1b4a9c7d5e2f1a0b3c4d5e6f7a8b9c0d1e2f3a4b",
        "signature": "",
    },
    "event-data": {
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": EVENT_AT,
        "log-level": "error",
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "delivery-status": {
            "attempt-no": 1,
            "message": "550 5.1.1 The email account that you tried to reach does not exist.",
            "code": 550,
            "enhanced-code": "5.1.1",
            "description": "",
            "mx-host": "mx.example.com",
            "session-seconds": 0.42,
        },
        "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
        "envelope": {
            "transport": "smtp",
            "sender": "bounce+0a1b2c@mg.shop.example",
            "sending-ip": "209.61.154.250",
            "targets": "RECIPIENT",
        },
        "message": {
            "headers": {
                "to": "RECIPIENT",
                "message-id": MESSAGE_ID,
                "from": "루프샵 <news@shop.example>",
                "subject": "(광고) 주말 한정 할인",
            },
            "attachments": [],
            "size": 18734,
        },
        "recipient": "RECIPIENT",
        "recipient-domain": "example.com",
        "storage": {
            "url": "https://se.api.mailgun.net/v3/domains/mg.shop.example/messages/eyJwIjpm",
            "key": "eyJwIjpm",
        },
        "campaigns": [],
        "tags": [],
        "user-variables": {"loop_send_id": "SEND_ID"},
    },
}


@pytest.fixture(autouse=True)
def anymail_settings(settings):
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY, "WEBHOOK_SECRET": BASIC}


def basic_auth(credentials: str = BASIC) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(credentials.encode()).decode()}


def mailgun_event(send: Send, event: str, *, severity: str = "", key: str = SIGNING_KEY, **data) -> dict:
    payload = copy.deepcopy(MAILGUN_FAILED)
    body = payload["event-data"]
    body["event"] = event
    if severity:
        body["severity"] = severity
    else:
        body.pop("severity")
        body.pop("reason")
    if event != "failed":
        body.pop("delivery-status")
    body["recipient"] = body["envelope"]["targets"] = body["message"]["headers"]["to"] = send.address
    body["user-variables"] = {"loop_send_id": str(send.pk)}
    body.update(data)
    signature = payload["signature"]
    signature["signature"] = hmac.new(
        key.encode(), f"{signature['timestamp']}{signature['token']}".encode(), hashlib.sha256
    ).hexdigest()
    return payload


def post(payload, url: str = MAILGUN_URL, **headers):
    return Client(enforce_csrf_checks=True).post(
        url, data=json.dumps(payload), content_type="application/json", **(headers or basic_auth())
    )


@pytest.fixture
def sent():
    """An email send the backend delivered through Mailgun (message id recorded)."""
    contact = ContactFactory(email="minjun@example.com")
    ConsentFactory(contact=contact, purpose="email")
    return SendFactory(
        contact=contact,
        status=Send.Status.SENT,
        address=contact.email,
        backend="anymail",
        provider_message_id=f"<{MESSAGE_ID}>",
    )


def test_delivered(sent):
    response = post(mailgun_event(sent, "delivered"))

    assert response.status_code == 200
    sent.refresh_from_db()
    assert sent.delivery_status == DeliveryStatus.DELIVERED
    assert sent.delivered_at == datetime.fromtimestamp(EVENT_AT, tz=UTC)
    assert not Suppression.objects.exists()


def test_hard_bounce_records_the_reason_and_suppresses_email(sent):
    assert post(mailgun_event(sent, "failed", severity="permanent")).status_code == 200

    sent.refresh_from_db()
    assert sent.delivery_status == DeliveryStatus.BOUNCED
    assert "550 5.1.1 The email account that you tried to reach does not exist." in sent.delivery_detail
    suppression = Suppression.objects.get(contact=sent.contact)
    assert (suppression.channel, suppression.reason) == ("email", Suppression.Reason.BOUNCED)
    assert f"send {sent.pk}" in suppression.detail

    # The next email to this contact is skipped by the pipeline.
    later = SendFactory(contact=sent.contact, campaign=CampaignFactory())
    sends_process(send_ids=[later.pk])
    later.refresh_from_db()
    assert (later.status, later.skip_reason) == (Send.Status.SKIPPED, SkipReason.SUPPRESSED)


def test_a_temporary_failure_is_deferred_without_suppression(sent):
    post(mailgun_event(sent, "failed", severity="temporary"))

    sent.refresh_from_db()
    assert sent.delivery_status == DeliveryStatus.DEFERRED
    assert not Suppression.objects.exists()


def test_complaint_suppresses_and_a_late_delivery_receipt_does_not_downgrade_it(sent):
    post(mailgun_event(sent, "complained"))
    post(mailgun_event(sent, "delivered"))

    sent.refresh_from_db()
    assert sent.delivery_status == DeliveryStatus.COMPLAINED
    assert sent.delivered_at is not None
    assert Suppression.objects.get(contact=sent.contact).reason == Suppression.Reason.COMPLAINED


def test_opens_and_clicks_record_the_first_time_and_imply_delivery(sent):
    post(mailgun_event(sent, "opened", timestamp=EVENT_AT))
    post(mailgun_event(sent, "opened", timestamp=EVENT_AT + 60))
    post(mailgun_event(sent, "clicked", timestamp=EVENT_AT + 120, url="https://shop.example/sale"))

    sent.refresh_from_db()
    assert sent.opened_at == datetime.fromtimestamp(EVENT_AT, tz=UTC)
    assert sent.clicked_at == datetime.fromtimestamp(EVENT_AT + 120, tz=UTC)
    assert sent.delivery_status == DeliveryStatus.DELIVERED


def test_prefetch_opens_and_scanner_clicks_reported_by_the_provider_are_not_counted(sent):
    post(mailgun_event(sent, "opened", timestamp=EVENT_AT, **{"client-info": {"user-agent": "Mozilla/5.0"}}))
    scanner = {"client-info": {"user-agent": "Mozilla/5.0 (compatible; Proofpoint URL Defense)"}}
    post(mailgun_event(sent, "clicked", timestamp=EVENT_AT + 60, url="https://shop.example/sale", **scanner))
    sent.refresh_from_db()
    assert sent.opened_at is None  # Apple Mail Privacy Protection's prefetch
    assert sent.clicked_at is None
    assert sent.delivery_status == DeliveryStatus.DELIVERED  # still proof of delivery
    person = {"client-info": {"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}}
    post(mailgun_event(sent, "opened", timestamp=EVENT_AT + 120, **person))
    sent.refresh_from_db()
    assert sent.opened_at == datetime.fromtimestamp(EVENT_AT + 120, tz=UTC)


def test_an_unsubscribe_at_the_provider_withdraws_consent_and_suppresses(sent):
    post(mailgun_event(sent, "unsubscribed"))

    assert not Consent.objects.get(contact=sent.contact, purpose="email").granted
    assert Suppression.objects.get(contact=sent.contact).reason == Suppression.Reason.UNSUBSCRIBED
    sent.refresh_from_db()
    assert sent.delivery_status == DeliveryStatus.UNSUBSCRIBED


def test_a_batch_shares_one_message_id_and_only_the_recipients_send_is_updated(sent):
    other = SendFactory(
        contact=ContactFactory(email="seoyeon@example.com"),
        status=Send.Status.SENT,
        address="seoyeon@example.com",
        provider_message_id=sent.provider_message_id,
    )

    post(mailgun_event(other, "failed", severity="permanent"))

    sent.refresh_from_db()
    other.refresh_from_db()
    assert other.delivery_status == DeliveryStatus.BOUNCED
    assert sent.delivery_status == ""
    assert list(Suppression.objects.values_list("contact_id", flat=True)) == [other.contact_id]


def test_the_same_event_twice_changes_nothing_more(sent):
    payload = mailgun_event(sent, "failed", severity="permanent")
    post(payload)
    post(payload)

    assert Suppression.objects.count() == 1


@pytest.mark.parametrize(
    ("payload_key", "headers"),
    [
        ("wrong-signing-key", None),  # signature made with another key
        (SIGNING_KEY, {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"loop-webhooks:wrong").decode()}),
        (SIGNING_KEY, {"HTTP_X_NOTHING": "1"}),  # no basic auth at all
    ],
)
def test_unauthenticated_webhooks_are_refused(sent, payload_key, headers):
    response = post(mailgun_event(sent, "failed", severity="permanent", key=payload_key), **(headers or {}))

    assert response.status_code == 400
    sent.refresh_from_db()
    assert sent.delivery_status == ""
    assert not Suppression.objects.exists()


def test_an_event_for_a_message_we_did_not_send_is_ignored(sent):
    payload = mailgun_event(sent, "failed", severity="permanent")
    payload["event-data"]["message"]["headers"]["message-id"] = "someone-else@mg.shop.example"
    payload["event-data"]["user-variables"] = {}

    assert post(payload).status_code == 200
    assert not Suppression.objects.exists()


def test_postmark_hard_bounce_by_its_bounce_webhook(sent):
    """Postmark posts one JSON record per event (basic auth only); the message id is Postmark's MessageID."""
    sent.provider_message_id = "883953f4-6105-42a2-a16a-77a8eac79483"
    sent.save(update_fields=["provider_message_id"])
    record = {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "",
        "MessageID": sent.provider_message_id,
        "Metadata": {"loop_send_id": str(sent.pk)},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": sent.address,
        "From": "news@shop.example",
        "BouncedAt": "2025-12-07T03:00:00.5270259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "(광고) 주말 한정 할인",
        "Content": "",
    }

    assert post(record, url=POSTMARK_URL).status_code == 200
    assert post(record, url=POSTMARK_URL, HTTP_X_NOTHING="1").status_code == 400  # basic auth is required

    sent.refresh_from_db()
    assert sent.delivery_status == DeliveryStatus.BOUNCED
    assert "550 5.1.1" in sent.delivery_detail
    assert Suppression.objects.get(contact=sent.contact).reason == Suppression.Reason.BOUNCED
