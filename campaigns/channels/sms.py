"""SMS/LMS/MMS backends: Solapi (Korea, one request per batch) and Twilio (one request per message).

Both pick the message type with ``campaigns.channels.sms_length`` (SMS ≤ 90 EUC-KR bytes, LMS up to 2,000 with a
subject, MMS with an image), send from the campaign's sender profile (the registered caller number), take their
messages from the provider's shared rate-limit bucket, and report per message: accepted (with the provider's
message ID, later updated by delivery receipts), a transient failure (retried by the pipeline) or a permanent one;
a number the provider calls invalid suppresses SMS for that contact.
"""

from __future__ import annotations

from typing import Any

import requests
import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import default_storage
from django.urls import reverse

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, ChannelBackend, Message, SendResult
from campaigns.channels.ratelimit import TokenBucket, provider_bucket
from campaigns.channels.sms_length import LMS, MMS, length_report, message_type
from campaigns.channels.solapi import SolapiClient, SolapiError, classify

log = structlog.get_logger(__name__)


def sender_number(message: Message) -> str:
    sender = message.extra.get("sender") or {}
    if sender.get("kind") != "sms" or not sender.get("value"):
        return ""
    return sender["value"]


def failed_all(messages: list[Message], error: str, *, transient: bool) -> list[SendResult]:
    return [SendResult(send_id=m.send_id, ok=False, error=error, transient=transient) for m in messages]


def suppress_number(message: Message, error: str) -> None:
    from campaigns.models import Suppression
    from campaigns.services.suppressions import suppressions_add

    suppressions_add(contact_ids=[message.contact_id], channel="sms", reason=Suppression.Reason.BOUNCED, detail=error)


def check_length(message: Message, *, has_image: bool) -> None:
    """Refuse (a permanent failure, nothing sent) a rendered text the carriers would not take."""
    report = length_report(message.body, subject=message.subject, has_image=has_image)
    if report.errors:
        raise ValueError(" ".join(report.errors))


def pieces(messages: list[Message], bucket: TokenBucket) -> list[list[Message]]:
    size = max(1, int(bucket.capacity))
    return [messages[i : i + size] for i in range(0, len(messages), size)]


# --- Solapi --------------------------------------------------------------------------------------------------------


def solapi_recipient(e164: str) -> dict[str, str]:
    """Solapi's ``to`` (national digits) and, outside Korea, ``country`` (the calling code)."""
    import phonenumbers

    from campaigns.senders import national_digits

    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        raise ValueError(f"not a phone number: {e164}") from None
    if number.country_code == 82:
        return {"to": national_digits(e164)}
    return {"to": str(number.national_number), "country": str(number.country_code)}


def solapi_sms_payload(message: Message, client: SolapiClient) -> dict[str, Any]:
    from campaigns.senders import national_digits

    image = message.extra.get("image") or ""
    check_length(message, has_image=bool(image))
    kind = message_type(message.body, subject=message.subject, has_image=bool(image))
    payload: dict[str, Any] = {
        **solapi_recipient(str(message.to)),
        "from": national_digits(sender_number(message)),
        "text": message.body,
        "type": kind,
        "autoTypeDetect": False,
        "customFields": {"sendId": str(message.send_id)},
    }
    if kind in (LMS, MMS) and message.subject:
        payload["subject"] = message.subject
    if kind == MMS:
        with default_storage.open(image, "rb") as handle:
            payload["imageId"] = client.upload_mms_image(image.rsplit("/", 1)[-1], handle.read())
    return payload


def solapi_results(messages: list[Message], body: dict[str, Any], *, on_invalid=suppress_number) -> list[SendResult]:
    """Per-message results of a send-many/detail answer, matched by our ``customFields.sendId``."""
    by_send: dict[str, dict[str, Any]] = {}
    for row in (body.get("messageList") or []) + (body.get("failedMessageList") or []):
        send_id = str((row.get("customFields") or {}).get("sendId", ""))
        if send_id:
            by_send[send_id] = row
    results = []
    for message in messages:
        row = by_send.get(str(message.send_id))
        if row is None:
            results.append(
                SendResult(send_id=message.send_id, ok=False, error="Solapi: delivery unknown (not in the answer)")
            )
            continue
        code = str(row.get("statusCode", ""))
        outcome = classify(code)
        if outcome.ok:
            results.append(SendResult(send_id=message.send_id, ok=True, provider_message_id=row.get("messageId", "")))
            continue
        error = f"Solapi {code}: {row.get('statusMessage', '')}".strip()
        if outcome.invalid_number:
            on_invalid(message, error)
        results.append(SendResult(send_id=message.send_id, ok=False, error=error, transient=outcome.transient))
    return results


def solapi_deliver(
    messages: list[Message], build, *, client: SolapiClient | None = None, bucket: TokenBucket | None = None
) -> list[SendResult]:
    """Send ``messages`` through Solapi in rate-limited requests; ``build(message, client)`` makes each payload."""
    client = client or SolapiClient()
    bucket = bucket or provider_bucket("solapi")
    results: list[SendResult] = []
    for piece in pieces(messages, bucket):
        if not bucket.acquire(len(piece), max_wait=settings.LOOP_PROVIDER_RATE_MAX_WAIT):
            results += failed_all(piece, "Solapi rate limit: try again later", transient=True)
            continue
        payloads, ready = [], []
        for message in piece:
            try:
                payloads.append(build(message, client))
                ready.append(message)
            except (ValueError, KeyError, OSError) as exc:
                results.append(SendResult(send_id=message.send_id, ok=False, error=f"{type(exc).__name__}: {exc}"))
            except SolapiError as exc:
                results.append(SendResult(send_id=message.send_id, ok=False, error=str(exc), transient=exc.transient))
        if not ready:
            continue
        try:
            body = client.send_many(payloads)
        except SolapiError as exc:
            log.warning("solapi_send_failed", error=str(exc), messages=len(ready))
            results += failed_all(ready, str(exc), transient=exc.transient)
            continue
        results += solapi_results(ready, body)
    return results


