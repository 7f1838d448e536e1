"""Faults with real processes (issue #12): a Celery worker SIGKILLed mid-chunk, a worker SIGKILLed mid
``journeys.tick``, the broker restarted while tasks flow, two beat processes at once, the web process killed during a
batch POST. After each: every due message sent exactly once (one outbox row per send, none missing), every journey
enrollment moved once (one send per step, logged once, waiting at the right time), every event stored once.

Each test starts its *own* Redis (``redis-server`` on a free port, in a temporary folder, no persistence) as broker
and cache, so restarting or killing it never touches the shared servers; the database is the PostgreSQL test
database (``DATABASE_URL``). Workers run ``config.tests.fault_backends``: a slow outbox, so a chunk is still being
delivered when the fault strikes, and (``LOOP_FAULT_STEP_DELAY``) a slow journey send step, so a tick's batch is
claimed with its sends made but not committed when its worker is killed. A SIGKILL goes to the worker's whole process
group (main process and pool children). The test process plays beat where a tick is needed (it sends
``campaigns.tick`` and ``journeys.tick`` through the broker), so the bounds are seconds, not beat's minute.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db.models import Count
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from campaigns.models import Campaign, OutboxMessage, Run, Send
from campaigns.services.runs import run_create
from campaigns.tests.factories import CampaignFactory, SegmentFactory
from config.tests.fault_backends import STEP_MARK
from config.tests.test_runtime_e2e import BASE_DIR, Runtime, celery, free_port, processes_with_marker, wait_for
from crm.models import Consent, Contact, Event, Source
from crm.services.apikeys import api_key_create
from journeys.models import Enrollment, EnrollmentLog, Journey, Step
from journeys.services.engine import send_key
from journeys.services.enrollment import journey_enroll_contacts
from journeys.services.journeys import journey_activate

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CONTACTS = 120
FINISHED = (Send.Status.SENT, Send.Status.SKIPPED, Send.Status.FAILED)


class OwnRedis:
    """A throwaway redis-server on a free port (no RDB, no AOF: a restart loses every queued message)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.folder)]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        import redis

        def answers() -> bool:
            with contextlib.suppress(redis.RedisError, OSError):
                return redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
            return False

        wait_for(answers, 10, lambda: f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def runtime(transactional_db, tmp_path):
    """Processes of one test (see test_runtime_e2e), gone afterwards; the rows the test writes are committed."""
    processes = Runtime(tmp_path)
    yield processes
    processes.cleanup()


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def worker_env(runtime: Runtime, redis: OwnRedis, **extra: str) -> dict[str, str]:
    settings = {
        "CELERY_BROKER_URL": redis.url,
        "CACHE_URL": redis.url.replace("/0", "/1"),
        "CELERY_VISIBILITY_TIMEOUT": "4",  # a message a dead worker held is delivered again after 4 s
        "CHANNEL_BACKENDS": "email=slow_outbox",
        "SEND_CHUNK_SIZE": "20",
        "SEND_CLAIM_LEASE_SECONDS": "3",  # sends a dead worker claimed are recovered by the tick after 3 s
        "FREQUENCY_CAP_DAY": "0",
        "FREQUENCY_CAP_WEEK": "0",
        "LOOP_FAULT_SEND_DELAY": "0.15",
    }
    return runtime.env(**{**settings, **extra})


def start_worker(runtime: Runtime, env: dict[str, str], name: str):
    argv = celery("worker", "--loglevel", "INFO", "--concurrency", "2", f"--hostname={name}-{runtime.token}@%h")
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-I", "config.tests.fault_backends"]
    worker = runtime.start(name, argv, env=env)
    runtime.wait_for_output(worker, " ready.")
    return worker


def send_task(redis: OwnRedis, name: str, *args) -> None:
    """Publish a task on the test's own broker (the test process's default broker is another one)."""
    from config.celery import app

    with app.connection_for_write(redis.url) as conn:
        app.send_task(name, args=list(args), connection=conn)


def campaign_run(contacts: int = CONTACTS) -> Run:
    people = Contact.objects.bulk_create(Contact(email=f"c{n}@example.com") for n in range(contacts))
    Consent.objects.bulk_create(
        Consent(contact=c, purpose="email", granted=True, changed_at=timezone.now()) for c in people
    )
    campaign = CampaignFactory(segment=SegmentFactory(), status=Campaign.Status.SCHEDULED, frequency_cap_exempt=True)
    run, _created = run_create(campaign=campaign, scheduled_for=timezone.now())
    return run


def outbox_count() -> int:
    return OutboxMessage.objects.count()


def assert_each_send_delivered_once(run: Run, contacts: int = CONTACTS) -> None:
    statuses = Counter(run.sends.values_list("status", flat=True))
    assert statuses == {Send.Status.SENT: contacts}, statuses
    per_send = OutboxMessage.objects.values("send_id").annotate(n=Count("id")).filter(n__gt=1)
    assert not per_send.exists(), list(per_send)
    assert OutboxMessage.objects.filter(send__run=run).count() == contacts
    per_contact = run.sends.values("contact_id").annotate(n=Count("id")).filter(n__gt=1)
    assert not per_contact.exists()


def tick_until_all_finished(runtime: Runtime, redis: OwnRedis, run: Run, timeout: float = 45) -> None:
    """Beat's part, once a second: ``campaigns.tick`` re-queues stale claims and dispatches due sends."""

    def finished() -> bool:
        if run.sends.exclude(status__in=FINISHED).exists():
            with contextlib.suppress(Exception):  # the broker may be restarting
                send_task(redis, "campaigns.tick")
            return False
        return True

    statuses = lambda: Counter(run.sends.values_list("status", flat=True))  # noqa: E731
    wait_for(finished, timeout, lambda: f"every send to finish: {statuses()}")


def wait_mid_delivery(run: Run, runtime: Runtime) -> int:
    def mid() -> int:
        done = outbox_count()
        return done if 0 < done < CONTACTS // 2 and run.sends.filter(status=Send.Status.SENDING).exists() else 0

    return wait_for(mid, 30, lambda: f"delivery to start (outbox {outbox_count()}):{runtime.report()}")


def test_worker_sigkilled_mid_chunk_every_due_message_sent_exactly_once(runtime, own_redis):
    run = campaign_run()
    env = worker_env(runtime, own_redis)
    first = start_worker(runtime, env, "worker-a")
    send_task(own_redis, "campaigns.start_run", run.pk)

    delivered_before = wait_mid_delivery(run, runtime)
    runtime.stop(first, sig=signal.SIGKILL, group=True)  # the whole process group: main process and pool children
    stranded = run.sends.filter(status=Send.Status.SENDING).count()
    assert stranded > 0, "the kill should have left claimed, unfinished sends"

    start_worker(runtime, env, "worker-b")
    tick_until_all_finished(runtime, own_redis, run)

    assert_each_send_delivered_once(run)
    assert run.sends.filter(attempts__gt=1).count() >= 1  # the stranded ones were delivered by another attempt
    print(f"killed after {delivered_before} messages with {stranded} claimed sends in flight; all {CONTACTS} once")


JOURNEY_CONTACTS = 180
JOURNEY_BATCH = 20
JOURNEY_LEASE = 8  # seconds; the advance's deadline for calls out is a quarter of it (2 s)


def journey_due_at_a_message(contacts: int) -> tuple[Journey, Step, Step]:
    """A welcome journey (email, wait a day, follow-up email) with ``contacts`` consenting contacts entered by the
    enrollment service over the last three minutes: each is due at the welcome email. Returns (journey, welcome,
    follow-up)."""
    journey = Journey.objects.create(name="faults welcome", trigger=Journey.Trigger.API)
    email = {"kind": Step.Kind.SEND, "channel": "email", "advertising": False}
    welcome = Step.objects.create(
        journey=journey,
        position=1,
        name="welcome",
        subject="환영합니다",
        body="#{고객명}님, 가입을 환영합니다",
        **email,
    )
    Step.objects.create(journey=journey, position=2, name="a day", kind=Step.Kind.WAIT_DURATION, wait_minutes=24 * 60)
    follow_up = Step.objects.create(
        journey=journey, position=3, name="follow-up", subject="첫 주문 혜택", body="#{고객명}님, 첫 주문에", **email
    )
    journey = journey_activate(journey=journey)
    people = Contact.objects.bulk_create(Contact(email=f"j{n}@example.com", name=f"고객{n}") for n in range(contacts))
    Consent.objects.bulk_create(
        Consent(contact=c, purpose="email", granted=True, changed_at=timezone.now()) for c in people
    )
    now = timezone.now()
    with mock.patch("journeys.tasks.tick.delay"):  # the test plays beat: it publishes the tick on its own broker
        for ago, group in enumerate((people[0::3], people[1::3], people[2::3]), start=1):
            at = now - timedelta(minutes=ago)
            journey_enroll_contacts(journey=journey, contact_ids=[c.pk for c in group], now=at)
    return journey, welcome, follow_up


def test_worker_sigkilled_mid_journeys_tick_every_enrollment_moves_once(runtime, own_redis):
    """A tick advancing 180 due enrollments in batches of 20 (each batch sleeps after making its sends, before its
    commit) is SIGKILLed with its worker's process group while a batch is claimed and its sends made; earlier
    batches are committed. The killed batch's transaction rolls back (no send, no log), its claim holds until the
    lease ends, then another worker's tick moves it: every enrollment sends its welcome once and waits a day."""
    journey, welcome, follow_up = journey_due_at_a_message(JOURNEY_CONTACTS)
    enrollments = Enrollment.objects.filter(journey=journey)
    due = dict(
        enrollments.filter(current_step=welcome, status=Enrollment.Status.ACTIVE).values_list("id", "next_run_at")
    )
    assert len(due) == JOURNEY_CONTACTS
    env = worker_env(
        runtime,
        own_redis,
        LOOP_FAULT_SEND_DELAY="0",
        LOOP_FAULT_STEP_DELAY="0.6",
        JOURNEY_BATCH_SIZE=str(JOURNEY_BATCH),
        JOURNEY_CLAIM_LEASE_SECONDS=str(JOURNEY_LEASE),
    )
    first = start_worker(runtime, env, "worker-a")
    send_task(own_redis, "journeys.tick")

    waiting = enrollments.filter(status=Enrollment.Status.WAITING)

    def mid_tick() -> bool:
        """The third batch (or a later one) sleeps between its sends and its commit; earlier ones committed."""
        return first.output().count(STEP_MARK) >= 3 and waiting.exists()

    wait_for(mid_tick, 30, lambda: f"the tick to be mid-way (waiting {waiting.count()}):{runtime.report()}")
    runtime.stop(first, sig=signal.SIGKILL, group=True)
    killed_at, killed_wall = time.monotonic(), timezone.now()
    gone = lambda: not processes_with_marker(runtime.token)  # noqa: E731
    wait_for(gone, 5, lambda: f"worker-a's pool children to die with it: {runtime.leftovers()}")

    advanced_before = waiting.count()
    stranded = dict(enrollments.exclude(claim="").values_list("id", "claimed_at"))
    assert stranded, "the kill should have left claimed enrollments"
    assert advanced_before + len(stranded) < JOURNEY_CONTACTS, "the tick should have been killed mid-way"
    assert set(stranded).isdisjoint(waiting.values_list("id", flat=True))
    # The batch's sends and step log were made in its transaction and rolled back with it.
    assert not Send.objects.filter(key__in=[send_key(e, welcome.pk) for e in stranded]).exists()
    assert not EnrollmentLog.objects.filter(enrollment_id__in=stranded).exists()

    start_worker(runtime, {**env, "LOOP_FAULT_STEP_DELAY": "0"}, "worker-b")  # a plain worker recovers
    sends = Send.objects.filter(campaign__journey_inline_step=welcome)
    published = [0.0]

    def settled() -> bool:
        """Beat's part, once a second: ``journeys.tick`` and ``campaigns.tick`` until every enrollment waits and every
        message is delivered."""
        if waiting.filter(claim="").count() == JOURNEY_CONTACTS and not sends.exclude(status__in=FINISHED).exists():
            return True
        if time.monotonic() - published[0] >= 1:
            send_task(own_redis, "journeys.tick")
            send_task(own_redis, "campaigns.tick")
            published[0] = time.monotonic()
        return False

    def progress() -> str:
        statuses = Counter(enrollments.values_list("status", flat=True))
        return f"every enrollment to wait and every send to finish: {statuses}, sends {sends.count()}"

    wait_for(settled, 45, lambda: f"{progress()}:{runtime.report()}")
    recovery = time.monotonic() - killed_at

    # Every enrollment waits a day after the welcome (counted from when it was due), at the follow-up, unclaimed.
    rows = list(enrollments.values_list("id", "status", "current_step_id", "next_run_at", "claim", "attempts"))
    assert len(rows) == JOURNEY_CONTACTS
    for eid, status, step_id, next_run_at, claim, attempts in rows:
        assert (status, step_id, claim, attempts) == (Enrollment.Status.WAITING, follow_up.pk, "", 0), eid
        assert next_run_at == due[eid] + timedelta(days=1), eid
    # One welcome send per enrollment, under its key, delivered once to its contact.
    assert sorted(sends.values_list("key", flat=True)) == sorted(send_key(e, welcome.pk) for e in due)
    assert Counter(sends.values_list("status", flat=True)) == {Send.Status.SENT: JOURNEY_CONTACTS}
    assert Send.objects.count() == JOURNEY_CONTACTS  # nothing else was sent (the follow-up is a day away)
    outbox = Counter(OutboxMessage.objects.filter(send__in=sends).values_list("to", flat=True))
    assert outbox == {f"j{n}@example.com": 1 for n in range(JOURNEY_CONTACTS)}
    assert OutboxMessage.objects.count() == JOURNEY_CONTACTS
    # Each enrollment moved once: its log has the welcome sent once and the wait once.
    logged = Counter(EnrollmentLog.objects.filter(enrollment__journey=journey).values_list("enrollment_id", "action"))
    assert logged == {(e, action): 1 for e in due for action in ("send", "wait")}
    # The stranded batch was taken again only once its claim had expired.
    retaken = EnrollmentLog.objects.filter(enrollment_id__in=stranded, action="send").values_list("enrollment_id", "at")
    for eid, at in retaken:
        assert at >= stranded[eid] + timedelta(seconds=JOURNEY_LEASE), eid
    expired = (max(stranded.values()) + timedelta(seconds=JOURNEY_LEASE) - killed_wall).total_seconds()
    print(
        f"killed after {advanced_before} of {JOURNEY_CONTACTS} enrollments moved, {len(stranded)} claimed in the"
        f" killed batch; the claim expired {expired:.1f}s after the kill; all moved once, {recovery:.1f}s after it"
    )


def test_broker_restarted_while_tasks_flow_nothing_lost_nothing_twice(runtime, own_redis):
    run = campaign_run()
    env = worker_env(runtime, own_redis)
    worker = start_worker(runtime, env, "worker")
    send_task(own_redis, "campaigns.start_run", run.pk)

    wait_mid_delivery(run, runtime)
    own_redis.stop()  # every queued chunk task is gone with it
    time.sleep(1)  # down for a second while the worker delivers what it holds
    own_redis.start()

    tick_until_all_finished(runtime, own_redis, run)
    assert worker.popen.poll() is None, f"the worker should survive a broker restart:{runtime.report()}"
    assert_each_send_delivered_once(run)


def test_two_beats_at_once_make_one_run_per_occurrence(runtime, own_redis):
    """Two beat processes fire the same schedules; the recurring campaign's task is delivered twice for each
    occurrence (here every second, for an every-minute cron) and makes one run and one message per contact."""
    run_contacts = 30
    people = Contact.objects.bulk_create(Contact(email=f"b{n}@example.com") for n in range(run_contacts))
    Consent.objects.bulk_create(
        Consent(contact=c, purpose="email", granted=True, changed_at=timezone.now()) for c in people
    )
    campaign = CampaignFactory(
        segment=SegmentFactory(),
        status=Campaign.Status.SCHEDULED,
        schedule=Campaign.Schedule.RECURRING,
        cron_minute="*",
        cron_hour="*",
        frequency_cap_exempt=True,
    )
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=f"faults fire {runtime.token}",
        interval=every_second,
        task="campaigns.fire_recurring",
        args=f"[{campaign.pk}]",
    )
    env = worker_env(runtime, own_redis, LOOP_FAULT_SEND_DELAY="0")
    start_worker(runtime, env, "worker")
    began = timezone.now()
    beats = [
        runtime.start(f"beat-{n}", celery("beat", "--loglevel", "INFO", "--pidfile=", "-s", f"b{n}"), env=env)
        for n in (1, 2)
    ]
    for beat in beats:
        runtime.wait_for_output(beat, "beat: Starting...")

    def fired_twice_each() -> bool:
        return all(beat.output().count("Sending due task faults fire") >= 4 for beat in beats)

    wait_for(fired_twice_each, 30, lambda: f"both beats to fire several times:{runtime.report()}")
    runtime.stop(*beats, sig=signal.SIGTERM)

    runs = list(Run.objects.filter(campaign=campaign))
    assert runs, runtime.report()
    assert len({r.scheduled_for for r in runs}) == len(runs)  # one run per minute occurrence
    # At most one run per minute the test spanned (usually one or two; more only on a very slow machine).
    first, last = (moment.replace(second=0, microsecond=0) for moment in (began, timezone.now()))
    minutes = (last - first) // timedelta(minutes=1) + 1
    assert len(runs) <= minutes, (len(runs), minutes)

    def all_sent() -> bool:
        return Send.objects.filter(run__campaign=campaign).exclude(status__in=FINISHED).count() == 0

    wait_for(all_sent, 30, lambda: f"the sends to finish:{runtime.report()}")
    for run in runs:
        assert_each_send_delivered_once(run, run_contacts)


