"""Delivery receipts: Twilio's status callback (X-Twilio-Signature) and Solapi's reports (secret in the URL), with
valid and forged authentication, delivered/failed updates, suppression of invalid numbers, repeated receipts, and
the KakaoTalk → SMS fallback started by a report."""

from __future__ import annotations

import json

import pytest
import responses
from django.test import override_settings
from django.urls import reverse

from campaigns.models import DeliveryStatus, Send, Suppression
from campaigns.tests.factories import CampaignFactory, SenderProfileFactory, SendFactory
from campaigns.tests.test_sms_backends import SEND_URL, SOLAPI, accepted, group
from campaigns.webhooks import twilio_signature
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db

TWILIO = override_settings(LOOP_TWILIO_AUTH_TOKEN="twilio-token", LOOP_PUBLIC_URL="https://crm.example.com")
SOLAPI_HOOK = override_settings(LOOP_SOLAPI_WEBHOOK_SECRET="s3cr3t-in-the-url")


def sent(channel: str = "sms", provider_id: str = "SM1f0e8ae6ade43cb3c0ce4525424e404f", **fields) -> Send:
    return SendFactory(
        campaign=CampaignFactory(channel=channel),
        channel=channel,
        status=Send.Status.SENT,
        provider_message_id=provider_id,
        **fields,
    )


def twilio_post(client, params: dict, *, signature: str | None = None):
    url = reverse("campaigns_webhooks:twilio")
    signature = signature or twilio_signature("https://crm.example.com" + url, params, "twilio-token")
    return client.post(url, params, HTTP_X_TWILIO_SIGNATURE=signature)


@TWILIO
def test_twilio_delivered_with_a_valid_signature(client):
    send = sent()
    params = {
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "MessageSid": send.provider_message_id,
        "MessageStatus": "delivered",
        "To": "+821012345678",
        "From": "+8215880001",
        "ApiVersion": "2010-04-01",
    }
    assert twilio_post(client, params).status_code == 204
    send.refresh_from_db()
    assert send.delivery_status == DeliveryStatus.DELIVERED
    assert send.delivered_at is not None
    assert send.status == Send.Status.SENT
    # Twilio repeats callbacks: a second one changes nothing, a late "undelivered" does not undo delivery
    assert twilio_post(client, params).status_code == 204
    assert twilio_post(client, params | {"MessageStatus": "undelivered", "ErrorCode": "30003"}).status_code == 204
    send.refresh_from_db()
    assert send.delivery_status == DeliveryStatus.DELIVERED
    assert send.delivery_detail == ""
    assert not Suppression.objects.exists()


@TWILIO
def test_twilio_forged_signature_is_refused(client):
    send = sent()
    params = {"MessageSid": send.provider_message_id, "MessageStatus": "delivered"}
    forged = twilio_signature("https://crm.example.com/webhooks/twilio/status/", params, "not-the-token")
    assert twilio_post(client, params, signature=forged).status_code == 403
    # a valid signature of other parameters does not authenticate these
    other = twilio_signature(
        "https://crm.example.com/webhooks/twilio/status/", params | {"MessageStatus": "x"}, "twilio-token"
    )
    assert twilio_post(client, params, signature=other).status_code == 403
    assert client.post(reverse("campaigns_webhooks:twilio"), params).status_code == 403
    send.refresh_from_db()
    assert send.delivery_status == ""


@TWILIO
def test_twilio_undelivered_unknown_number_fails_and_suppresses(client):
    send = sent()
    params = {"MessageSid": send.provider_message_id, "MessageStatus": "undelivered", "ErrorCode": "30005"}
    assert twilio_post(client, params).status_code == 204
    send.refresh_from_db()
    assert send.delivery_status == DeliveryStatus.FAILED
    assert send.delivery_detail == "Twilio undelivered 30005"
    assert send.delivered_at is None
    assert Suppression.objects.get().channel == "sms"
    # a failure that is not about the number does not suppress
    other = sent(provider_id="SM2")
    twilio_post(client, {"MessageSid": "SM2", "MessageStatus": "failed", "ErrorCode": "30008"})
    other.refresh_from_db()
    assert other.delivery_status == DeliveryStatus.FAILED
    assert Suppression.objects.count() == 1


@TWILIO
def test_twilio_get_and_unknown_messages(client):
    assert client.get(reverse("campaigns_webhooks:twilio")).status_code == 405
    assert twilio_post(client, {"MessageSid": "SMunknown", "MessageStatus": "delivered"}).status_code == 204
    assert twilio_post(client, {"MessageSid": "", "MessageStatus": ""}).status_code == 400


