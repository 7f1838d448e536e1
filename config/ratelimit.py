"""Fixed-window counters in the shared cache (Redis in production) for the public pages and the admin login.

The API has its own per-key throttle (``crm.api.throttling``); this module limits what has no key: lead forms,
survey and unsubscribe links (per visitor address, per link) and failed admin logins (per user name and address).
Rates are written ``"20/min"`` (see ``crm.api.throttling.parse_rate``).
"""

from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

from crm.api.throttling import parse_rate


def client_address(request: HttpRequest) -> str:
    """The visitor's address as the audit trail sees it (``crm.audit.client_ip``): ``REMOTE_ADDR``, or behind a
    proxy listed in ``TRUSTED_PROXIES`` the address that proxy appended to X-Forwarded-For. What a visitor writes in
    X-Forwarded-For themselves is never used, so they cannot choose their own bucket."""
    from crm.audit import client_ip

    return client_ip(request) or "-"


def _bucket(name: str, parts: tuple[str, ...], window: int) -> str:
    # Parts may be long or contain anything (a token, a user name): hash them into a short, safe cache key.
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
    return f"ratelimit:{name}:{digest}:{window}"


def retry_after(rate: str) -> int:
    """Seconds until the current window of ``rate`` ends (for ``Retry-After``)."""
    _limit, period = parse_rate(rate)
    return max(1, math.ceil((int(time.time() // period) + 1) * period - time.time()))


def hit(name: str, *parts: str, rate: str) -> bool:
    """Count one request in the bucket (``name``, ``parts``); True when it is over ``rate``."""
    limit, period = parse_rate(rate)
    key = _bucket(name, parts, int(time.time() // period))
    if cache.add(key, 1, timeout=period + 1):
        return limit < 1
    try:
        return cache.incr(key) > limit
    except ValueError:  # the window's counter expired meanwhile
        cache.set(key, 1, timeout=period + 1)
        return limit < 1


def over(name: str, *parts: str, rate: str) -> bool:
    """True when the bucket is already over ``rate`` in this window (without counting a request)."""
    limit, period = parse_rate(rate)
    return (cache.get(_bucket(name, parts, int(time.time() // period))) or 0) >= limit


# --- Public signed links (unsubscribe, survey, preference center) -------------------------------------------------


def link_refused(request: HttpRequest, *, name: str) -> bool:
    """Before a signed link is checked: True when this address sent too many bad tokens in the window."""
    return over(f"{name}:bad", client_address(request), rate=settings.LOOP_BAD_LINK_RATE_LIMIT)


def link_bad(request: HttpRequest, *, name: str) -> None:
    """Count a forged, altered or malformed token from this address."""
    hit(f"{name}:bad", client_address(request), rate=settings.LOOP_BAD_LINK_RATE_LIMIT)


def link_over_limit(request: HttpRequest, *, name: str, token: str) -> bool:
    """Count a request for a valid link; True when the link was used more than ``SIGNED_LINK_RATE_LIMIT``.

    Valid links are limited per link, not per address: mailbox providers send the one-click unsubscribes of many
    recipients from a few addresses, and none of them may be refused."""
    return hit(name, token, rate=settings.LOOP_SIGNED_LINK_RATE_LIMIT)


def too_many_requests(rate: str) -> HttpResponse:
    """429 with ``Retry-After``, as plain text a person can read."""
    response = HttpResponse(
        _("Too many requests; please try again in a minute."), status=429, content_type="text/plain; charset=utf-8"
    )
    response["Retry-After"] = str(retry_after(rate))
    return response
