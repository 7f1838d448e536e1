"""App push through Firebase Cloud Messaging's HTTP v1 API (``fcm``).

- **Authentication**: an OAuth2 access token for a service account (google-auth), scope
  ``firebase.messaging``, from the service-account JSON key in ``FCM_CREDENTIALS_FILE`` (a path) or
  ``FCM_CREDENTIALS_JSON`` (the JSON itself). The token is cached until shortly before it expires.
- **Delivery**: HTTP v1 has no multicast, so one ``POST /v1/projects/{project}/messages:send`` per push token, sent
  concurrently by a bounded thread pool (``FCM_CONCURRENCY``) over one pooled session.
- **Outcome per contact** (a ``Message`` carries all of its active tokens): sent when at least one token accepted
  it; otherwise a transient failure when any token failed transiently (429, 5xx, timeout, expired access token;
  ``Retry-After`` is passed on), else permanent.
- **Dead tokens**: ``UNREGISTERED``, ``SENDER_ID_MISMATCH`` and ``INVALID_ARGUMENT`` about the token deactivate
  those devices, in one set-based ``UPDATE`` per batch; they are never tried again.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, ChannelBackend, Message, SendResult
from campaigns.channels.http import describe_exception, is_transient_status, retry_after, session

log = structlog.get_logger(__name__)

SCOPES = ("https://www.googleapis.com/auth/firebase.messaging",)
SEND_URL = "https://fcm.googleapis.com/v1/projects/{project}/messages:send"
#: FCM error codes (``FcmError.errorCode``) meaning the token will never work again.
DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
#: Refresh the access token this long before it expires.
TOKEN_MARGIN_SECONDS = 300


# --- Credentials ---------------------------------------------------------------------------------------------------


@dataclass
class _Account:
    source: str
    project: str
    credentials: Any  # google.oauth2.service_account.Credentials
    lock: threading.Lock


_account: _Account | None = None
_account_lock = threading.Lock()


def _service_account_info() -> tuple[str, dict[str, Any]]:
    text = settings.LOOP_FCM_CREDENTIALS_JSON
    source = "FCM_CREDENTIALS_JSON"
    if not text:
        path = settings.LOOP_FCM_CREDENTIALS_FILE
        if not path:
            raise ImproperlyConfigured(
                "The fcm backend needs a service-account key: set FCM_CREDENTIALS_FILE or FCM_CREDENTIALS_JSON."
            )
        source = f"FCM_CREDENTIALS_FILE={path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ImproperlyConfigured(f"FCM_CREDENTIALS_FILE cannot be read: {exc.strerror}") from None
    try:
        info = json.loads(text)
    except ValueError:
        raise ImproperlyConfigured(f"{source.split('=')[0]} is not valid JSON.") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ImproperlyConfigured(f"{source.split('=')[0]} is not a service-account key (type service_account).")
    return source + text, info


def account() -> _Account:
    """The service account of the current settings (built once per distinct key)."""
    global _account
    from google.oauth2 import service_account

    source, info = _service_account_info()
    with _account_lock:
        if _account is None or _account.source != source:
            project = settings.LOOP_FCM_PROJECT_ID or info.get("project_id") or ""
            if not project:
                raise ImproperlyConfigured("No FCM project: set FCM_PROJECT_ID or use a key with project_id.")
            try:
                credentials = service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
            except (ValueError, KeyError) as exc:
                raise ImproperlyConfigured(f"Invalid FCM service-account key: {type(exc).__name__}") from None
            _account = _Account(source=source, project=project, credentials=credentials, lock=threading.Lock())
        return _account


def access_token(acct: _Account, http: requests.Session, *, force: bool = False) -> str:
    """A valid OAuth2 access token (exchanging a signed JWT at Google's token endpoint when needed)."""
    import google.auth.transport.requests

    credentials = acct.credentials
    with acct.lock:
        expiry = credentials.expiry  # naive UTC
        fresh = (
            credentials.token
            and expiry is not None
            and (expiry - timezone.now().replace(tzinfo=None)).total_seconds() > TOKEN_MARGIN_SECONDS
        )
        if force or not fresh:
            credentials.refresh(google.auth.transport.requests.Request(session=http))
        return credentials.token


# --- Payload -------------------------------------------------------------------------------------------------------


def _data(message: Message) -> dict[str, str]:
    """FCM's data payload: string keys and string values only."""
    data: dict[str, str] = {"loop_send_id": str(message.send_id)}
    if message.extra.get("campaign_id") is not None:
        data["loop_campaign_id"] = str(message.extra["campaign_id"])
    if message.link_url:
        data["link"] = message.link_url
    extra = message.extra.get("data")
    if isinstance(extra, dict):
        for key, value in extra.items():
            data[str(key)] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return data


def fcm_message(message: Message, token: str) -> dict[str, Any]:
    """The ``message`` object of one ``messages:send`` request."""
    notification: dict[str, str] = {"body": message.body}
    if message.subject:
        notification["title"] = message.subject
    image = message.extra.get("image_url") or ""
    if image:
        notification["image"] = image
    body: dict[str, Any] = {"token": token, "notification": notification, "data": _data(message)}
    if message.link_url.startswith("https://"):
        body["webpush"] = {"fcm_options": {"link": message.link_url}}
    if image:
        body["apns"] = {"payload": {"aps": {"mutable-content": 1}}, "fcm_options": {"image": image}}
    return body


# --- Responses -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    token: str
    ok: bool
    name: str = ""
    code: str = ""
    transient: bool = False
    dead: bool = False
    retry_after: float | None = None


def _error_details(response: requests.Response) -> tuple[str, str, bool]:
    """(error code, message, is the token the invalid argument) from an HTTP v1 error body."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return f"HTTP {response.status_code}", "", False
    status = str(error.get("status") or f"HTTP {response.status_code}")
    text = str(error.get("message") or "")
    code = status
    about_token = "registration token" in text.lower()
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.firebase.fcm.v1.FcmError") and detail.get("errorCode"):
            code = str(detail["errorCode"])
        elif kind.endswith("google.rpc.BadRequest"):
            fields = {v.get("field") for v in detail.get("fieldViolations") or [] if isinstance(v, dict)}
            about_token = about_token or "message.token" in fields
    return code, text[:300], about_token


def classify(token: str, response: requests.Response) -> TokenOutcome:
    if response.status_code == 200:
        try:
            name = str(response.json().get("name") or "")
        except ValueError:
            name = ""
        return TokenOutcome(token=token, ok=True, name=name)
    code, _text, about_token = _error_details(response)
    if is_transient_status(response.status_code) or code in ("UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"):
        return TokenOutcome(token, ok=False, code=code, transient=True, retry_after=retry_after(response))
    if response.status_code == 401 and code == "UNAUTHENTICATED":  # our access token expired or was revoked
        return TokenOutcome(token, ok=False, code=code, transient=True)
    dead = code in DEAD_TOKEN_CODES or (code == "INVALID_ARGUMENT" and about_token)
    return TokenOutcome(token, ok=False, code=code, dead=dead)


# --- The backend ---------------------------------------------------------------------------------------------------


@register_backend
class FcmBackend(ChannelBackend):
    name = "fcm"
    capabilities = Capabilities(max_batch_size=500, idempotent=False, channels=frozenset({"push"}))

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        acct = account()
        concurrency = max(1, settings.LOOP_FCM_CONCURRENCY)
        url = SEND_URL.format(project=acct.project)
        jobs = [(m, token) for m in messages for token in (m.to if isinstance(m.to, list) else [m.to]) if token]
        outcomes: dict[int, list[TokenOutcome]] = {m.send_id: [] for m in messages}
        with session(pool_size=concurrency) as http:
            bearer = access_token(acct, http)
            throttled: list[float | None] = []  # after a 429 the rest of the batch waits for the retry

            def post(job: tuple[Message, str]) -> TokenOutcome:
                message, token = job
                if throttled:
                    wait = throttled[0]
                    return TokenOutcome(token, ok=False, code="QUOTA_EXCEEDED", transient=True, retry_after=wait)
                try:
                    response = http.post(
                        url,
                        json={"message": fcm_message(message, token)},
                        headers={"Authorization": f"Bearer {bearer}"},
                        timeout=settings.LOOP_FCM_TIMEOUT,
                    )
                except requests.RequestException as exc:
                    return TokenOutcome(token, ok=False, code=describe_exception(exc), transient=True)
                outcome = classify(token, response)
                if response.status_code == 429:
                    throttled.append(outcome.retry_after)
                return outcome

            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fcm") as pool:
                for (message, _token), outcome in zip(jobs, pool.map(post, jobs), strict=True):
                    outcomes[message.send_id].append(outcome)
        if any(o.code == "UNAUTHENTICATED" for per in outcomes.values() for o in per):
            acct.credentials.token = None  # the next call exchanges a new token
        results = [self._result(message, outcomes[message.send_id]) for message in messages]
        self._deactivate([o for per in outcomes.values() for o in per if o.dead])
        return results

    @staticmethod
    def _result(message: Message, outcomes: list[TokenOutcome]) -> SendResult:
        if not outcomes:
            return SendResult(send_id=message.send_id, ok=False, error="no push token")
        sent = [o for o in outcomes if o.ok]
        failed = [o for o in outcomes if not o.ok]
        summary = ", ".join(sorted({o.code for o in failed}))
        if sent:
            return SendResult(
                send_id=message.send_id,
                ok=True,
                provider_message_id=sent[0].name,
                error=f"{len(failed)} of {len(outcomes)} devices failed: {summary}" if failed else "",
            )
        transient = [o for o in failed if o.transient]
        waits = [o.retry_after for o in transient if o.retry_after is not None]
        return SendResult(
            send_id=message.send_id,
            ok=False,
            error=f"FCM: {summary}",
            transient=bool(transient),
            retry_after=max(waits) if waits else None,
        )

    @staticmethod
    def _deactivate(dead: list[TokenOutcome]) -> None:
        from crm.models import Device

        by_reason: dict[str, list[str]] = {}
        for outcome in dead:
            by_reason.setdefault(f"FCM {outcome.code}", []).append(outcome.token)
        for reason, tokens in by_reason.items():
            count = Device.objects.filter(token__in=tokens, active=True).update(active=False, deactivated_reason=reason)
            log.info("push_devices_deactivated", reason=reason, count=count)
