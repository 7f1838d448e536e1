"""The Solapi and Twilio SMS backends against recorded HTTP exchanges (``responses``): request shape and
authentication, per-message results, error mapping to transient/permanent, suppression of invalid numbers, MMS
upload, rate limiting; and the pipeline end to end with Solapi."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import datetime
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
import responses
import time_machine
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import override_settings

from campaigns.channels import Message
from campaigns.channels.ratelimit import DatabaseStore, TokenBucket
from campaigns.channels.sms import SolapiSmsBackend, TwilioBackend
from campaigns.channels.solapi import authorization
from campaigns.models import Send, Suppression
from campaigns.services.sending import sends_process
from campaigns.tests.factories import CampaignFactory, SenderProfileFactory, SendFactory, VariantFactory
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db

SOLAPI = override_settings(
    LOOP_SOLAPI_API_KEY="NCSAYU7YDBXYORXC",
    LOOP_SOLAPI_API_SECRET="solapi-secret",
    LOOP_SOLAPI_BASE_URL="https://api.solapi.com",
    LOOP_PROVIDER_RATES={"solapi": 100.0, "twilio": 10.0},
    LOOP_RATE_LIMIT_REDIS_URL="",
)
TWILIO = override_settings(
    LOOP_TWILIO_ACCOUNT_SID="AC0123456789abcdef0123456789abcdef",
    LOOP_TWILIO_AUTH_TOKEN="twilio-token",
    LOOP_TWILIO_MESSAGING_SERVICE_SID="",
    LOOP_PUBLIC_URL="https://crm.example.com",
    LOOP_RATE_LIMIT_REDIS_URL="",
)
SEND_URL = "https://api.solapi.com/messages/v4/send-many/detail"
SENDER = {"kind": "sms", "label": "대표번호", "value": "+8215880001", "sender_key": ""}


def sms(send_id: int, contact_id: int, to: str = "+821012345678", **fields) -> Message:
    return Message(
        send_id=send_id,
        channel="sms",
        contact_id=contact_id,
        to=to,
        body=fields.pop("body", "주말 특가 시작!"),
        extra={"sender": SENDER, **fields.pop("extra", {})},
        **fields,
    )


def accepted(send_id: int, to: str, message_id: str, kind: str = "SMS") -> dict:
    return {
        "messageId": message_id,
        "statusCode": "2000",
        "statusMessage": "정상 접수(이통사로 접수 예정) ",
        "to": to,
        "from": "15880001",
        "type": kind,
        "country": "82",
        "accountId": "12925149",
        "customFields": {"sendId": str(send_id)},
    }


def refused(send_id: int, to: str, code: str, text: str) -> dict:
    return {
        "to": to,
        "from": "15880001",
        "type": "SMS",
        "statusMessage": text,
        "country": "82",
        "messageId": f"M4V20261124000000FAIL{send_id:06d}",
        "statusCode": code,
        "accountId": "12925149",
        "customFields": {"sendId": str(send_id)},
    }


def group(message_list, failed_list) -> dict:
    total = len(message_list) + len(failed_list)
    return {
        "failedMessageList": failed_list,
        "groupInfo": {
            "_id": "G4V20261124120000ABCDEFGHIJKLMNO",
            "count": {"total": total, "registeredFailed": len(failed_list), "registeredSuccess": len(message_list)},
            "status": "SENDING",
        },
        "messageList": message_list,
    }


@SOLAPI
@responses.activate
def test_solapi_sends_a_batch_and_reports_each_message():
    ok_contact, bad_contact = ContactFactory(), ContactFactory()
    responses.post(
        SEND_URL,
        json=group(
            [
                accepted(1, "01012345678", "M4V20261124120000AAAAAAAAAAAAAAA"),
                accepted(3, "4155550123", "M4V20261124120000BBBBBBBBBBBBBBB"),
            ],
            [refused(2, "0101234", "1020", "수신번호 형식 오류")],
        ),
    )
    with time_machine.travel(datetime(2026, 11, 24, 3, 0, tzinfo=ZoneInfo("UTC")), tick=False):
        results = SolapiSmsBackend().send_batch(
            [
                sms(1, ok_contact.pk),
                sms(2, bad_contact.pk, to="+820101234", body="가" * 46, subject=""),
                sms(3, ok_contact.pk, to="+14155550123"),
            ]
        )
    request = responses.calls[0].request
    body = json.loads(request.body)
    assert body["showMessageList"] is True
    first, second, abroad = body["messages"]
    assert abroad["to"] == "4155550123"
    assert abroad["country"] == "1"
    assert first == {
        "to": "01012345678",
        "from": "15880001",
        "text": "주말 특가 시작!",
        "type": "SMS",
        "autoTypeDetect": False,
        "customFields": {"sendId": "1"},
    }
    assert second["type"] == "LMS"  # 92 bytes
    # HMAC-SHA256 of date + salt with the secret
    header = request.headers["Authorization"]
    fields = dict(part.split("=", 1) for part in header.removeprefix("HMAC-SHA256 ").split(", "))
    assert fields["apiKey"] == "NCSAYU7YDBXYORXC"
    assert fields["date"].startswith("2026-11-24T03:00:00")
    expected = hmac.new(b"solapi-secret", (fields["date"] + fields["salt"]).encode(), hashlib.sha256).hexdigest()
    assert fields["signature"] == expected
    by_id = {r.send_id: r for r in results}
    assert by_id[1].ok
    assert by_id[1].provider_message_id == "M4V20261124120000AAAAAAAAAAAAAAA"
    assert not by_id[2].ok
    assert not by_id[2].transient
    assert "1020" in by_id[2].error
    # an invalid number suppresses SMS for that contact only
    assert list(Suppression.objects.values_list("contact_id", "channel")) == [(bad_contact.pk, "sms")]


def test_authorization_header_is_deterministic_for_given_date_and_salt():
    header = authorization("KEY", "secret", date="2019-07-01T00:41:48Z", salt="jqsba2jxjnrjor")
    signature = hmac.new(b"secret", b"2019-07-01T00:41:48Zjqsba2jxjnrjor", hashlib.sha256).hexdigest()
    assert header == f"HMAC-SHA256 apiKey=KEY, date=2019-07-01T00:41:48Z, salt=jqsba2jxjnrjor, signature={signature}"


@SOLAPI
@responses.activate
@pytest.mark.parametrize(
    ("status", "body", "transient"),
    [
        (500, {"errorCode": "InternalError", "errorMessage": "Internal Server Error"}, True),
        (429, {"errorCode": "TooManyRequests", "errorMessage": "요청이 너무 많습니다"}, True),
        (401, {"errorCode": "SignatureDoesNotMatch", "errorMessage": "Signature 불일치"}, False),
        (400, {"errorCode": "ValidationError", "errorMessage": "messages[0].from 발신번호 미등록"}, False),
    ],
)
def test_solapi_http_errors_fail_the_whole_request(status, body, transient):
    contact = ContactFactory()
    responses.post(SEND_URL, status=status, json=body)
    [result] = SolapiSmsBackend().send_batch([sms(1, contact.pk)])
    assert not result.ok
    assert result.transient is transient
    assert body["errorCode"] in result.error
    assert "solapi-secret" not in result.error


@SOLAPI
@responses.activate
def test_solapi_platform_error_code_is_transient():
    contact = ContactFactory()
    responses.post(SEND_URL, json=group([], [refused(1, "01012345678", "2001", "시스템 내부 오류")]))
    [result] = SolapiSmsBackend().send_batch([sms(1, contact.pk)])
    assert not result.ok
    assert result.transient
    assert not Suppression.objects.exists()


@SOLAPI
@responses.activate
def test_solapi_message_without_sender_is_refused_without_a_request():
    contact = ContactFactory()
    message = Message(send_id=1, channel="sms", contact_id=contact.pk, to="+821012345678", body="x", extra={})
    [result] = SolapiSmsBackend().send_batch([message])
    assert not result.ok
    assert "sender profile" in result.error
    assert len(responses.calls) == 0


@SOLAPI
@responses.activate
def test_solapi_mms_uploads_the_image_once(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    name = default_storage.save("campaigns/mms/sale.jpg", ContentFile(b"\xff\xd8\xff" + b"0" * 100))
    responses.post("https://api.solapi.com/storage/v1/files", json={"fileId": "ST01FZ241124000000000000000001"})
    responses.post(
        SEND_URL,
        json=group([accepted(1, "01012345678", "M1", "MMS"), accepted(2, "01012345679", "M2", "MMS")], []),
    )
    contact = ContactFactory()
    extra = {"image": name}
    results = SolapiSmsBackend().send_batch(
        [sms(1, contact.pk, subject="세일", extra=extra), sms(2, contact.pk, to="+821012345679", extra=extra)]
    )
    assert all(r.ok for r in results)
    upload = json.loads(responses.calls[0].request.body)
    assert upload["type"] == "MMS"
    assert base64.b64decode(upload["file"]).startswith(b"\xff\xd8\xff")
    sent = json.loads(responses.calls[1].request.body)["messages"]
    assert [m["type"] for m in sent] == ["MMS", "MMS"]
    assert sent[0]["imageId"] == "ST01FZ241124000000000000000001"
    assert sent[0]["subject"] == "세일"
    assert len(responses.calls) == 2  # the second message reused the uploaded file


@SOLAPI
@responses.activate
def test_solapi_splits_batches_by_the_rate_limit():
    from campaigns.channels.sms import solapi_deliver, solapi_sms_payload

    contact = ContactFactory()
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket("test:solapi", rate=2, store=DatabaseStore(), clock=lambda: now[0], sleep=sleep)

    def answer(request):
        messages = json.loads(request.body)["messages"]
        rows = [
            accepted(int(m["customFields"]["sendId"]), m["to"], f"M{m['customFields']['sendId']}") for m in messages
        ]
        return 200, {}, json.dumps(group(rows, []))

    responses.add_callback(responses.POST, SEND_URL, callback=answer)
    results = solapi_deliver([sms(i, contact.pk) for i in range(1, 6)], solapi_sms_payload, bucket=bucket)
    assert [len(json.loads(c.request.body)["messages"]) for c in responses.calls] == [2, 2, 1]
    assert sum(slept) == pytest.approx(1.5)  # 2 now, 2 after 1 s, 1 after 0.5 s
    assert all(r.ok for r in results)


# --- Twilio --------------------------------------------------------------------------------------------------------

TWILIO_URL = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"


def twilio_bucket():
    return TokenBucket("test:twilio", rate=100, store=DatabaseStore())


@TWILIO
@responses.activate
def test_twilio_one_request_per_message_with_basic_auth_and_status_callback():
    contact = ContactFactory()
    responses.post(
        TWILIO_URL,
        status=201,
        json={
            "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
            "status": "queued",
            "to": "+821012345678",
            "from": "+8215880001",
            "error_code": None,
        },
    )
    [result] = TwilioBackend(bucket=twilio_bucket()).send_batch([sms(1, contact.pk, subject="세일")])
    assert result.ok
    assert result.provider_message_id == "SM1f0e8ae6ade43cb3c0ce4525424e404f"
    request = responses.calls[0].request
    form = {k: v[0] for k, v in parse_qs(request.body).items()}
    assert form == {
        "To": "+821012345678",
        "From": "+8215880001",
        "Body": "[세일]\n주말 특가 시작!",
        "StatusCallback": "https://crm.example.com/webhooks/twilio/status/",
    }
    expected = base64.b64encode(b"AC0123456789abcdef0123456789abcdef:twilio-token").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


@TWILIO
@responses.activate
def test_twilio_errors_map_to_transient_permanent_and_suppression():
    invalid, stopped, busy = ContactFactory(), ContactFactory(), ContactFactory()
    replies = iter(
        [
            (400, {"code": 21211, "message": "Invalid 'To' Phone Number: +8201", "status": 400}),
            (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}),
            (429, {"code": 20429, "message": "Too Many Requests", "status": 429}),
        ]
    )

    def answer(request):
        status, body = next(replies)
        return status, {}, json.dumps(body)

    responses.add_callback(responses.POST, TWILIO_URL, callback=answer)
    results = TwilioBackend(bucket=twilio_bucket()).send_batch(
        [sms(1, invalid.pk, to="+8201"), sms(2, stopped.pk), sms(3, busy.pk)]
    )
    assert [(r.ok, r.transient) for r in results] == [(False, False), (False, False), (False, True)]
    assert "21211" in results[0].error
    assert dict(Suppression.objects.values_list("contact_id", "reason")) == {
        invalid.pk: Suppression.Reason.BOUNCED,
        stopped.pk: Suppression.Reason.UNSUBSCRIBED,
    }


# --- Through the pipeline ------------------------------------------------------------------------------------------


@SOLAPI
@responses.activate
def test_pipeline_sends_sms_from_the_default_profile_with_solapi(settings):
    settings.LOOP_CHANNEL_BACKENDS = {"sms": "solapi"}
    SenderProfileFactory(value="+8215880001")
    contact = ContactFactory(phone="+821012345678")
    ConsentFactory(contact=contact, purpose="sms")
    campaign = CampaignFactory(channel="sms", variants=0)
    VariantFactory(campaign=campaign, name="A", subject="", body="#{고객명|고객}님 쿠폰이 도착했어요")
    send = SendFactory(campaign=campaign, contact=contact, channel="sms", variant=campaign.variants.get())
    responses.post(SEND_URL, json=group([accepted(send.pk, "01012345678", "M4V2026112412000000000000000001")], []))
    sends_process(send_ids=[send.pk])
    send.refresh_from_db()
    assert send.status == Send.Status.SENT
    assert send.backend == "solapi"
    assert send.provider_message_id == "M4V2026112412000000000000000001"
    [payload] = json.loads(responses.calls[0].request.body)["messages"]
    assert payload["from"] == "15880001"
    assert payload["to"] == "01012345678"
    assert re.match(r".+님 쿠폰이 도착했어요$", payload["text"])


@TWILIO
@responses.activate
def test_twilio_mms_sends_the_public_image_url_and_refuses_overlong_text():
    contact = ContactFactory()
    responses.post(TWILIO_URL, status=201, json={"sid": "MM0001", "status": "queued"})
    backend = TwilioBackend(bucket=twilio_bucket())
    [result] = backend.send_batch([sms(1, contact.pk, extra={"image": "campaigns/mms/sale.jpg"})])
    assert result.ok
    form = parse_qs(responses.calls[0].request.body)
    assert form["MediaUrl"] == ["https://crm.example.com/media/campaigns/mms/sale.jpg"]
    [too_long] = backend.send_batch([sms(2, contact.pk, body="가" * 1001)])
    assert not too_long.ok
    assert not too_long.transient
    assert len(responses.calls) == 1


@SOLAPI
@responses.activate
def test_solapi_network_errors_retry_only_when_nothing_was_sent():
    import requests

    contact = ContactFactory()
    responses.post(SEND_URL, body=requests.ConnectTimeout("connect timed out"))
    [never_sent] = SolapiSmsBackend().send_batch([sms(1, contact.pk)])
    assert never_sent.transient
    responses.replace(responses.POST, SEND_URL, body=requests.ReadTimeout("read timed out"))
    [unknown] = SolapiSmsBackend().send_batch([sms(2, contact.pk)])
    assert not unknown.ok
    assert not unknown.transient
    assert "delivery unknown" in unknown.error


def test_system_checks_name_missing_provider_settings(settings):
    from campaigns.checks import provider_settings

    settings.LOOP_CHANNEL_DRY_RUN = False
    settings.LOOP_CHANNEL_BACKENDS = {"sms": "solapi", "kakao": "solapi_kakao"}
    settings.LOOP_SOLAPI_API_KEY = ""
    settings.LOOP_SOLAPI_WEBHOOK_SECRET = ""
    assert {p.id for p in provider_settings()} == {"campaigns.E001", "campaigns.W001"}
    settings.LOOP_SOLAPI_API_KEY, settings.LOOP_SOLAPI_API_SECRET = "key", "secret"
    settings.LOOP_SOLAPI_WEBHOOK_SECRET = "hook"
    assert provider_settings() == []
    settings.LOOP_CHANNEL_BACKENDS = {"sms": "twilio"}
    settings.LOOP_PUBLIC_URL = "http://localhost:8000"
    assert {p.id for p in provider_settings()} == {"campaigns.E001", "campaigns.W002"}
