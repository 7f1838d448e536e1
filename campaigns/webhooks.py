"""Delivery-receipt endpoints of the SMS and KakaoTalk providers.

- ``POST /webhooks/twilio/status/``: Twilio's status callback (form-encoded ``MessageSid``, ``MessageStatus``,
  ``ErrorCode``), authenticated by ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with the account's auth token,
  of the full callback URL followed by every POST parameter's name and value in name order. The URL is built from
  ``PUBLIC_URL`` (the address Twilio called), not from the request's Host header.
- ``POST /webhooks/solapi/<secret>/``: Solapi's message reports (a JSON list of ``{"data": {"messageId",
  "statusCode", "statusMessage", "type", …}}``). Solapi does not sign its webhooks, so the URL carries a secret
  (``SOLAPI_WEBHOOK_SECRET``), compared in constant time.

Both answer 403 to a request that fails authentication, 400 to one they cannot read, and 200 otherwise (also for
messages they do not know, so providers stop retrying). Effects are idempotent: a repeated receipt changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from campaigns.channels.solapi import DELIVERED_CODE, KAKAO_FALLBACK_CODES, classify
from campaigns.models import Send
from campaigns.services.receipts import message_receipt_apply

log = structlog.get_logger(__name__)

app_name = "campaigns_webhooks"

#: Twilio ErrorCodes of an undelivered message that mean the number cannot receive texts.
TWILIO_INVALID_NUMBER_ERRORS = {"30003", "30005", "30006"}


def twilio_signature(url: str, params: dict[str, str], auth_token: str) -> str:
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    token = settings.LOOP_TWILIO_AUTH_TOKEN
    url = settings.LOOP_PUBLIC_URL + request.get_full_path()
    params = {key: request.POST.get(key, "") for key in request.POST}
    expected = twilio_signature(url, params, token) if token else ""
    given = request.headers.get("X-Twilio-Signature", "")
    if not token or not hmac.compare_digest(expected, given):
        log.warning("twilio_receipt_forged")
        return HttpResponseForbidden("invalid signature")
    sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
    if not sid or not status:
        return HttpResponseBadRequest("MessageSid and MessageStatus are required")
    if status == "delivered":
        message_receipt_apply(provider_message_id=sid, delivered=True)
    elif status in ("undelivered", "failed"):
        code = params.get("ErrorCode", "")
        message_receipt_apply(
            provider_message_id=sid,
            delivered=False,
            error=f"Twilio {status} {code}".strip(),
            invalid_number=code in TWILIO_INVALID_NUMBER_ERRORS,
        )
    return HttpResponse(status=204)


def _solapi_report(data: dict) -> str:
    message_id, code = str(data.get("messageId", "")), str(data.get("statusCode", ""))
    if not message_id or not code:
        return "ignored"
    if code == DELIVERED_CODE:
        message_receipt_apply(provider_message_id=message_id, delivered=True)
        return "delivered"
    outcome = classify(code)
    if outcome.ok:
        return "pending"
    error = f"Solapi {code}: {data.get('statusMessage', '')}".strip()
    if outcome.kakao_unreachable:
        send = Send.objects.filter(provider_message_id=message_id, channel="kakao").first()
        if send is not None and send.fallback_channel:
            return "fallback"  # a repeated report: the fallback is already on its way
        if send is not None:
            from campaigns.services.fallback import fallback_message, kakao_fallback

            result = kakao_fallback(items=[(fallback_message(send), f"{code} {KAKAO_FALLBACK_CODES[code]}")])[send.pk]
            if result.ok:
                return "fallback"
            error = result.error
    message_receipt_apply(
        provider_message_id=message_id, delivered=False, error=error, invalid_number=outcome.invalid_number
    )
    return "failed"


@csrf_exempt
@require_POST
def solapi_report(request: HttpRequest, secret: str) -> HttpResponse:
    expected = settings.LOOP_SOLAPI_WEBHOOK_SECRET
    if not expected or not hmac.compare_digest(expected.encode(), secret.encode()):
        log.warning("solapi_receipt_forged")
        return HttpResponseForbidden("invalid secret")
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return HttpResponseBadRequest("invalid JSON")
    events = body if isinstance(body, list) else [body]
    outcomes: dict[str, int] = {}
    for event in events:
        if not isinstance(event, dict):
            return HttpResponseBadRequest("each report must be an object")
        data = event.get("data") if isinstance(event.get("data"), dict) else event
        outcome = _solapi_report(data)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    log.info("solapi_receipts", **outcomes)
    return JsonResponse({"received": len(events)})


urlpatterns = [
    path("twilio/status/", twilio_status, name="twilio"),
    path("solapi/<str:secret>/", solapi_report, name="solapi"),
]