def solapi_post(client, reports, secret: str = "s3cr3t-in-the-url"):
    url = reverse("campaigns_webhooks:solapi", args=[secret])
    return client.post(url, json.dumps(reports), content_type="application/json")


def report(message_id: str, code: str, text: str, kind: str = "SMS") -> dict:
    return {
        "eventDataId": f"EV{message_id}",
        "retryCount": 0,
        "data": {
            "messageId": message_id,
            "groupId": "G4V20261124120000ABCDEFGHIJKLMNO",
            "type": kind,
            "to": "01012345678",
            "from": "15880001",
            "statusCode": code,
            "statusMessage": text,
            "dateProcessed": "2026-11-24T03:00:01.000Z",
            "dateReported": "2026-11-24T03:00:05.000Z",
            "customFields": {},
        },
    }


@SOLAPI_HOOK
def test_solapi_reports_with_the_secret(client):
    delivered = sent(provider_id="M4V0001")
    bad_number = sent(provider_id="M4V0002")
    waiting = sent(provider_id="M4V0003")
    response = solapi_post(
        client,
        [
            report("M4V0001", "4000", "수신완료"),
            report("M4V0002", "3059", "수신번호 형식 오류"),
            report("M4V0003", "3000", "이통사로 접수 예정"),
        ],
    )
    assert response.status_code == 200
    assert response.json() == {"received": 3}
    for send in (delivered, bad_number, waiting):
        send.refresh_from_db()
    assert delivered.delivery_status == DeliveryStatus.DELIVERED
    assert bad_number.delivery_status == DeliveryStatus.FAILED
    assert bad_number.delivery_detail == "Solapi 3059: 수신번호 형식 오류"
    assert waiting.delivery_status == ""
    assert list(Suppression.objects.values_list("contact_id", "channel")) == [(bad_number.contact_id, "sms")]


@SOLAPI_HOOK
def test_solapi_wrong_secret_or_bad_body(client):
    send = sent(provider_id="M4V0001")
    assert solapi_post(client, [report("M4V0001", "4000", "수신완료")], secret="guess").status_code == 403
    with override_settings(LOOP_SOLAPI_WEBHOOK_SECRET=""):
        assert solapi_post(client, [report("M4V0001", "4000", "수신완료")], secret="x").status_code == 403
    url = reverse("campaigns_webhooks:solapi", args=["s3cr3t-in-the-url"])
    assert client.post(url, "{not json", content_type="application/json").status_code == 400
    assert solapi_post(client, ["text"]).status_code == 400
    send.refresh_from_db()
    assert send.delivery_status == ""


@SOLAPI
@SOLAPI_HOOK
@override_settings(LOOP_CHANNEL_BACKENDS={"kakao": "solapi_kakao", "sms": "solapi"})
@responses.activate
def test_solapi_kakao_failure_report_starts_the_sms_fallback(client):
    SenderProfileFactory(value="+8215880001")
    contact = ContactFactory(phone="+821012345678")
    ConsentFactory(contact=contact, purpose="sms")
    send = sent(
        "kakao",
        provider_id="M4VATA0001",
        contact=contact,
        address="+821012345678",
        content={"body": "김민지님, 주문하신 상품이 출발했어요.", "link_url": ""},
    )
    responses.post(SEND_URL, json=group([accepted(send.pk, "01012345678", "M4VSMS0001")], []))
    response = solapi_post(client, [report("M4VATA0001", "3104", "카카오톡 미사용자", kind="ATA")])
    assert response.status_code == 200
    [sms] = json.loads(responses.calls[0].request.body)["messages"]
    assert sms["text"] == "김민지님, 주문하신 상품이 출발했어요."
    assert sms["type"] == "SMS"
    send.refresh_from_db()
    assert send.status == Send.Status.SENT
    assert send.fallback_channel == "sms"
    assert send.fallback_reason.startswith("3104")
    assert send.fallback_provider_message_id == "M4VSMS0001"
    # the report repeated: no second fallback
    solapi_post(client, [report("M4VATA0001", "3104", "카카오톡 미사용자", kind="ATA")])
    assert len(responses.calls) == 1
    send.refresh_from_db()
    assert send.status == Send.Status.SENT
    # the SMS is delivered: the send is delivered
    solapi_post(client, [report("M4VSMS0001", "4000", "수신완료")])
    send.refresh_from_db()
    assert send.delivery_status == DeliveryStatus.DELIVERED
