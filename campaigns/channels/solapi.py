"""The Solapi REST API v4 (https://api.solapi.com), shared by the SMS and KakaoTalk backends.

- Authentication: every request carries ``Authorization: HMAC-SHA256 apiKey=<key>, date=<ISO 8601>,
  salt=<random>, signature=<hex HMAC-SHA256 of date+salt with the API secret>``. Key and secret come from the
  environment (``SOLAPI_API_KEY``, ``SOLAPI_API_SECRET``), never from the database.
- Sending: ``POST /messages/v4/send-many/detail`` with up to 10,000 messages; the answer lists the messages it
  accepted (``messageList``, status 2000) and those it refused at registration (``failedMessageList`` with a
  ``statusCode`` and ``statusMessage``). Delivery results arrive later by webhook (``campaigns.webhooks``).
- MMS images are uploaded first (``POST /storage/v1/files``, type MMS) and referenced by ``imageId``.

Status codes (https://developers.solapi.com/references/message-status-codes): 2000 accepted, 3000 handed to the
carrier, 4000 delivered; 1xxx refused at registration, 2xxx platform errors, 3xxx carrier/Kakao failures.
``classify`` maps a code to what the pipeline does with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

SEND_PATH = "/messages/v4/send-many/detail"
STORAGE_PATH = "/storage/v1/files"
SENDER_IDS_PATH = "/senderid/v1/numbers/active"

ACCEPTED_CODES = {"2000", "3000", "4000"}
DELIVERED_CODE = "4000"

#: Failures worth trying again later: the account, balance or platform, not the recipient or the content.
TRANSIENT_CODES = {
    "1030",  # 잔액 부족 (insufficient balance)
    "1070",  # 발송 가능 시간 아님 / temporarily unavailable
    "2001",
    "2002",
    "2003",
    "2004",
    "2005",  # platform errors
    "3040",  # 전송시간 초과 (carrier timeout)
    "3041",  # 이통사 일시 장애
}
#: The recipient's number does not exist or cannot receive texts: suppress SMS for the contact.
INVALID_NUMBER_CODES = {
    "1020",  # 수신번호 형식 오류
    "1021",  # 수신번호 없음
    "3059",  # 수신번호 형식 오류 (carrier)
    "3060",  # 결번
    "3062",  # 수신 불가 단말
}
#: KakaoTalk could not reach the person; the same text can go by SMS/LMS instead. Kakao's own codes as Solapi
#: reports them (the 3xxx of the Kakao BizMessage spec), with what each means.
KAKAO_FALLBACK_CODES = {
    "3018": "메시지를 전송할 수 없음 (카카오톡 미사용/차단/친구 아님)",
    "3027": "카카오톡을 사용하지 않는 사용자",
    "3104": "카카오톡 미사용자",
    "3105": "친구톡: 채널 친구가 아님",
    "3106": "알림톡 차단",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    transient: bool = False
    invalid_number: bool = False
    kakao_unreachable: bool = False


def classify(code: str) -> Outcome:
    code = str(code or "")
    if code in ACCEPTED_CODES:
        return Outcome(ok=True)
    if code in KAKAO_FALLBACK_CODES:
        return Outcome(ok=False, kakao_unreachable=True)
    if code in INVALID_NUMBER_CODES:
        return Outcome(ok=False, invalid_number=True)
    return Outcome(ok=False, transient=code in TRANSIENT_CODES or code.startswith("2"))


class SolapiError(Exception):
    """The whole request failed (HTTP error, unreadable answer)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def authorization(api_key: str, api_secret: str, *, date: str | None = None, salt: str | None = None) -> str:
    date = date or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    salt = salt or secrets.token_hex(16)
    signature = hmac.new(api_secret.encode(), (date + salt).encode(), hashlib.sha256).hexdigest()
    return f"HMAC-SHA256 apiKey={api_key}, date={date}, salt={salt}, signature={signature}"


class SolapiClient:
    def __init__(self, *, session: requests.Session | None = None) -> None:
        self.api_key = settings.LOOP_SOLAPI_API_KEY
        self.api_secret = settings.LOOP_SOLAPI_API_SECRET
        if not self.api_key or not self.api_secret:
            raise ImproperlyConfigured("Solapi needs SOLAPI_API_KEY and SOLAPI_API_SECRET in the environment.")
        self.base_url = settings.LOOP_SOLAPI_BASE_URL
        self.session = session or requests.Session()

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        return self._request("POST", path, payload)

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": authorization(self.api_key, self.api_secret), "Content-Type": "application/json"}
        try:
            response = self.session.request(
                method, self.base_url + path, json=payload, headers=headers, timeout=settings.LOOP_PROVIDER_HTTP_TIMEOUT
            )
        except requests.ConnectTimeout as exc:
            raise SolapiError("Solapi unreachable: ConnectTimeout", transient=True) from exc
        except requests.RequestException as exc:
            # The request may have reached Solapi: a message is never sent twice, so it is not retried.
            raise SolapiError(f"Solapi: delivery unknown ({type(exc).__name__})", transient=False) from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            code = body.get("errorCode", "") if isinstance(body, dict) else ""
            message = body.get("errorMessage", "") if isinstance(body, dict) else ""
            transient = response.status_code == 429 or response.status_code >= 500
            raise SolapiError(f"Solapi HTTP {response.status_code} {code}: {message}".strip(), transient=transient)
        return body

    def send_many(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """``POST /messages/v4/send-many/detail``; returns the parsed answer."""
        return self._post(SEND_PATH, {"messages": messages, "showMessageList": True})

    def active_sender_numbers(self) -> list[str]:
        """The caller numbers registered and active on the account (``GET /senderid/v1/numbers/active``)."""
        body = self._request("GET", SENDER_IDS_PATH)
        return [str(number) for number in body] if isinstance(body, list) else []

    def upload_mms_image(self, name: str, content: bytes) -> str:
        """The Solapi file ID of an MMS image, uploaded once per content (remembered in the cache for 30 days)."""
        digest = hashlib.sha256(content).hexdigest()
        key = f"solapi:mms:{digest}"
        file_id = cache.get(key)
        if file_id:
            return file_id
        body = self._post(STORAGE_PATH, {"file": base64.b64encode(content).decode(), "name": name, "type": "MMS"})
        file_id = body["fileId"]
        cache.set(key, file_id, 30 * 24 * 3600)
        return file_id
