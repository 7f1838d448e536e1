"""Per-API-key rate limiting in fixed windows, counted in the shared cache (Redis in production).

DRF's SimpleRateThrottle keeps a list of every request time per client, which does not scale to thousands of
requests per second; a counter per window does. Over the limit the answer is 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.throttling import BaseThrottle

PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(rate: str) -> tuple[int, int]:
    """'1000/s' → (1000, 1). Raises ImproperlyConfigured for anything else, so a typo never disables limiting."""
    try:
        count, period = rate.split("/")
        return int(count), PERIODS[period.strip().lower()]
    except (ValueError, KeyError):
        raise ImproperlyConfigured(f"A rate looks like '1000/s' or '60000/min'; got {rate!r}.") from None


class ApiKeyThrottle(BaseThrottle):
    setting = "LOOP_API_RATE_LIMIT"

    def allow_request(self, request, view):
        key = request.auth
        if key is None or not hasattr(key, "pk"):
            return True
        limit, period = parse_rate(getattr(settings, self.setting))
        now = time.time()
        window = int(now // period)
        cache_key = f"throttle:{self.setting}:{key.pk}:{window}"
        self._wait = (window + 1) * period - now
        backend = caches["default"]
        if isinstance(backend, RedisCache):
            # One round trip per request: INCR creates the counter; the request that created it (count 1) bounds
            # its life with EXPIRE. (Each window has its own key, so a counter left without a TTL by a process that
            # died in between is never read again.)
            full_key = backend.make_and_validate_key(cache_key)
            client = backend._cache.get_client(full_key, write=True)
            count = client.incr(full_key)
            if count == 1:
                client.expire(full_key, period + 1)
            return count <= limit
        cache.add(cache_key, 0, timeout=period + 1)
        try:
            count = cache.incr(cache_key)
        except ValueError:  # expired between add and incr
            cache.set(cache_key, 1, timeout=period + 1)
            count = 1
        self._wait = (window + 1) * period - now
        return count <= limit

    def wait(self):
        return max(1, math.ceil(self._wait))
