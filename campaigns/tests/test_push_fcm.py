"""The FCM HTTP v1 backend against recorded HTTP (``responses``): the OAuth2 token exchange of a service account,
one ``messages:send`` per token, dead tokens deactivated, rate limits and server errors retried after
``Retry-After``, everything else permanent."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
import responses
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import ImproperlyConfigured

from campaigns.channels import Message, backend_for
from campaigns.channels.push import FcmBackend, fcm_message
from campaigns.models import Campaign, Send
from campaigns.services.sending import campaign_send_one
from campaigns.tests.factories import CampaignFactory, VariantFactory
from crm.models import Device
from crm.tests.factories import ConsentFactory, ContactFactory, DeviceFactory

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=SEOUL)
TOKEN_URL = "https://oauth2.googleapis.com/token"
SEND_URL = "https://fcm.googleapis.com/v1/projects/loop-shop-app/messages:send"


@pytest.fixture(scope="module")
def service_account_key() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "loop-shop-app",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "loop-push@loop-shop-app.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": TOKEN_URL,
    }


@pytest.fixture
def fcm(settings, tmp_path, service_account_key):
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(service_account_key))
    settings.LOOP_FCM_CREDENTIALS_FILE = str(path)
    settings.LOOP_FCM_CREDENTIALS_JSON = ""
    settings.LOOP_FCM_PROJECT_ID = ""
    settings.LOOP_CHANNEL_BACKENDS = {"push": "fcm"}
    settings.LOOP_TRACK_CLICKS = False  # the deep link as written (click tracking: test_tracking.py)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(
            responses.POST,
            TOKEN_URL,
            json={"access_token": "ya29.test-access-token", "expires_in": 3599, "token_type": "Bearer"},
        )
        yield mock


def fcm_error(status: int, code: str, message: str, *, error_code: str = "", violations=()) -> dict:
    details = []
    if error_code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
    if violations:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": f, "description": message} for f in violations],
            }
        )
    return {"error": {"code": status, "message": message, "status": code, "details": details}}


def by_token(mock) -> dict:
    """The FCM requests made, by token: (authorization header, message object)."""
    sent = {}
    for call in mock.calls:
        if call.request.url == SEND_URL:
            body = json.loads(call.request.body)["message"]
            sent[body["token"]] = (call.request.headers["Authorization"], body)
    return sent


def push_contact(*tokens: str):
    contact = ContactFactory()
    ConsentFactory(contact=contact, purpose="push")
    for token in tokens:
        DeviceFactory(contact=contact, token=token)
    return contact


def send_push(contact, capture, *, key="k1", link="https://shop.example/sale", now=NOON) -> Send:
    campaign = CampaignFactory(kind=Campaign.Kind.TRIGGERED, channel="push", segment=None, variants=0)
    VariantFactory(
        campaign=campaign,
        subject="#{고객명}님 장바구니",
        body="담아두신 상품이 곧 품절돼요",
        link_url=link,
        variables={"image_url": "https://cdn.example/knit.jpg", "data": {"screen": "cart"}},
    )
    with time_machine.travel(now, tick=False), capture(execute=True):
        send = campaign_send_one(campaign=campaign, contact_id=contact.pk, key=key, now=now)
    send.refresh_from_db()
    return send


def test_service_account_token_exchange_and_one_request_per_token(fcm, django_capture_on_commit_callbacks):
    fcm.add(responses.POST, SEND_URL, json={"name": "projects/loop-shop-app/messages/0:1500415314455276%31bd1c96"})
    contact = push_contact("token-phone", "token-tablet")

    send = send_push(contact, django_capture_on_commit_callbacks)

    assert send.status == Send.Status.SENT
    assert send.backend == "fcm"
    assert send.provider_message_id == "projects/loop-shop-app/messages/0:1500415314455276%31bd1c96"
    exchange = [c for c in fcm.calls if c.request.url == TOKEN_URL]
    assert len(exchange) == 1  # one token for the whole batch
    body = exchange[0].request.body
    form = parse_qs(body.decode() if isinstance(body, bytes) else body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert form["assertion"][0].count(".") == 2  # a signed JWT
    sent = by_token(fcm)
    assert set(sent) == {"token-phone", "token-tablet"}
    authorization, message = sent["token-phone"]
    assert authorization == "Bearer ya29.test-access-token"
    assert message["notification"] == {
        "title": f"{contact.name}님 장바구니",
        "body": "담아두신 상품이 곧 품절돼요",
        "image": "https://cdn.example/knit.jpg",
    }
    assert message["data"]["link"] == "https://shop.example/sale"
    assert message["data"]["screen"] == "cart"
    assert message["data"]["loop_send_id"] == str(send.pk)
    assert message["webpush"] == {"fcm_options": {"link": "https://shop.example/sale"}}
    assert message["apns"]["fcm_options"] == {"image": "https://cdn.example/knit.jpg"}


def test_the_access_token_is_reused_until_it_nears_expiry(fcm, django_capture_on_commit_callbacks):
    fcm.add(responses.POST, SEND_URL, json={"name": "projects/loop-shop-app/messages/1"})
    contact = push_contact("token-a")
    send_push(contact, django_capture_on_commit_callbacks, key="first")
    send_push(contact, django_capture_on_commit_callbacks, key="second")
    assert len([c for c in fcm.calls if c.request.url == TOKEN_URL]) == 1


def test_unregistered_and_invalid_tokens_deactivate_their_devices(fcm, django_capture_on_commit_callbacks):
    def reply(request):
        token = json.loads(request.body)["message"]["token"]
        if token == "token-gone":
            body = fcm_error(404, "NOT_FOUND", "Requested entity was not found.", error_code="UNREGISTERED")
            return 404, {}, json.dumps(body)
        if token == "token-garbled":
            body = fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                error_code="INVALID_ARGUMENT",
            )
            return 400, {}, json.dumps(body)
        return 200, {}, json.dumps({"name": "projects/loop-shop-app/messages/ok"})

    fcm.add_callback(responses.POST, SEND_URL, callback=reply)
    partly = push_contact("token-gone", "token-live")
    dead = push_contact("token-garbled")

    first = send_push(partly, django_capture_on_commit_callbacks, key="partly")
    second = send_push(dead, django_capture_on_commit_callbacks, key="dead")

    assert first.status == Send.Status.SENT  # one device got it
    assert (second.status, second.error) == (Send.Status.FAILED, "FCM: INVALID_ARGUMENT")  # permanent
    assert dict(Device.objects.values_list("token", "active")) == {
        "token-gone": False,
        "token-live": True,
        "token-garbled": False,
    }
    assert Device.objects.get(token="token-gone").deactivated_reason == "FCM UNREGISTERED"


def test_an_invalid_payload_is_permanent_and_keeps_the_device(fcm, django_capture_on_commit_callbacks):
    body = fcm_error(
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'message.data[0].value'",
        error_code="INVALID_ARGUMENT",
        violations=["message.data[0].value"],
    )
    fcm.add(responses.POST, SEND_URL, json=body, status=400)
    contact = push_contact("token-fine")
    send = send_push(contact, django_capture_on_commit_callbacks)
    assert send.status == Send.Status.FAILED
    assert Device.objects.get(token="token-fine").active


def test_rate_limit_is_transient_and_the_retry_waits_for_retry_after(fcm, django_capture_on_commit_callbacks):
    body = fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", error_code="QUOTA_EXCEEDED")
    fcm.add(responses.POST, SEND_URL, json=body, status=429, headers={"Retry-After": "600"})
    contact = push_contact("token-busy")

    send = send_push(contact, django_capture_on_commit_callbacks)

    assert send.status == Send.Status.QUEUED  # retried later, not failed
    assert send.error == "FCM: QUOTA_EXCEEDED"
    assert send.due_at == NOON + timedelta(seconds=600)  # Retry-After, longer than the 1-minute backoff
    assert Device.objects.get(token="token-busy").active


def test_server_errors_and_timeouts_are_transient(fcm):
    import requests

    def reply(request):
        token = json.loads(request.body)["message"]["token"]
        if token == "t-timeout":
            raise requests.ReadTimeout("read timed out")
        return 503, {}, json.dumps(fcm_error(503, "UNAVAILABLE", "The service is unavailable."))

    fcm.add_callback(responses.POST, SEND_URL, callback=reply)
    results = FcmBackend().send_batch(
        [
            Message(send_id=1, channel="push", contact_id=1, to=["t-503"], body="hi"),
            Message(send_id=2, channel="push", contact_id=2, to=["t-timeout"], body="hi"),
            Message(send_id=3, channel="push", contact_id=3, to=[], body="hi"),
        ]
    )
    by_id = {r.send_id: r for r in results}
    assert (by_id[1].ok, by_id[1].transient, by_id[1].error) == (False, True, "FCM: UNAVAILABLE")
    assert (by_id[2].ok, by_id[2].transient, by_id[2].error) == (False, True, "FCM: timeout")
    assert (by_id[3].ok, by_id[3].transient) == (False, False)


def test_credentials_from_json_text_and_project_override(fcm, settings, service_account_key):
    settings.LOOP_FCM_CREDENTIALS_FILE = ""
    settings.LOOP_FCM_CREDENTIALS_JSON = json.dumps(service_account_key)
    settings.LOOP_FCM_PROJECT_ID = "other-project"
    url = "https://fcm.googleapis.com/v1/projects/other-project/messages:send"
    fcm.add(responses.POST, url, json={"name": "projects/other-project/messages/9"})
    [result] = FcmBackend().send_batch([Message(send_id=1, channel="push", contact_id=1, to=["t"], body="hi")])
    assert result.ok
    assert result.provider_message_id == "projects/other-project/messages/9"


def test_missing_or_broken_credentials_are_a_clear_configuration_error(settings):
    settings.LOOP_FCM_CREDENTIALS_FILE = ""
    settings.LOOP_FCM_CREDENTIALS_JSON = ""
    with pytest.raises(ImproperlyConfigured, match="FCM_CREDENTIALS_FILE or FCM_CREDENTIALS_JSON"):
        FcmBackend().send_batch([Message(send_id=1, channel="push", contact_id=1, to=["t"], body="hi")])
    settings.LOOP_FCM_CREDENTIALS_JSON = '{"type": "authorized_user"}'
    with pytest.raises(ImproperlyConfigured, match="not a service-account key"):
        FcmBackend().send_batch([Message(send_id=1, channel="push", contact_id=1, to=["t"], body="hi")])


def test_fcm_is_selected_for_push_only(settings):
    settings.LOOP_CHANNEL_BACKENDS = {"push": "fcm", "email": "fcm"}
    assert isinstance(backend_for("push"), FcmBackend)
    with pytest.raises(ImproperlyConfigured, match="cannot deliver channel 'email'"):
        backend_for("email")


def test_message_without_title_link_or_image():
    body = fcm_message(Message(send_id=5, channel="push", contact_id=1, to=["t"], body="hi"), "t")
    assert body == {"token": "t", "notification": {"body": "hi"}, "data": {"loop_send_id": "5"}}


def test_after_a_rate_limit_the_rest_of_the_batch_is_not_tried(fcm, settings):
    settings.LOOP_FCM_CONCURRENCY = 1  # in order: the first request is throttled
    body = fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", error_code="QUOTA_EXCEEDED")
    fcm.add(responses.POST, SEND_URL, json=body, status=429, headers={"Retry-After": "30"})
    messages = [Message(send_id=i, channel="push", contact_id=i, to=[f"t{i}"], body="hi") for i in range(1, 6)]

    results = FcmBackend().send_batch(messages)

    assert len([c for c in fcm.calls if c.request.url == SEND_URL]) == 1
    assert {(r.ok, r.transient, r.retry_after) for r in results} == {(False, True, 30.0)}


def test_a_refused_token_exchange_sends_nothing_and_the_batch_is_retried(fcm, django_capture_on_commit_callbacks):
    fcm.replace(
        responses.POST, TOKEN_URL, json={"error": "invalid_grant", "error_description": "Invalid JWT"}, status=400
    )
    contact = push_contact("token-x")
    send = send_push(contact, django_capture_on_commit_callbacks)
    assert send.status == Send.Status.QUEUED  # released with a backoff by the pipeline
    assert send.error.startswith("RefreshError")
    assert not [c for c in fcm.calls if c.request.url == SEND_URL]


def test_dry_run_sends_push_to_the_outbox_not_to_fcm(fcm, settings, django_capture_on_commit_callbacks):
    from campaigns.models import OutboxMessage

    settings.LOOP_CHANNEL_DRY_RUN = True
    contact = push_contact("token-dry")
    send = send_push(contact, django_capture_on_commit_callbacks)
    assert (send.status, send.backend) == (Send.Status.SENT, "outbox")
    assert OutboxMessage.objects.get(send=send).to == "token-dry"
    assert not fcm.calls  # neither the token exchange nor a send
