"""HTTP helpers shared by the provider backends (FCM, Slack, webhooks): one pooled ``requests`` session per
backend call, the ``Retry-After`` header, and short, safe descriptions of failures (never a URL or a secret)."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import requests
from requests.adapters import HTTPAdapter

USER_AGENT = "LoopCRM/1.0"


def session(*, pool_size: int = 10) -> requests.Session:
    """A session whose connection pool holds ``pool_size`` connections per host (for a bounded thread pool)."""
    http = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=0)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    http.headers["User-Agent"] = USER_AGENT
    return http


def retry_after(response: requests.Response, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def is_transient_status(status: int) -> bool:
    """Rate limited, or the server failed: trying again later may succeed."""
    return status == 429 or status >= 500


def describe_exception(exc: BaseException) -> str:
    """The kind of a network failure, without its message (which may contain the URL, e.g. a Slack webhook's)."""
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.ConnectionError):
        return "connection error"
    return type(exc).__name__
