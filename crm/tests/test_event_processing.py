"""Event processing: stored events are applied to derived state by a worker, exactly once, in order per contact.

The API stores and queues (``event_record_batch``); ``events_process_pending`` (the ``crm.events_process`` task,
and the beat sweep ``crm.events_sweep``) applies profiles, consent, devices, commerce state and first/last seen, and
announces the events through ``crm.signals.events_recorded``. These tests run on SQLite and on PostgreSQL; the ones
that need PostgreSQL's row and advisory locks (or its one-statement path) are integration tests.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import OperationalError, connections

from crm import tasks
from crm.ingest.messages import parse_message
from crm.models import Cart, Contact, ContactAlias, Event, Order, Source, Tag, UnprocessedEvent
from crm.services import event_processing, ingest
from crm.services.contacts import contact_erase
from crm.services.event_processing import (
    LANE_LOCK_KEY,
    events_backlog,
    events_process_pending,
    events_retry_failed,
    events_sweep,
)
from crm.services.ingest import PROCESS_TRIGGER_KEY, event_record_batch
from crm.signals import events_recorded

T0 = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)


@pytest.fixture
def source(db):
    return Source.objects.create(name="shop")


def msgs(*raws, received_at=T0):
    return [parse_message(raw, index=i, received_at=received_at) for i, raw in enumerate(raws)]


def track(event, user="u1", mid=None, at=T0, **props):
    raw = {"type": "track", "event": event, "userId": user, "timestamp": at.isoformat(), "properties": props}
    if mid:
        raw["messageId"] = mid
    return raw


def added(mid, user="u1", at=T0, product="p1", quantity=1):
    return track("Product Added", user=user, mid=mid, at=at, product_id=product, price=1000, quantity=quantity)


@pytest.fixture
def announced():
    """Event ids announced through events_recorded, in the order received (receivers run in the batch)."""
    received: list[int] = []
    lock = threading.Lock()

    def receiver(sender, event_ids, **kwargs):
        with lock:
            received.extend(event_ids)

    events_recorded.connect(receiver)
    yield received
    events_recorded.disconnect(receiver)


def test_the_request_stores_and_queues_and_the_worker_applies_derived_state(source):
    identify = {
        "type": "identify",
        "userId": "u1",
        "messageId": "i",
        "timestamp": T0.isoformat(),
        "traits": {"email": "min@example.com", "grade": "VIP", "consents": {"sms": True}},
    }
    result = event_record_batch(source=source, messages=msgs(identify, added("a", quantity=2)))

    # Stored and visible (timeline, API) at once; derived state not yet.
    contact = Contact.objects.get()
    assert result.stored == 2
    assert list(contact.events.order_by("id").values_list("name", flat=True)) == ["Identify", "Product Added"]
    assert set(UnprocessedEvent.objects.values_list("event_id", flat=True)) == set(result.stored_event_ids)
    assert (contact.email, contact.attributes, contact.last_seen_at) == ("", {}, None)
    assert not Cart.objects.exists()
    assert events_backlog().pending == 2

    outcome = events_process_pending()

    assert (outcome.applied, outcome.failed, outcome.batches) == (2, 0, 1)
    contact.refresh_from_db()
    assert (contact.email, contact.attributes) == ("min@example.com", {"grade": "VIP"})
    assert contact.consents.get(purpose="sms").granted is True
    assert contact.first_seen_at == contact.last_seen_at == T0
    assert [(i["product_id"], i["quantity"]) for i in Cart.objects.get().items] == [("p1", 2)]
    assert not UnprocessedEvent.objects.exists()
    assert events_backlog().pending == 0


def test_a_second_run_or_a_redelivered_task_changes_nothing(source):
    event_record_batch(source=source, messages=msgs(added("a"), track("Order Completed", mid="o", order_id="o-1")))
    assert events_process_pending().applied == 2
    tasks.events_process_task()  # a redelivered task (acks_late) finds nothing
    assert events_process_pending().processed == 0
    assert Order.objects.count() == 1
    assert Contact.objects.get().order_count == 1


def test_a_batch_that_fails_midway_is_rolled_back_and_applied_once_when_retried(
    source, monkeypatch, announced, django_capture_on_commit_callbacks
):
    event_record_batch(source=source, messages=msgs(added("a"), added("b", at=T0 + timedelta(seconds=1))))
    real_seen = event_processing.contacts_seen_extend

    def outage(**kwargs):  # the database goes away after the carts were written
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(event_processing, "contacts_seen_extend", outage)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(OperationalError):
        events_process_pending()
    assert UnprocessedEvent.objects.count() == 2  # nothing applied, nothing lost
    assert not Cart.objects.exists()
    assert announced == []

    monkeypatch.setattr(event_processing, "contacts_seen_extend", real_seen)
    with django_capture_on_commit_callbacks(execute=True):
        assert events_process_pending().applied == 2
    assert Cart.objects.get().items[0]["quantity"] == 2  # each Product Added counted once
    assert sorted(announced) == sorted(Event.objects.values_list("id", flat=True))


def test_batches_follow_id_order_so_a_contacts_events_apply_in_order(source):
    # Two requests about the same contact, both waiting: added, then removed. Batches of one event each.
    event_record_batch(source=source, messages=msgs(added("a", at=T0)))
    event_record_batch(
        source=source, messages=msgs(track("Product Removed", mid="r", at=T0, product_id="p1", quantity=1))
    )
    outcome = events_process_pending(batch_size=1)
    assert (outcome.applied, outcome.batches) == (2, 2)
    assert Cart.objects.get().items == []


def test_within_a_batch_events_apply_in_time_then_id_order(source):
    # Same instant: the order they were sent in (ids) decides; an earlier time comes first whatever the id.
    event_record_batch(
        source=source,
        messages=msgs(
            track("Product Removed", mid="r2", at=T0 + timedelta(seconds=2), product_id="p2"),
            added("a1", product="p1"),
            track("Product Removed", mid="r1", product_id="p1"),
            added("a2", product="p2", at=T0 + timedelta(seconds=1)),
        ),
    )
    events_process_pending()
    assert Cart.objects.get().items == []


def test_identify_in_the_same_batch_comes_before_the_track_that_follows_it(source):
    identify = {"type": "identify", "userId": "u1", "timestamp": T0.isoformat(), "traits": {"consents": {"sms": True}}}
    withdraw = {"type": "identify", "userId": "u1", "timestamp": T0.isoformat(), "traits": {"consents": {"sms": False}}}
    event_record_batch(source=source, messages=msgs(identify, withdraw))
    events_process_pending()
    assert Contact.objects.get().consents.get(purpose="sms").granted is False


def test_each_event_is_announced_once_with_its_batch(source, announced, django_capture_on_commit_callbacks):
    first = event_record_batch(source=source, messages=msgs(*(added(f"m{i}") for i in range(5))))
    again = event_record_batch(source=source, messages=msgs(added("m0"), added("m5")))  # a retry and a new one
    assert (again.stored, again.duplicates) == (1, 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert announced == []  # nothing before processing
        events_process_pending(batch_size=4)
        events_process_pending()
    assert Counter(announced) == Counter(first.stored_event_ids + again.stored_event_ids)
    assert max(Counter(announced).values()) == 1


def test_a_failing_receiver_does_not_stop_processing(source, announced, caplog, django_capture_on_commit_callbacks):
    def broken(sender, event_ids, **kwargs):
        raise RuntimeError("journeys is down")

    def writes_then_breaks(sender, event_ids, **kwargs):
        Tag.objects.create(name="half-written")
        raise RuntimeError("journeys is down")

    events_recorded.connect(broken)
    events_recorded.connect(writes_then_breaks)
    try:
        event_record_batch(source=source, messages=msgs(added("a")))
        with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
            outcome = events_process_pending()
    finally:
        events_recorded.disconnect(broken)
        events_recorded.disconnect(writes_then_breaks)
    assert outcome.applied == 1
    assert len(announced) == 1
    assert caplog.text.count("events.receiver_failed") == 2
    assert not Tag.objects.filter(name="half-written").exists()  # the failing receiver's writes are undone
    assert not UnprocessedEvent.objects.exists()


def test_receivers_write_in_the_batch_transaction_so_a_rolled_back_batch_leaves_nothing(source, monkeypatch):
    def enroll(sender, event_ids, **kwargs):
        Tag.objects.bulk_create([Tag(name=f"enrolled-{i}") for i in event_ids])

    event_record_batch(source=source, messages=msgs(added("a"), added("b")))
    events_recorded.connect(enroll)
    try:
        processing = event_processing
        real_dequeue = processing._dequeue

        def crash_after_announcing(event_ids):
            raise OperationalError("the database went away")

        monkeypatch.setattr(processing, "_dequeue", crash_after_announcing)
        with pytest.raises(OperationalError):
            events_process_pending()
        assert not Tag.objects.filter(name__startswith="enrolled-").exists()
        assert UnprocessedEvent.objects.count() == 2

        monkeypatch.setattr(processing, "_dequeue", real_dequeue)
        events_process_pending()
        events_process_pending()  # nothing left: no second announcement
    finally:
        events_recorded.disconnect(enroll)
    assert Tag.objects.filter(name__startswith="enrolled-").count() == 2


def test_an_event_that_cannot_be_applied_is_isolated_and_kept_with_its_error(
    source, monkeypatch, announced, django_capture_on_commit_callbacks
):
    real = event_processing.commerce_apply

    def fragile(*, messages):
        messages = list(messages)
        if any(m.properties.get("product_id") == "bad" for _cid, m in messages):
            raise ValueError("unforeseen data")
        real(messages=messages)

    monkeypatch.setattr(event_processing, "commerce_apply", fragile)
    batch = [added(f"ok{i}", at=T0 + timedelta(seconds=i)) for i in range(6)]
    batch.insert(3, added("bad", product="bad", at=T0 + timedelta(seconds=2, milliseconds=500)))
    event_record_batch(source=source, messages=msgs(*batch))

    with django_capture_on_commit_callbacks(execute=True):
        outcome = events_process_pending()

    assert (outcome.applied, outcome.failed) == (6, 1)
    bad = Event.objects.get(message_id="bad")
    row = UnprocessedEvent.objects.get()
    assert row.event_id == bad.pk
    assert row.failed_at is not None
    assert "ValueError: unforeseen data" in row.error
    assert Cart.objects.get().items[0]["quantity"] == 6
    assert bad.pk not in announced
    assert len(announced) == 6
    assert (events_backlog().pending, events_backlog().failed) == (0, 1)
    assert events_process_pending().processed == 0  # failed rows are not claimed again by themselves

    monkeypatch.setattr(event_processing, "commerce_apply", real)  # the cause is fixed
    assert events_retry_failed() == 1
    assert events_process_pending().applied == 1
    assert {(i["product_id"], i["quantity"]) for i in Cart.objects.get().items} == {("p1", 6), ("bad", 1)}
    assert not UnprocessedEvent.objects.exists()


def test_events_of_an_erased_contact_are_not_applied(source):
    event_record_batch(source=source, messages=msgs(track("Order Completed", mid="o", order_id="o-1", total=5000)))
    contact_erase(contact=Contact.objects.get(), actor="admin")
    outcome = events_process_pending()
    assert (outcome.applied, outcome.skipped) == (0, 1)
    assert not Order.objects.exists()
    assert not UnprocessedEvent.objects.exists()


def test_events_of_a_contact_merged_away_while_queued_apply_to_the_surviving_contact(source):
    event_record_batch(source=source, messages=msgs(track("Signed Up", user="u-1", mid="s")))
    event_record_batch(
        source=source,
        messages=msgs({"type": "track", "event": "Product Added", "anonymousId": "a-9", "messageId": "p",
                       "properties": {"product_id": "p9", "price": 500}}),
    )  # fmt: skip
    # The visitor logs in before the worker got to the cart event: the anonymous contact is merged away.
    event_record_batch(
        source=source, messages=msgs({"type": "identify", "userId": "u-1", "anonymousId": "a-9", "messageId": "i"})
    )
    assert Contact.objects.count() == 1
    events_process_pending()
    user = Contact.objects.get(external_id="u-1")
    assert Cart.objects.get().contact == user
    assert user.last_seen_at is not None
    assert ContactAlias.objects.get().contact == user


def test_the_sweep_applies_events_whose_task_was_lost_and_warns_when_they_are_old(source, caplog):
    # Stored in a transaction that the test never commits: the on_commit hook that would queue a task never runs.
    event_record_batch(source=source, messages=msgs(added("a")), received_at=datetime.now(UTC))
    with caplog.at_level(logging.WARNING):
        assert events_sweep().applied == 1  # not old: applied without a warning
    assert "events.backlog" not in caplog.text

    event_record_batch(source=source, messages=msgs(added("b")), received_at=datetime.now(UTC))
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=5), tick=False), caplog.at_level(logging.WARNING):
        tasks.events_sweep_task()
    assert "events.backlog" in caplog.text
    assert not UnprocessedEvent.objects.exists()
    assert Cart.objects.get().items[0]["quantity"] == 2


def test_the_sweep_does_nothing_when_nothing_is_queued(source):
    assert events_sweep() is None


def test_a_processing_task_is_queued_once_while_one_is_pending(source, monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr(tasks.events_process_task, "delay", lambda: queued.append(1))
    from django.core.cache import cache

    cache.delete(PROCESS_TRIGGER_KEY)
    monkeypatch.setattr(ingest, "_trigger_seen_at", 0.0)
    with django_capture_on_commit_callbacks(execute=True):
        event_record_batch(source=source, messages=msgs(added("a")))
    monkeypatch.setattr(ingest, "_trigger_seen_at", ingest._trigger_seen_at - 1)  # this process asks again...
    with django_capture_on_commit_callbacks(execute=True):
        event_record_batch(source=source, messages=msgs(added("b")))  # ... and finds the task still queued
    with django_capture_on_commit_callbacks(execute=True):
        event_record_batch(source=source, messages=msgs(added("a")))  # a duplicate stores nothing, queues nothing
    assert queued == [1]
    events_process_pending()  # the task started: requests from now on queue the next one
    with django_capture_on_commit_callbacks(execute=True):
        event_record_batch(source=source, messages=msgs(added("c")))
    assert queued == [1]  # ... after this process's memo of the trigger (it asked moments ago)
    monkeypatch.setattr(ingest, "_trigger_seen_at", ingest._trigger_seen_at - 1)  # a second later
    with django_capture_on_commit_callbacks(execute=True):
        event_record_batch(source=source, messages=msgs(added("d")))
    assert queued == [1, 1]


def test_the_task_looks_again_after_its_linger_for_events_whose_request_relied_on_it(source, monkeypatch):
    event_record_batch(source=source, messages=msgs(added("a")))
    lingered = []

    def a_request_commits_meanwhile(seconds):  # its trigger memo said "a task is on its way": it queued none
        if not lingered:
            event_record_batch(source=source, messages=msgs(added("b")))
        lingered.append(seconds)

    monkeypatch.setattr(event_processing.time, "sleep", a_request_commits_meanwhile)
    tasks.events_process_task()
    assert lingered == [tasks.PROCESS_LINGER_SECONDS] * 2  # after "a", and after "b" (then nothing came)
    assert tasks.PROCESS_LINGER_SECONDS > ingest.PROCESS_TRIGGER_MEMO_SECONDS
    assert not UnprocessedEvent.objects.exists()
    assert Cart.objects.get().items[0]["quantity"] == 2


def test_healthz_reports_the_backlog(client, source):
    event_record_batch(source=source, messages=msgs(added("a")), received_at=datetime.now(UTC) - timedelta(seconds=30))
    body = client.get("/healthz").json()
    assert body["events"]["pending"] == 1
    assert body["events"]["failed"] == 0
    assert 29 <= body["events"]["oldest_seconds"] < 120
    events_process_pending()
    assert client.get("/healthz").json()["events"] == {"pending": 0, "failed": 0, "oldest_seconds": 0.0}


def test_admin_lists_the_backlog_and_retries_failed_events(admin_client, source):
    result = event_record_batch(source=source, messages=msgs(added("a"), added("b")))
    failed_id = result.stored_event_ids[0]
    UnprocessedEvent.objects.filter(event_id=failed_id).update(failed_at=T0, error="ValueError: boom")
    page = admin_client.get("/admin/crm/unprocessedevent/", HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    assert "1 events waiting" in page.content.decode()
    assert "1 failed" in page.content.decode()
    response = admin_client.post(
        "/admin/crm/unprocessedevent/",
        {"action": "retry_events", "_selected_action": [failed_id]},
        HTTP_ACCEPT_LANGUAGE="en",
        follow=True,
    )
    assert "1 event(s) queued again." in response.content.decode()
    assert not UnprocessedEvent.objects.filter(failed_at__isnull=False).exists()


# --- Concurrency: real transactions in separate connections ---------------------------------------------------------


def _in_threads(count: int, target) -> list:
    results: list = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(n):
        try:
            barrier.wait()
            results[n] = target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_apply_every_event_exactly_once(announced):
    source = Source.objects.create(name="shop")
    # 600 Product Added for 3 contacts (each adds 1 to the same cart line, so an event applied twice or never shows
    # in the quantities), and after each 100 of them 5 orders of u0 (which empty its cart).
    for n in range(6):
        start = T0 + timedelta(seconds=n * 100)
        batch = [added(f"{n}-{i}", user=f"u{i % 3}", at=start + timedelta(seconds=i)) for i in range(100)]
        batch += [
            track("Order Completed", user="u0", mid=f"o{n}-{j}", at=start + timedelta(seconds=99.5), order_id=f"{n}{j}")
            for j in range(5)
        ]
        event_record_batch(source=source, messages=msgs(*batch))

    results = _in_threads(2, lambda: events_process_pending(batch_size=50))

    assert sum(r.applied for r in results) == 630
    assert not UnprocessedEvent.objects.exists()
    quantities = {cart.contact.external_id: cart.items for cart in Cart.objects.select_related("contact")}
    assert quantities["u1"][0]["quantity"] == 6 * 33  # i = 1, 4, ..., 97 in each hundred
    assert quantities["u2"][0]["quantity"] == 6 * 33
    assert quantities["u0"] == []  # emptied by the orders after its last Product Added
    assert Contact.objects.get(external_id="u0").order_count == 30
    assert Counter(announced) == Counter(Event.objects.values_list("id", flat=True))


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_skips_rows_another_transaction_holds(postgresql):
    source = Source.objects.create(name="shop")
    result = event_record_batch(source=source, messages=msgs(*(added(f"m{i}") for i in range(4))))
    held = sorted(result.stored_event_ids)[:2]
    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:  # e.g. a worker that claimed them and has not committed yet
            cursor.execute("SELECT 1 FROM crm_unprocessedevent WHERE event_id = ANY(%s) FOR UPDATE", [held])
        outcome = events_process_pending()
        assert outcome.applied == 2
        assert sorted(UnprocessedEvent.objects.values_list("event_id", flat=True)) == held
        other.rollback()  # that worker died: its rows are free again
    finally:
        other.close()
    assert events_process_pending().applied == 2
    assert Cart.objects.get().items[0]["quantity"] == 4


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_second_worker_leaves_the_lane_to_the_one_applying(postgresql):
    source = Source.objects.create(name="shop")
    event_record_batch(source=source, messages=msgs(added("a")))
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [LANE_LOCK_KEY])
        outcome = events_process_pending()
        assert outcome.busy
        assert outcome.processed == 0
        assert UnprocessedEvent.objects.count() == 1
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LANE_LOCK_KEY])
    finally:
        other.close()
    assert events_process_pending().applied == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_known_contacts_are_stored_and_queued_in_one_statement(postgresql, django_assert_num_queries):
    """Outside a transaction (as in a request): one statement, no BEGIN/COMMIT, no lock."""
    source = Source.objects.create(name="shop")
    event_record_batch(
        source=source,
        messages=msgs(
            {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "i1"},
            {"type": "page", "anonymousId": "v1", "messageId": "p1"},
        ),
    )
    batch = msgs(
        added("k1", user="u1"),
        {"type": "page", "anonymousId": "v1", "messageId": "k2"},
        {"type": "track", "event": "X", "userId": "u1", "anonymousId": "a1", "messageId": "k3"},
        added("k1", user="u1"),  # duplicate inside the batch
        {"type": "page", "userId": "u1", "messageId": "i1"},  # duplicate of a stored message
    )
    with django_assert_num_queries(1):
        result = event_record_batch(source=source, messages=batch)
    assert (result.stored, result.duplicates) == (3, 2)
    assert UnprocessedEvent.objects.count() == 5


@pytest.mark.integration
def test_a_batch_mixing_known_and_new_contacts(postgresql, source):
    event_record_batch(source=source, messages=msgs({"type": "identify", "userId": "u1", "anonymousId": "a1"}))
    result = event_record_batch(
        source=source,
        messages=msgs(
            added("k", user="u1"),  # known
            added("n", user="u2"),  # new user
            {"type": "page", "anonymousId": "v9", "messageId": "v"},  # new visitor
            {"type": "track", "event": "X", "userId": "u2", "anonymousId": "v9", "messageId": "x"},  # visitor = u2
            {"type": "alias", "userId": "u1", "previousId": "u2", "messageId": "al"},  # u2 merged into u1
        ),
    )
    assert (result.stored, result.duplicates, result.contacts_created) == (5, 0, 1)  # v9 is u2
    assert set(Contact.objects.values_list("external_id", flat=True)) == {"u1"}
    u1 = Contact.objects.get()
    assert u1.events.count() == 6
    assert set(ContactAlias.objects.values_list("anonymous_id", flat=True)) == {"a1", "v9"}
    events_process_pending()
    assert Cart.objects.get(contact=u1).value == Decimal("2000")
