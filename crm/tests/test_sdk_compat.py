"""The shop SDKs, unchanged, against a live server process (gunicorn, 2 workers) on the test database.

Segment's ``segment-analytics-python`` and RudderStack's ``rudder-sdk-python`` (which gzips every batch) are pointed
at ``http://HOST/api`` and send 10,000 track/identify/page messages from 300 users. On the way, a proxy loses the
server's answer to every tenth request after the server stored the batch, so the SDK really retries it, and 1,000
messages are sent a second time with the same ids, as a shop's own retry would. Exactly 10,000 events must land,
each message id once, with no error reported to the SDK and no 5xx answered. An SDK with a wrong key must hear 401
through its ``on_error`` callback, with nothing stored; malformed, oversized and unauthenticated requests get clear
4xx answers from the same server.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import rudderstack.analytics
import segment.analytics

from crm.models import ApiKey, Contact, Event, RejectedMessage, Source
from crm.services.apikeys import api_key_create
from crm.services.event_processing import events_process_pending
from crm.tests.live import FlakyProxy, run_live_server

EVENTS = 10_000
RESENT = 1_000
USERS = 300
ANONYMOUS_VISITORS = 100
BATCH = 100

SDKS = {
    # name: (client class, options). Both gzip as they do by default: Segment's does not, RudderStack's does.
    "segment": (segment.analytics.Client, {}),
    "rudderstack": (rudderstack.analytics.Client, {}),
}
DEFAULT_GZIP = {"segment": False, "rudderstack": True}


@pytest.fixture
def server(transactional_db, tmp_path):
    with run_live_server(log_path=tmp_path / "server.log") as live:
        yield live


@pytest.fixture
def source(transactional_db) -> Source:
    return Source.objects.create(name="shop")


def write_key(source: Source) -> str:
    return api_key_create(source=source, name="shop backend", scopes=[ApiKey.Scope.WRITE_EVENTS])[1]


@dataclass
class Errors:
    """What the SDK reported through ``on_error``: one entry per failed batch."""

    reported: list[tuple[BaseException, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, error: BaseException, batch: list) -> None:
        with self.lock:
            self.reported.append((error, len(batch)))

    def statuses(self) -> set[Any]:
        return {getattr(error, "status", type(error).__name__) for error, _size in self.reported}


def make_client(sdk: str, *, key: str, host: str, errors: Errors):
    client_class, options = SDKS[sdk]
    return client_class(
        write_key=key,
        host=host,
        on_error=errors,
        upload_size=BATCH,
        thread=3,
        max_queue_size=EVENTS + RESENT,
        max_retries=6,
        timeout=30,
        **options,
    )


def shutdown(client) -> None:
    """Flush, then stop every consumer thread. (Both SDKs keep only the last of their ``thread`` consumers in
    ``client.consumers``, so ``client.join()`` would leave the others running.)"""
    client.flush()
    consumers = [t for t in threading.enumerate() if getattr(t, "queue", None) is client.queue]
    for consumer in consumers:
        consumer.pause()
    for consumer in consumers:
        consumer.join(timeout=10)


def shop_calls(sdk: str) -> list[tuple[str, dict[str, Any]]]:
    """10,000 SDK calls (method, keyword arguments) with explicit message ids: identify, page and track, some of
    them commerce events and anonymous page views, in a fixed pseudo-random order."""
    rng = random.Random(f"{sdk}-shop")
    calls: list[tuple[str, dict[str, Any]]] = []
    for i in range(EVENTS):
        user = f"user-{rng.randrange(USERS):03d}"
        message_id = f"{sdk}-{i:05d}"
        roll = rng.random()
        if i < USERS:  # every user identifies first
            user = f"user-{i:03d}"
            traits = {"email": f"{user}@example.com", "name": f"고객 {i}", "plan": rng.choice(["free", "pro"])}
            calls.append(("identify", {"user_id": user, "traits": traits, "message_id": message_id}))
        elif roll < 0.05:
            visitor = f"visitor-{rng.randrange(ANONYMOUS_VISITORS):03d}"
            page = {"path": "/", "title": "홈"}
            calls.append(
                ("page", {"anonymous_id": visitor, "name": "Home", "properties": page, "message_id": message_id})
            )
        elif roll < 0.35:
            path = f"/products/p-{rng.randrange(50)}"
            calls.append(
                ("page", {"user_id": user, "name": "Product", "properties": {"path": path}, "message_id": message_id})
            )
        elif roll < 0.45:
            product = {"product_id": f"p-{rng.randrange(50)}", "price": 1000 * rng.randrange(1, 90), "quantity": 1}
            calls.append(
                ("track", {"user_id": user, "event": "Product Added", "properties": product, "message_id": message_id})
            )
        elif roll < 0.48:
            order = {"order_id": f"{sdk}-o-{i}", "total": 1000 * rng.randrange(5, 300), "currency": "KRW"}
            calls.append(
                ("track", {"user_id": user, "event": "Order Completed", "properties": order, "message_id": message_id})
            )
        else:
            viewed = {"product_id": f"p-{rng.randrange(50)}", "category": rng.choice(["shirts", "shoes"])}
            calls.append(
                ("track", {"user_id": user, "event": "Product Viewed", "properties": viewed, "message_id": message_id})
            )
    return calls


def send(client, calls: list[tuple[str, dict[str, Any]]]) -> None:
    for method, kwargs in calls:
        queued, message = getattr(client, method)(**kwargs)
        assert queued, f"the SDK's queue refused {message['messageId']}"


@pytest.mark.e2e
@pytest.mark.parametrize("sdk", list(SDKS))
def test_sdk_delivers_every_event_exactly_once_despite_retries(sdk, server, source):
    key = write_key(source)
    errors = Errors()
    calls = shop_calls(sdk)
    with FlakyProxy(server.url, drop_every=10) as proxy:
        client = make_client(sdk, key=key, host=f"{proxy.url}/api", errors=errors)
        assert client.gzip is DEFAULT_GZIP[sdk]
        try:
            started = time.monotonic()
            send(client, calls)
            client.flush()
            elapsed = time.monotonic() - started
            send(client, calls[:: EVENTS // RESENT])  # the shop resends 1,000 of them with the same ids
        finally:
            shutdown(client)

    stats = proxy.stats
    print(
        f"\n{sdk}: {EVENTS} events in {elapsed:.1f} s = {EVENTS / elapsed:.0f} events/s through the proxy; "
        f"{stats.requests} requests, {stats.dropped} answers lost and retried, {stats.messages} messages posted, "
        f"{stats.duplicates} duplicates skipped"
    )
    assert errors.reported == [], f"the SDK reported errors: {errors.reported[:5]}\n{server.log_tail()}"
    assert stats.statuses == {200: stats.requests}, f"answers other than 200: {stats.statuses}\n{server.log_tail()}"
    assert stats.dropped >= 5, stats  # the SDK really retried
    assert stats.stored == EVENTS
    assert stats.duplicates == stats.messages - EVENTS >= RESENT + stats.dropped

    landed = list(Event.objects.filter(source=source).values_list("message_id", flat=True))
    assert len(landed) == EVENTS
    assert set(landed) == {kwargs["message_id"] for _method, kwargs in calls}
    assert not RejectedMessage.objects.exists()
    assert Contact.objects.filter(external_id__startswith="user-").count() == USERS
    events_process_pending()  # what a worker does right after the server answered
    identified = Contact.objects.get(external_id="user-007")  # identify traits: Segment's in traits, Rudder's in
    assert (identified.email, identified.name) == ("user-007@example.com", "고객 7")  # context.traits
    assert Event.objects.filter(source=source, type="identify").count() == USERS


@pytest.mark.e2e
@pytest.mark.parametrize("sdk", list(SDKS))
def test_sdk_with_a_wrong_key_hears_401_and_nothing_lands(sdk, server, source):
    write_key(source)  # a valid key exists; the SDK uses another
    errors = Errors()
    client = make_client(sdk, key="loop_0badc0de_" + "x" * 43, host=f"{server.url}/api", errors=errors)
    try:
        send(client, shop_calls(sdk)[:250])
    finally:
        shutdown(client)
    assert errors.statuses() == {401}, errors.reported
    assert sum(size for _error, size in errors.reported) == 250
    assert {getattr(error, "code", None) for error, _size in errors.reported} == {"authentication_failed"}
    assert not Event.objects.exists()
    assert not Contact.objects.exists()


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.mark.e2e
def test_bad_requests_get_clear_4xx_answers_from_the_live_server(server, source):
    key = write_key(source)
    batch_url = f"{server.url}/api/v1/batch"
    track_url = f"{server.url}/api/v1/track"
    good = {"batch": [{"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-1"}]}
    auth = {"Authorization": _basic(key), "Content-Type": "application/json"}

    def post(body: bytes, headers: dict[str, str], url: str = batch_url) -> requests.Response:
        return requests.post(url, data=body, headers=headers, timeout=30)

    cases = {
        "no key": (post(json.dumps(good).encode(), {"Content-Type": "application/json"}), 401, "not_authenticated"),
        "unknown key": (
            post(json.dumps(good).encode(), {**auth, "Authorization": _basic("loop_nope_nope")}),
            401,
            "authentication_failed",
        ),
        "malformed JSON": (post(b'{"batch": [', auth), 400, "parse_error"),
        "NaN is not JSON": (post(b'{"batch": [{"type": "track", "x": NaN}]}', auth), 400, "parse_error"),
        "not a batch": (post(b'{"batch": "x"}', auth), 400, "invalid_request"),
        "no valid message": (post(b'{"batch": [{"type": "track", "userId": "u"}]}', auth), 400, "invalid_request"),
        "oversized": (post(b'{"batch": ["' + b"x" * 600_000 + b'"]}', auth), 400, "too_large"),
        "gzip bomb": (
            post(
                gzip.compress(b'{"batch": [' + b" " * (20 * 1024 * 1024) + b"]}"), {**auth, "Content-Encoding": "gzip"}
            ),
            400,
            "too_large",
        ),
        "corrupt gzip": (post(b"not gzip at all", {**auth, "Content-Encoding": "gzip"}), 400, "parse_error"),
        "message over 32 KB": (
            post(json.dumps({**good["batch"][0], "properties": {"x": "y" * 40_000}}).encode(), auth, track_url),
            400,
            "too_large",
        ),
        "XML": (post(b"<batch/>", {**auth, "Content-Type": "application/xml"}), 415, "unsupported_media_type"),
    }
    for name, (response, status, code) in cases.items():
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        body = response.json()
        assert body["code"] == code, (name, body)
        assert body["message"], (name, body)
    assert cases["no key"][0].headers["WWW-Authenticate"].startswith("Basic")
    assert not Event.objects.exists()
    # The same server still takes a good batch.
    assert post(json.dumps(good).encode(), auth).json() == {"success": True, "stored": 1, "duplicates": 0}
