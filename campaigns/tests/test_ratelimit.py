"""The shared token bucket: refill by elapsed time, waits reported and slept through an injected clock, in the
database and in Redis."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from campaigns.channels.ratelimit import DatabaseStore, RedisStore, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def exercise(store) -> None:
    clock = FakeClock()
    bucket = TokenBucket("test:solapi", rate=10, store=store, clock=clock, sleep=clock.sleep)
    assert bucket.take(10) == 0  # a full bucket: one second's worth
    assert bucket.take(1) == pytest.approx(0.1)  # empty: 0.1 s until one token
    clock.now += 0.5
    assert bucket.take(5) == 0  # refilled by 5
    assert bucket.take(3) == pytest.approx(0.3)
    # acquire sleeps until there are enough, through the injected sleep
    assert bucket.acquire(3, max_wait=5) is True
    assert sum(clock.slept) == pytest.approx(0.3)
    # refill never exceeds the capacity
    clock.now += 3600
    assert bucket.take(10) == 0
    assert bucket.take(1) > 0
    # a wait longer than max_wait gives up without taking anything
    assert bucket.acquire(10, max_wait=0.5) is False
    with pytest.raises(ValueError):
        bucket.take(11)


@pytest.mark.django_db(transaction=True)
def test_database_bucket():
    exercise(DatabaseStore())


@pytest.mark.django_db
def test_two_buckets_with_the_same_key_share_tokens():
    clock = FakeClock()
    first = TokenBucket("shared", rate=2, store=DatabaseStore(), clock=clock)
    second = TokenBucket("shared", rate=2, store=DatabaseStore(), clock=clock)
    assert first.take(2) == 0
    assert second.take(1) == pytest.approx(0.5)


def test_redis_bucket():
    import redis

    client = redis.Redis.from_url(os.environ.get("LOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"))
    try:
        client.ping()
    except redis.ConnectionError:
        if os.environ.get("LOOP_INTEGRATION") == "1":
            raise
        pytest.skip("no Redis at 127.0.0.1:6379")
    client.delete("loop:ratelimit:test:solapi")
    try:
        exercise(RedisStore(client))
    finally:
        client.delete("loop:ratelimit:test:solapi")


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"],
    reason="row locks across threads: PostgreSQL only (SQLite serializes writers anyway)",
)
def test_database_bucket_is_shared_by_concurrent_workers():
    """Eight threads (each its own connection, like workers) take from one bucket at the same instant: exactly
    its capacity is granted, never more."""
    import threading

    from django.db import connection

    granted = []
    barrier = threading.Barrier(8)

    def worker():
        try:
            barrier.wait()
            bucket = TokenBucket("test:concurrent", rate=5, store=DatabaseStore(), clock=lambda: 1_000.0)
            granted.extend(1 for _ in range(3) if bucket.take(1) == 0)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 5
