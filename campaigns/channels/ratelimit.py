"""Provider rate limits (messages per second) honoured across every worker: a token bucket in Redis when the
cache or broker is Redis, in the database otherwise.

A bucket holds up to ``capacity`` tokens (default: one second's worth) and refills at ``rate`` tokens per second;
sending n messages takes n tokens. ``take(n)`` is one atomic step on the shared store (a Lua script in Redis; a row
locked with ``SELECT … FOR UPDATE`` in the database) that either takes the tokens or says how long until there are
enough. ``acquire(n, max_wait=…)`` waits (with the injected ``sleep``) and gives up when the wait would exceed
``max_wait``: the backend then reports the batch as a transient failure and the pipeline retries it later, so a
worker never blocks for long.

Clock and sleep are injected (``clock=time.time``, ``sleep=time.sleep``) so tests control time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

from django.conf import settings
from django.db import transaction

_LUA_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
local wait = 0
if tokens >= n then
  tokens = tokens - n
else
  wait = (n - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 60000)
return tostring(wait)
"""


class Store(Protocol):
    def take(self, key: str, *, n: float, rate: float, capacity: float, now: float) -> float: ...


def _refill(tokens: float, updated: float, *, now: float, rate: float, capacity: float) -> float:
    return min(capacity, tokens + max(0.0, now - updated) * rate)


class RedisStore:
    def __init__(self, client) -> None:
        self.client = client
        self.script = client.register_script(_LUA_TAKE)

    def take(self, key: str, *, n: float, rate: float, capacity: float, now: float) -> float:
        return float(self.script(keys=[f"loop:ratelimit:{key}"], args=[rate, capacity, now, n]))


class DatabaseStore:
    def take(self, key: str, *, n: float, rate: float, capacity: float, now: float) -> float:
        from campaigns.models import RateLimitBucket

        with transaction.atomic():
            bucket, _created = RateLimitBucket.objects.select_for_update().get_or_create(
                key=key, defaults={"tokens": capacity, "updated": now}
            )
            tokens = _refill(bucket.tokens, bucket.updated, now=now, rate=rate, capacity=capacity)
            wait = 0.0
            if tokens >= n:
                tokens -= n
            else:
                wait = (n - tokens) / rate
            RateLimitBucket.objects.filter(pk=bucket.pk).update(tokens=tokens, updated=max(now, bucket.updated))
        return wait


class TokenBucket:
    def __init__(
        self,
        key: str,
        *,
        rate: float,
        capacity: float | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.key, self.rate = key, float(rate)
        self.capacity = float(capacity if capacity is not None else max(rate, 1))
        self.store = store if store is not None else default_store()
        self.clock, self.sleep = clock, sleep

    def take(self, n: int = 1) -> float:
        """Take ``n`` tokens now and return 0, or take nothing and return the seconds until ``n`` are there."""
        if n > self.capacity:
            raise ValueError(f"cannot take {n} tokens from a bucket of {self.capacity:g}")
        return self.store.take(self.key, n=n, rate=self.rate, capacity=self.capacity, now=self.clock())

    def acquire(self, n: int = 1, *, max_wait: float = 30.0) -> bool:
        """Wait until ``n`` tokens are taken; False (nothing taken) when that would take longer than ``max_wait``."""
        waited = 0.0
        while True:
            wait = self.take(n)
            if wait <= 0:
                return True
            if waited + wait > max_wait:
                return False
            self.sleep(wait)
            waited += wait


@lru_cache(maxsize=4)
def _redis_store(url: str) -> RedisStore:
    import redis

    return RedisStore(redis.Redis.from_url(url))


def default_store() -> Store:
    """Redis when ``LOOP_RATE_LIMIT_REDIS_URL`` is set (by default the cache's or broker's Redis), else the DB."""
    url = getattr(settings, "LOOP_RATE_LIMIT_REDIS_URL", "")
    return _redis_store(url) if url else DatabaseStore()


def provider_bucket(provider: str, **kwargs) -> TokenBucket:
    """The shared bucket of a provider, at ``LOOP_PROVIDER_RATES[provider]`` messages per second."""
    rate = settings.LOOP_PROVIDER_RATES.get(provider, 10)
    return TokenBucket(f"provider:{provider}", rate=rate, **kwargs)
