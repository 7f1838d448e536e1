"""A provider that answers 500s, refuses connections or times out for a while (issue #12, faults): the pipeline
retries with backoff until the provider accepts, and no recipient is ever accepted twice.

The provider is a tiny local HTTP server speaking Mailgun's messages API (``POST /v3/<domain>/messages``), reached
through anymail's real Mailgun backend over a real socket: what fails is the network call, not a mock of it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
import time_machine

from campaigns.models import Send
from campaigns.services.runs import campaigns_tick
from campaigns.tests.factories import CampaignFactory
from campaigns.tests.test_pipeline import people, start

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=SEOUL)
DOMAIN = "mg.shop.example"


class FakeMailgun(ThreadingHTTPServer):
    """Answers each POST with the next behaviour of ``script`` (then 200 for ever): an HTTP status, or "hang" (no
    answer for longer than the client waits). Records the recipients of every request it accepted with 200."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[int | str] = []
        self.requests = 0
        self.accepted: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v3"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: FakeMailgun

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests += 1
            behaviour = self.server.script.pop(0) if self.server.script else 200
        if behaviour == "hang":
            time.sleep(1.5)  # the client gave up after 0.5 s; Mailgun may well have queued it
            with self.server.lock:
                self.server.accepted.update(recipients(self.headers["Content-Type"], body))
            return
        if behaviour == 200:
            with self.server.lock:
                self.server.accepted.update(recipients(self.headers["Content-Type"], body))
            payload = {"id": f"<{self.server.requests}@{DOMAIN}>", "message": "Queued. Thank you."}
        else:
            payload = {"message": "Internal error"}
        data = json.dumps(payload).encode()
        self.send_response(behaviour)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def recipients(content_type: str, body: bytes) -> list[str]:
    if content_type.startswith("multipart/form-data"):
        parsed = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=default_policy)
        parts = parsed.iter_parts()
        return [part.get_content() for part in parts if part.get_param("name", header="content-disposition") == "to"]
    return parse_qs(body.decode()).get("to", [])


@pytest.fixture
def provider(settings):
    server = FakeMailgun()
    settings.LOOP_CHANNEL_BACKENDS = {"email": "anymail"}
    settings.LOOP_PUBLIC_URL = "https://crm.shop.example"
    settings.DEFAULT_FROM_EMAIL = "Loop CRM <news@shop.example>"
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {
        "MAILGUN_API_KEY": "key-test-123",
        "MAILGUN_SENDER_DOMAIN": DOMAIN,
        "MAILGUN_API_URL": server.url,
        "REQUESTS_TIMEOUT": 0.5,
    }
    settings.LOOP_SEND_MAX_ATTEMPTS = 6
    yield server
    server.stop()


def tick_until_done(run, capture, *, start_at: datetime, limit: int = 80) -> list[datetime]:
    """The beat tick once a minute (the clock moved by time-machine, no sleeping) until no send is open."""
    ticks = []
    moment = start_at
    for _minute in range(limit):
        if not run.sends.filter(status__in=["queued", "held", "sending"]).exists():
            break
        moment += timedelta(minutes=1)
        with time_machine.travel(moment, tick=False), capture(execute=True):
            campaigns_tick(now=moment)
        ticks.append(moment)
    return ticks


def test_500s_for_a_while_are_retried_with_backoff_until_accepted_once(provider, django_capture_on_commit_callbacks):
    contacts = people(3, "email")
    provider.script = [500, 502, 503] * 3  # down for three rounds (one request per recipient and round)
    run = start(CampaignFactory(), now=NOON, capture=django_capture_on_commit_callbacks)

    assert set(run.sends.values_list("status", flat=True)) == {Send.Status.QUEUED}
    assert "Mailgun API response 50" in run.sends.first().error
    tick_until_done(run, django_capture_on_commit_callbacks, start_at=NOON)

    sends = list(run.sends.all())
    assert {s.status for s in sends} == {Send.Status.SENT}
    assert {s.attempts for s in sends} == {4}
    # Backoff 1 + 2 + 4 minutes after the first attempt at noon.
    assert {s.sent_at for s in sends} == {NOON + timedelta(minutes=7)}
    assert provider.requests == 12
    assert provider.accepted == Counter({c.email: 1 for c in contacts})


def test_connection_refused_while_the_provider_is_down_then_sent_once(provider, django_capture_on_commit_callbacks):
    contacts = people(2, "email")
    port = provider.server_address[1]
    provider.stop()  # nothing listens: connection refused
    run = start(CampaignFactory(), now=NOON, capture=django_capture_on_commit_callbacks)
    assert set(run.sends.values_list("status", flat=True)) == {Send.Status.QUEUED}
    assert "Connection" in run.sends.first().error

    tick_until_done(run, django_capture_on_commit_callbacks, start_at=NOON, limit=2)  # still down
    back = FakeMailgun.__new__(FakeMailgun)
    ThreadingHTTPServer.__init__(back, ("127.0.0.1", port), Handler)
    back.script, back.requests, back.accepted, back.lock = [], 0, Counter(), threading.Lock()
    back.thread = threading.Thread(target=back.serve_forever, daemon=True)
    back.thread.start()
    try:
        tick_until_done(run, django_capture_on_commit_callbacks, start_at=NOON + timedelta(minutes=2))
    finally:
        back.stop()

    assert set(run.sends.values_list("status", flat=True)) == {Send.Status.SENT}
    assert back.accepted == Counter({c.email: 1 for c in contacts})


def test_a_read_timeout_is_delivery_unknown_and_never_retried(provider, django_capture_on_commit_callbacks):
    contacts = people(2, "email")
    provider.script = ["hang"]
    run = start(CampaignFactory(), now=NOON, capture=django_capture_on_commit_callbacks)
    tick_until_done(run, django_capture_on_commit_callbacks, start_at=NOON, limit=20)
    deadline = time.monotonic() + 5
    while sum(provider.accepted.values()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the hung request completes on the server's side after the client gave up

    failed, sent = run.sends.order_by("status")  # one request per recipient: only the first one hung
    assert (failed.status, sent.status) == (Send.Status.FAILED, Send.Status.SENT)
    assert failed.error.startswith("delivery unknown")
    assert "Read timed out" in failed.error
    assert failed.attempts == 1
    assert provider.requests == 2  # no retry of the hung one: the provider had in fact queued it
    assert provider.accepted == Counter({c.email: 1 for c in contacts})
