"""Action steps' side effects that leave the database: notifiers (a registry) and webhooks.

Notifiers are looked up by the name a step gives (``action_name``): ``log`` writes a log line, ``slack`` posts to a
Slack incoming webhook (``SLACK_WEBHOOK_URL``, https://api.slack.com/messaging/webhooks: ``POST`` of
``{"text": ...}``, answered ``200 ok``). Other apps or deployments add their own with ``register_notifier``.

Webhooks receive ``POST`` JSON ``{"journey", "step", "enrollment", "contact", "data"}`` with the headers
``Idempotency-Key: journey:<enrollment>:<step>`` (the same on a retry: the receiver can drop a repeat) and
``X-Loop-Signature: sha256=<hex HMAC of the body with JOURNEY_WEBHOOK_SECRET>``. A non-2xx answer or a network error
raises, and the engine retries the step with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import orjson
import requests
from django.conf import settings

from config.logging import get_logger

logger = get_logger(__name__)

#: Seconds a webhook or notifier call may take (connect, read).
HTTP_TIMEOUT = (5, 10)

Notifier = Callable[[str, dict[str, Any]], None]
NOTIFIERS: dict[str, Notifier] = {}


class ActionError(Exception):
    """An action that could not be done (retried with backoff by the engine)."""


def register_notifier(name: str, notifier: Notifier) -> None:
    NOTIFIERS[name] = notifier


def notify(name: str, text: str, data: dict[str, Any]) -> None:
    notifier = NOTIFIERS.get(name)
    if notifier is None:
        raise ActionError(f"unknown notifier {name!r}; known: {', '.join(sorted(NOTIFIERS))}")
    notifier(text, data)


def _log_notifier(text: str, data: dict[str, Any]) -> None:
    logger.info("journeys.notify", text=text, journey_id=data.get("journey"), contact_id=data.get("contact"))


def _slack_notifier(text: str, data: dict[str, Any]) -> None:
    url = settings.LOOP_SLACK_WEBHOOK_URL
    if not url:
        raise ActionError("SLACK_WEBHOOK_URL is not set")
    try:
        response = requests.post(url, json={"text": text}, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise ActionError(f"Slack: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise ActionError(f"Slack answered {response.status_code}: {response.text[:200]}")


register_notifier("log", _log_notifier)
register_notifier("slack", _slack_notifier)


def sign(body: bytes) -> str:
    secret = (settings.LOOP_JOURNEY_WEBHOOK_SECRET or settings.SECRET_KEY).encode()
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def call_webhook(url: str, payload: dict[str, Any], *, key: str) -> int:
    body = orjson.dumps(payload, default=str)
    headers = {"Content-Type": "application/json", "Idempotency-Key": key, "X-Loop-Signature": sign(body)}
    try:
        response = requests.post(url, data=body, headers=headers, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise ActionError(f"webhook: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        raise ActionError(f"webhook answered {response.status_code}")
    return response.status_code