@register_backend
class SolapiSmsBackend(ChannelBackend):
    """SMS/LMS/MMS through Solapi: ``CHANNEL_BACKENDS=sms=solapi``."""

    name = "solapi"
    capabilities = Capabilities(max_batch_size=1000, idempotent=False, channels=frozenset({"sms"}))

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        results, ready = [], []
        for message in messages:
            if not sender_number(message):
                results.append(
                    SendResult(send_id=message.send_id, ok=False, error="no SMS sender profile (caller number)")
                )
            else:
                ready.append(message)
        return results + (solapi_deliver(ready, solapi_sms_payload) if ready else [])


# --- Twilio --------------------------------------------------------------------------------------------------------

TWILIO_API = "https://api.twilio.com/2010-04-01"
#: Twilio error codes (https://www.twilio.com/docs/api/errors) meaning the number cannot receive our texts.
TWILIO_INVALID_NUMBER = {21211, 21214, 21217, 21407, 21612, 21614}
#: The recipient replied STOP: Twilio refuses every further message to it.
TWILIO_UNSUBSCRIBED = {21610}
TWILIO_TRANSIENT = {20429, 20500, 20503, 30001, 30002, 30010}


def twilio_status_callback() -> str:
    return settings.LOOP_PUBLIC_URL + reverse("campaigns_webhooks:twilio")


@register_backend
class TwilioBackend(ChannelBackend):
    """SMS/MMS through Twilio's Messages API (one request per message): ``CHANNEL_BACKENDS=sms=twilio``."""

    name = "twilio"
    capabilities = Capabilities(max_batch_size=100, idempotent=False, channels=frozenset({"sms"}))

    def __init__(self, *, session: requests.Session | None = None, bucket: TokenBucket | None = None) -> None:
        self.sid = settings.LOOP_TWILIO_ACCOUNT_SID
        self.token = settings.LOOP_TWILIO_AUTH_TOKEN
        if not self.sid or not self.token:
            raise ImproperlyConfigured("Twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN in the environment.")
        self.session = session or requests.Session()
        self.bucket = bucket

    def payload(self, message: Message) -> dict[str, Any]:
        body = f"[{message.subject}]\n{message.body}" if message.subject else message.body
        data: dict[str, Any] = {"To": message.to, "Body": body, "StatusCallback": twilio_status_callback()}
        if settings.LOOP_TWILIO_MESSAGING_SERVICE_SID:
            data["MessagingServiceSid"] = settings.LOOP_TWILIO_MESSAGING_SERVICE_SID
        else:
            data["From"] = sender_number(message)
        image = message.extra.get("image")
        check_length(message, has_image=bool(image))
        if image:
            data["MediaUrl"] = settings.LOOP_PUBLIC_URL + default_storage.url(image)
        return data

    def send_one(self, message: Message) -> SendResult:
        url = f"{TWILIO_API}/Accounts/{self.sid}/Messages.json"
        try:
            response = self.session.post(
                url,
                data=self.payload(message),
                auth=(self.sid, self.token),
                timeout=settings.LOOP_PROVIDER_HTTP_TIMEOUT,
            )
        except requests.ConnectTimeout:
            # Never reached Twilio: safe to try again.
            return SendResult(send_id=message.send_id, ok=False, error="Twilio unreachable", transient=True)
        except requests.RequestException as exc:
            # Unknown whether Twilio took it: not retried (no duplicate), reported as a permanent failure.
            return SendResult(
                send_id=message.send_id, ok=False, error=f"Twilio: delivery unknown ({type(exc).__name__})"
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code < 300:
            return SendResult(send_id=message.send_id, ok=True, provider_message_id=body.get("sid", ""))
        code = body.get("code")
        error = f"Twilio {code or response.status_code}: {body.get('message', '')}".strip()
        if code in TWILIO_INVALID_NUMBER:
            suppress_number(message, error)
        elif code in TWILIO_UNSUBSCRIBED:
            from campaigns.models import Suppression
            from campaigns.services.suppressions import suppressions_add

            suppressions_add(
                contact_ids=[message.contact_id], channel="sms", reason=Suppression.Reason.UNSUBSCRIBED, detail=error
            )
        transient = response.status_code == 429 or response.status_code >= 500 or code in TWILIO_TRANSIENT
        return SendResult(send_id=message.send_id, ok=False, error=error, transient=transient)

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        bucket = self.bucket or provider_bucket("twilio")
        results = []
        for message in messages:
            if not settings.LOOP_TWILIO_MESSAGING_SERVICE_SID and not sender_number(message):
                results.append(
                    SendResult(send_id=message.send_id, ok=False, error="no SMS sender profile (From number)")
                )
            elif not bucket.acquire(1, max_wait=settings.LOOP_PROVIDER_RATE_MAX_WAIT):
                results.append(SendResult(send_id=message.send_id, ok=False, error="Twilio rate limit", transient=True))
            else:
                try:
                    results.append(self.send_one(message))
                except ValueError as exc:
                    results.append(SendResult(send_id=message.send_id, ok=False, error=str(exc)))
        return results
