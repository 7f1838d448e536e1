"""Signed JSON webhooks (``webhook``): one ``POST`` per message to the destination's URL.

The body is ``{"id", "event", "created_at", "data"}`` as compact UTF-8 JSON. Headers: ``X-Loop-Event``,
``X-Loop-Delivery`` (the same for every attempt of one notification: receivers deduplicate on it) and
``X-Loop-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the destination's secret>``
(verification: docs/channels.md). A ``2xx`` answer is success; timeouts, connection errors, ``429`` and ``5xx`` are
transient (retried with backoff by the notification ledger, ``Retry-After`` respected); other answers, redirects
included, are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import requests
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, ChannelBackend, Message, SendResult
from campaigns.channels.http import describe_exception, is_transient_status, retry_after, session
from campaigns.channels.team import destinations_for, missing_setting, unknown_destination

SIGNATURE_HEADER = "X-Loop-Signature"


def sign(body: bytes, *, secret: str, timestamp: int) -> str:
    """The ``X-Loop-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(body: bytes, header: str, *, secret: str, tolerance: int = 300, now: float | None = None) -> bool:
    """What a receiver does (also in docs/channels.md): recompute the HMAC, compare in constant time, and refuse
    a timestamp older than ``tolerance`` seconds (a replayed request)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def body_of(message: Message) -> bytes:
    document: dict[str, Any] = {
        "id": delivery_id(message),
        "event": message.extra.get("event") or "",
        "created_at": message.extra.get("created_at") or "",
        "data": message.extra.get("data") if message.extra.get("data") is not None else {"text": message.body},
    }
    return json.dumps(document, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":")).encode()


def delivery_id(message: Message) -> str:
    notification = message.extra.get("notification_id")
    return f"loop-notification-{notification}" if notification else message.idempotency_key


@register_backend
class WebhookBackend(ChannelBackend):
    name = "webhook"
    capabilities = Capabilities(max_batch_size=50, idempotent=False, channels=frozenset({"webhook"}))

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        destinations = destinations_for(messages, kind="webhook")
        results = []
        with session(pool_size=2) as http:
            for message in messages:
                destination = destinations.get(message.to) if isinstance(message.to, str) else None
                if destination is None:
                    results.append(unknown_destination(message))
                    continue
                url, secret = destination.resolved_url(), destination.resolved_secret()
                if not url:
                    results.append(missing_setting(message, "the URL", destination.url_env))
                elif not secret:
                    results.append(missing_setting(message, "the signing secret", destination.secret_env))
                else:
                    results.append(self._post(http, url, secret, message))
        return results

    @staticmethod
    def _post(http: requests.Session, url: str, secret: str, message: Message) -> SendResult:
        body = body_of(message)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Loop-Event": str(message.extra.get("event") or ""),
            "X-Loop-Delivery": delivery_id(message),
            SIGNATURE_HEADER: sign(body, secret=secret, timestamp=int(time.time())),
        }
        try:
            response = http.post(
                url, data=body, headers=headers, timeout=settings.LOOP_TEAM_TIMEOUT, allow_redirects=False
            )
        except requests.RequestException as exc:
            return SendResult(
                send_id=message.send_id, ok=False, error=f"webhook: {describe_exception(exc)}", transient=True
            )
        if 200 <= response.status_code < 300:
            return SendResult(
                send_id=message.send_id, ok=True, provider_message_id=response.headers.get("X-Request-Id", "")[:255]
            )
        error = f"webhook answered {response.status_code} {response.reason or ''}".strip()
        if is_transient_status(response.status_code):
            return SendResult(
                send_id=message.send_id, ok=False, error=error, transient=True, retry_after=retry_after(response)
            )
        return SendResult(send_id=message.send_id, ok=False, error=error)