def post_batch(port: int, key: str, messages: list[dict]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/api/v1/batch",
            body=json.dumps({"batch": messages}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_web_process_killed_during_batch_posts_client_retries_store_each_event_once(runtime, own_redis):
    source = Source.objects.create(name="shop", kind=Source.Kind.SHOP)
    _key, secret = api_key_create(source=source, name="faults")
    port = free_port()
    env = runtime.env(CELERY_BROKER_URL=own_redis.url, CACHE_URL=own_redis.url.replace("/0", "/1"))
    env["API_RATE_LIMIT"] = "1000000/s"
    gunicorn = [str(Path(celery()[0]).parent / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port}"]
    gunicorn += ["--workers", "2", "--timeout", "30"]

    def start_web(name: str):
        web = runtime.start(name, gunicorn, env=env, cwd=BASE_DIR)
        wait_for(lambda: healthz(port), 30, lambda: f"gunicorn on {port}:{runtime.report()}")
        return web

    web = start_web("web-1")
    batches = [
        [
            {"type": "track", "event": "Product Viewed", "userId": f"u{b % 7}", "messageId": f"m-{b}-{i}"}
            for i in range(50)
        ]
        for b in range(60)
    ]
    outcome = {"retries": 0, "acknowledged": 0, "stop": False}

    def client() -> None:
        """The shop's SDK: a batch that got no 200 is sent again, same messageIds, until it gets one."""
        for batch in batches:
            while not outcome["stop"]:
                try:
                    status, _answer = post_batch(port, secret, batch)
                except (OSError, http.client.HTTPException):
                    status = None
                if status == 200:
                    outcome["acknowledged"] += 1
                    break
                outcome["retries"] += 1
                time.sleep(0.1)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_for(lambda: outcome["acknowledged"] >= 10, 30, lambda: f"batches to flow:{runtime.report()}")
        runtime.stop(web, sig=signal.SIGKILL)  # mid-stream: some request is in flight or about to be
        start_web("web-2")
        thread.join(60)
    finally:
        outcome["stop"] = True
        thread.join(5)

    assert outcome["acknowledged"] == len(batches)
    assert outcome["retries"] >= 1, "the kill should have made the client retry"
    stored = Counter(Event.objects.filter(source=source).values_list("message_id", flat=True))
    expected = {m["messageId"] for batch in batches for m in batch}
    assert set(stored) == expected
    assert max(stored.values()) == 1
    print(f"{len(expected)} events stored once each; the client retried {outcome['retries']} time(s)")


def healthz(port: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status in (200, 503)
    return False
