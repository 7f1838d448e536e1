"""The engine: claims with leases (a killed worker loses nothing and duplicates nothing), pausing, failures with
backoff and retry, branches, splits, actions, and the edit rule (positions migrate)."""

from __future__ import annotations

import json
from datetime import timedelta
from unittest import mock

import pytest
import responses
import time_machine
from django.conf import settings
from django.test import override_settings

from campaigns.models import OutboxMessage, Send
from campaigns.tests.factories import SegmentFactory
from crm.tests.factories import ContactFactory, EventFactory, OrderFactory, TagFactory
from journeys.actions import sign
from journeys.models import Enrollment, Journey, Step
from journeys.services.engine import enrollments_advance, enrollments_claim, journeys_tick, split_bucket
from journeys.services.enrollment import journey_enroll_contacts
from journeys.services.journeys import enrollments_retry, journey_activate, journey_pause
from journeys.tests.conftest import T0

pytestmark = pytest.mark.django_db


def journey(*steps: dict, **fields) -> Journey:
    """An active API-triggered journey with these steps (positions in order; edges by index: next=2, no=3)."""
    j = Journey.objects.create(name="j", trigger=Journey.Trigger.API, **fields)
    made = [
        Step.objects.create(
            journey=j, position=i, name=f"s{i}", **{k: v for k, v in s.items() if k not in ("next", "no")}
        )
        for i, s in enumerate(steps)
    ]
    for step, spec in zip(made, steps, strict=True):
        if "next" in spec or "no" in spec:
            step.next_step = made[spec["next"]] if spec.get("next") is not None else None
            step.no_step = made[spec["no"]] if spec.get("no") is not None else None
            step.save()
    return journey_activate(journey=j)


def sms(text: str) -> dict:
    return {"kind": Step.Kind.SEND, "channel": "sms", "body": text}


def consenting(n: int = 1, **fields):
    from crm.tests.factories import ConsentFactory

    contacts = ContactFactory.create_batch(n, **fields)
    for contact in contacts:
        ConsentFactory(contact=contact, purpose="sms")
    return contacts


def enroll(j, contacts, context=None, at=T0):
    with time_machine.travel(at, tick=False):
        return journey_enroll_contacts(journey=j, contact_ids=[c.pk for c in contacts], context=context, now=at)


def tick(at, capture):
    with time_machine.travel(at, tick=False), capture(execute=True):
        return journeys_tick(now=at)


# --- Claims ----------------------------------------------------------------------------------------------------


def test_a_worker_killed_after_claiming_loses_nothing_and_its_rows_are_reclaimed_after_the_lease(
    django_capture_on_commit_callbacks,
):
    j = journey({"kind": Step.Kind.WAIT_DURATION, "wait_minutes": 30}, sms("안녕하세요"))
    contacts = consenting(5)
    enroll(j, contacts)
    tick(T0, django_capture_on_commit_callbacks)  # all waiting until +30 min
    due = T0 + timedelta(minutes=30)
    with time_machine.travel(due, tick=False):
        token, ids = enrollments_claim(now=due, limit=100)  # the worker claims, then dies before advancing
    assert len(ids) == 5
    # Other ticks within the lease do not touch the claimed rows.
    assert tick(due + timedelta(seconds=15), django_capture_on_commit_callbacks).claimed == 0
    assert not Send.objects.exists()
    after_lease = due + timedelta(seconds=settings.LOOP_JOURNEY_CLAIM_LEASE + 1)
    result = tick(after_lease, django_capture_on_commit_callbacks)
    assert result.claimed == 5
    assert OutboxMessage.objects.count() == 5
    # The dead worker's late commit (had it survived) finds nothing of its own and writes nothing.
    assert enrollments_advance(token=token, ids=ids, now=after_lease) == {}
    assert OutboxMessage.objects.count() == 5
    assert set(Enrollment.objects.values_list("status", flat=True)) == {Enrollment.Status.COMPLETED}


def test_a_claims_lease_counts_from_when_it_was_made_not_from_the_ticks_start(django_capture_on_commit_callbacks):
    """A long tick claims its later batches later than its ``now``: their lease runs from the claim."""
    j = journey({"kind": Step.Kind.WAIT_DURATION, "wait_minutes": 30}, sms("안녕하세요"))
    enroll(j, consenting(3))
    tick(T0, django_capture_on_commit_callbacks)
    due = T0 + timedelta(minutes=30)
    lease = timedelta(seconds=settings.LOOP_JOURNEY_CLAIM_LEASE)
    claimed_at = due + lease  # the tick began at ``due`` and reached this batch a lease later
    _token, ids = enrollments_claim(now=due, limit=10, at=claimed_at)
    assert set(Enrollment.objects.filter(pk__in=ids).values_list("claimed_at", flat=True)) == {claimed_at}
    assert enrollments_claim(now=due, limit=10, at=claimed_at + lease - timedelta(seconds=1))[1] == []
    assert sorted(enrollments_claim(now=due, limit=10, at=claimed_at + lease + timedelta(seconds=1))[1]) == sorted(ids)


def test_a_step_run_twice_sends_one_message_thanks_to_the_send_key(django_capture_on_commit_callbacks):
    j = journey(sms("한 번만"))
    [contact] = consenting(1)
    [eid] = enroll(j, [contact])
    tick(T0, django_capture_on_commit_callbacks)
    # An operator (or a bug) puts the enrollment back on the send step: the key makes the send a no-op.
    Enrollment.objects.filter(pk=eid).update(
        status="active", next_run_at=T0, current_step=j.steps.get(), entry_key=f"c:{contact.pk}"
    )
    tick(T0 + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert OutboxMessage.objects.count() == 1


def test_claims_are_batched_and_every_due_enrollment_advances(django_capture_on_commit_callbacks):
    j = journey({"kind": Step.Kind.WAIT_DURATION, "wait_minutes": 5})
    enroll(j, ContactFactory.create_batch(25))
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        result = journeys_tick(now=T0, batch_size=10)
    assert (result.claimed, result.batches) == (25, 3)
    assert Enrollment.objects.filter(status="waiting", next_run_at=T0 + timedelta(minutes=5)).count() == 25


def test_a_paused_journey_holds_its_enrollments_and_resuming_continues_them(django_capture_on_commit_callbacks):
    j = journey({"kind": Step.Kind.WAIT_DURATION, "wait_minutes": 30}, sms("계속"))
    enroll(j, consenting(2))
    tick(T0, django_capture_on_commit_callbacks)
    journey_pause(journey=j)
    assert tick(T0 + timedelta(hours=2), django_capture_on_commit_callbacks).claimed == 0
    assert not Send.objects.exists()
    assert journey_enroll_contacts(journey=Journey.objects.get(pk=j.pk), contact_ids=[ContactFactory().pk]) == []
    journey_activate(journey=j)
    assert tick(T0 + timedelta(hours=2, seconds=15), django_capture_on_commit_callbacks).claimed == 2
    assert OutboxMessage.objects.count() == 2


# --- Failures --------------------------------------------------------------------------------------------------


@responses.activate
@override_settings(LOOP_JOURNEY_MAX_ATTEMPTS=3)
def test_a_failing_step_is_retried_with_backoff_then_failed_with_the_reason_and_can_be_retried(
    django_capture_on_commit_callbacks,
):
    url = "https://hooks.example.com/loop"
    j = journey({"kind": Step.Kind.ACTION, "action": "webhook", "webhook_url": url}, sms("이후 단계"))
    [contact] = consenting(1)
    [eid] = enroll(j, [contact], context={"order_id": "o-1"})
    responses.post(url, status=503)
    tick(T0, django_capture_on_commit_callbacks)
    e = Enrollment.objects.get(pk=eid)
    assert (e.status, e.attempts, e.next_run_at) == ("active", 1, T0 + timedelta(minutes=1))
    assert e.last_error == "ActionError: webhook answered 503"
    tick(T0 + timedelta(seconds=59), django_capture_on_commit_callbacks)  # not yet due
    assert len(responses.calls) == 1
    tick(T0 + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert Enrollment.objects.get(pk=eid).next_run_at == T0 + timedelta(minutes=3)  # 2 minutes later
    tick(T0 + timedelta(minutes=3), django_capture_on_commit_callbacks)
    e.refresh_from_db()
    assert (e.status, e.attempts, e.exit_reason) == ("failed", 3, "step failed: s0")
    assert e.entry_key is None
    assert not Send.objects.exists()

    responses.replace(responses.POST, url, status=200)
    assert enrollments_retry(ids=[eid], now=T0 + timedelta(hours=1)) == 1
    tick(T0 + timedelta(hours=1), django_capture_on_commit_callbacks)
    e.refresh_from_db()
    assert e.status == "completed"
    assert OutboxMessage.objects.count() == 1
    call = responses.calls[-1].request
    assert call.headers["Idempotency-Key"] == f"journey:{eid}:{j.steps.get(position=0).pk}"
    assert call.headers["X-Loop-Signature"] == sign(call.body)
    assert b'"order_id":"o-1"' in call.body


# --- Branches, splits, actions -------------------------------------------------------------------------------------


def test_branch_on_an_event_since_entering(django_capture_on_commit_callbacks):
    j = journey(
        {"kind": Step.Kind.WAIT_DURATION, "wait_minutes": 60},
        {"kind": Step.Kind.BRANCH, "condition": "event_since_entry", "condition_event": "Review Written", "no": 4},
        sms("리뷰 감사해요"),
        {"kind": Step.Kind.EXIT},  # ends the yes path (without it, contacts continue with the next position)
        sms("리뷰를 남겨 주세요"),
    )
    reviewer, silent = consenting(2)
    EventFactory(contact=reviewer, name="Review Written", occurred_at=T0 - timedelta(days=3))  # before: no
    enroll(j, [reviewer, silent])
    EventFactory(contact=reviewer, name="Review Written", occurred_at=T0 + timedelta(minutes=20))
    tick(T0, django_capture_on_commit_callbacks)
    tick(T0 + timedelta(minutes=60), django_capture_on_commit_callbacks)
    assert list(OutboxMessage.objects.filter(send__contact=reviewer).values_list("body", flat=True)) == [
        "리뷰 감사해요"
    ]
    assert list(OutboxMessage.objects.filter(send__contact=silent).values_list("body", flat=True)) == [
        "리뷰를 남겨 주세요"
    ]


def test_branch_on_segment_membership_and_on_data(django_capture_on_commit_callbacks):
    vip = TagFactory(name="vip")
    j = journey(
        {
            "kind": Step.Kind.BRANCH,
            "condition": "segment",
            "condition_segment": SegmentFactory(tag="vip"),
            "next": 1,
            "no": 2,
        },
        {"kind": Step.Kind.EXIT},
        {
            "kind": Step.Kind.BRANCH,
            "condition": "data",
            "condition_rules": [
                {"property": "event.value", "op": "gte", "value": 30000},
                {"property": "attributes.grade", "op": "eq", "value": "gold"},
            ],
            "next": 3,
            "no": None,
        },
        sms("골드 고객 전용"),
    )
    member, gold, cheap = consenting(1, tags=[vip]) + consenting(2, attributes={"grade": "gold"})
    enroll(j, [member, gold], context={"value": "39000"})
    enroll(j, [cheap], context={"value": 1000})
    tick(T0, django_capture_on_commit_callbacks)
    assert list(OutboxMessage.objects.values_list("send__contact", flat=True)) == [gold.pk]
    statuses = dict(Enrollment.objects.values_list("contact_id", "status"))
    assert statuses == {member.pk: "completed", gold.pk: "completed", cheap.pk: "completed"}


def test_random_split_is_stable_per_contact_and_follows_the_share(django_capture_on_commit_callbacks):
    j = journey(
        {"kind": Step.Kind.RANDOM_SPLIT, "split_percent": 30, "next": 1, "no": 2},
        {"kind": Step.Kind.ACTION, "action": "add_tag", "action_name": "A", "next": None},
        {"kind": Step.Kind.ACTION, "action": "add_tag", "action_name": "B"},
    )
    contacts = ContactFactory.create_batch(200)
    enroll(j, contacts)
    tick(T0, django_capture_on_commit_callbacks)
    split = j.steps.get(position=0)
    a = {c.pk for c in contacts if c.tags.filter(name="A").exists()}
    assert a == {c.pk for c in contacts if split_bucket(split.pk, c.pk) < 30}
    assert 40 <= len(a) <= 80
    assert not any(c.tags.filter(name="B").exists() for c in contacts if c.pk in a)


def test_set_attribute_and_notify(django_capture_on_commit_callbacks, caplog):
    j = journey(
        {"kind": Step.Kind.ACTION, "action": "set_attribute", "action_name": "journey_stage", "action_value": "온보딩"},
        {"kind": Step.Kind.ACTION, "action": "notify", "action_name": "log", "action_value": "#{고객명} 가입"},
    )
    [contact] = ContactFactory.create_batch(1, attributes={"grade": "gold"})
    enroll(j, [contact])
    tick(T0, django_capture_on_commit_callbacks)
    contact.refresh_from_db()
    assert contact.attributes == {"grade": "gold", "journey_stage": "온보딩"}
    assert Enrollment.objects.get().status == "completed"


@responses.activate
@override_settings(LOOP_SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T0/B0/secret")
def test_slack_notifier_posts_the_rendered_text(django_capture_on_commit_callbacks):
    responses.post("https://hooks.slack.com/services/T0/B0/secret", body="ok")
    j = journey(
        {
            "kind": Step.Kind.ACTION,
            "action": "notify",
            "action_name": "slack",
            "action_value": "새 리드: #{고객명} (#{이벤트.company})",
        }
    )
    [contact] = ContactFactory.create_batch(1, name="윤도윤")
    enroll(j, [contact], context={"company": "루프"})
    tick(T0, django_capture_on_commit_callbacks)
    assert json.loads(responses.calls[0].request.body) == {"text": "새 리드: 윤도윤 (루프)"}


# --- Waits, re-entry, edits ----------------------------------------------------------------------------------------


def test_wait_until_a_time_of_day_and_weekday_in_the_contacts_zone(django_capture_on_commit_callbacks):
    from datetime import datetime, time
    from zoneinfo import ZoneInfo

    j = journey({"kind": Step.Kind.WAIT_UNTIL, "until_time": time(9, 0), "until_weekday": 4}, sms("금요일 아침"))
    [seoul] = consenting(1)
    [ny] = consenting(1, time_zone="America/New_York")
    enroll(j, [seoul, ny])  # Monday 14:00 Seoul
    tick(T0, django_capture_on_commit_callbacks)
    due = dict(Enrollment.objects.values_list("contact_id", "next_run_at"))
    assert due[seoul.pk] == datetime(2026, 12, 11, 9, 0, tzinfo=ZoneInfo("Asia/Seoul"))
    assert due[ny.pk] == datetime(2026, 12, 11, 9, 0, tzinfo=ZoneInfo("America/New_York"))


def test_every_n_days_reentry(django_capture_on_commit_callbacks):
    j = journey(sms("주간 소식"), reentry=Journey.Reentry.EVERY_N_DAYS, reentry_days=7)
    [contact] = consenting(1)
    assert len(enroll(j, [contact])) == 1
    tick(T0, django_capture_on_commit_callbacks)
    assert enroll(j, [contact], at=T0 + timedelta(days=6)) == []
    assert len(enroll(j, [contact], at=T0 + timedelta(days=7, minutes=1))) == 1


def test_edits_apply_to_contacts_in_the_journey_from_their_position(django_capture_on_commit_callbacks):
    j = journey({"kind": Step.Kind.WAIT_DURATION, "wait_minutes": 30}, sms("처음 문구"))
    [contact] = consenting(1)
    enroll(j, [contact])
    tick(T0, django_capture_on_commit_callbacks)
    Step.objects.filter(journey=j, kind="send").update(body="고친 문구")
    tick(T0 + timedelta(minutes=30), django_capture_on_commit_callbacks)
    assert list(OutboxMessage.objects.values_list("body", flat=True)) == ["고친 문구"]


def test_segment_entry_trigger_enrolls_members_once_per_policy(django_capture_on_commit_callbacks):
    j = Journey.objects.create(
        name="winback",
        trigger=Journey.Trigger.SEGMENT_ENTRY,
        trigger_segment=SegmentFactory(
            rules={
                "version": 1,
                "root": {
                    "type": "group",
                    "op": "and",
                    "children": [{"type": "orders", "field": "days_since_last", "op": "gte", "value": 90}],
                },
            }
        ),
        reentry=Journey.Reentry.EVERY_N_DAYS,
        reentry_days=90,
    )
    Step.objects.create(journey=j, name="offer", kind="send", channel="sms", body="돌아오세요")
    journey_activate(journey=j)
    [dormant, recent] = consenting(2)
    OrderFactory(contact=dormant, placed_at=T0 - timedelta(days=100))
    for contact, days in ((dormant, 100), (recent, 10)):
        contact.order_count, contact.last_order_at = 1, T0 - timedelta(days=days)
        contact.save()
    tick(T0, django_capture_on_commit_callbacks)
    tick(T0 + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert list(OutboxMessage.objects.values_list("send__contact", flat=True)) == [dormant.pk]


def test_the_tick_is_in_the_beat_schedule_every_15_to_30_seconds():
    entry = settings.CELERY_BEAT_SCHEDULE["journeys-tick"]
    assert entry["task"] == "journeys.tick"
    assert 15 <= entry["schedule"] <= 30
    from journeys.tasks import tick as tick_task

    assert tick_task.name == entry["task"]
    assert entry["options"]["expires"] == entry["schedule"]  # a tick not started in time is dropped, not piled up


@responses.activate
@override_settings(LOOP_JOURNEY_CLAIM_LEASE=4)
def test_slow_calls_past_the_batch_deadline_wait_for_the_next_claim(django_capture_on_commit_callbacks):
    url = "https://hooks.example.com/slow"
    clock = {"now": 0.0}

    def slow(request):
        clock["now"] += 0.6  # each call takes 0.6 s: the deadline (lease / 4 = 1 s) passes after two
        return (200, {}, "ok")

    responses.add_callback(responses.POST, url, callback=slow)
    j = journey({"kind": Step.Kind.ACTION, "action": "webhook", "webhook_url": url})
    enroll(j, ContactFactory.create_batch(5))
    with mock.patch("journeys.services.engine.monotonic", side_effect=lambda: clock["now"]):
        first = tick(T0, django_capture_on_commit_callbacks)
    # The tick claimed again for those put off, until all were done; each one called once, none counted as a failure.
    assert first.claimed > 5
    assert len(responses.calls) == 5
    assert set(Enrollment.objects.values_list("status", "attempts")) == {("completed", 0)}


def test_a_step_failing_for_its_whole_group_is_undone_and_retried(django_capture_on_commit_callbacks):
    j = journey(
        {"kind": Step.Kind.ACTION, "action": "add_tag", "action_name": "먼저"},
        {"kind": Step.Kind.ACTION, "action": "set_attribute", "action_name": "stage", "action_value": "x"},
    )
    contacts = ContactFactory.create_batch(3)
    enroll(j, contacts)
    from journeys.services import engine

    real, calls = engine.bulk_update_rows, []

    def deadlock_once(model, rows, **kwargs):
        calls.append(model)
        if len(calls) == 1:  # the attribute write of the action step
            raise RuntimeError("deadlock")
        return real(model, rows, **kwargs)

    with mock.patch("journeys.services.engine.bulk_update_rows", side_effect=deadlock_once):
        tick(T0, django_capture_on_commit_callbacks)
    rows = list(Enrollment.objects.values_list("status", "attempts", "current_step__name", "last_error"))
    assert rows == [("active", 1, "s1", "RuntimeError: deadlock")] * 3
    assert all(c.tags.filter(name="먼저").exists() for c in contacts)  # the step before it stays done
    tick(T0 + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert set(Enrollment.objects.values_list("status", flat=True)) == {"completed"}


def test_chained_waits_processed_late_keep_their_spacing(django_capture_on_commit_callbacks):
    j = journey(
        {"kind": Step.Kind.WAIT_DURATION, "wait_minutes": 30},
        {"kind": Step.Kind.WAIT_DURATION, "wait_minutes": 30},
        sms("한 시간 뒤"),
    )
    [contact] = consenting(1)
    enroll(j, [contact])
    tick(T0 + timedelta(minutes=45), django_capture_on_commit_callbacks)  # the worker was down for 45 minutes
    assert Enrollment.objects.get().next_run_at == T0 + timedelta(minutes=60)  # not 45 + 30, not 45 + 0
    assert not Send.objects.exists()


def test_a_wait_until_a_date_already_gone_exits_instead_of_sending(django_capture_on_commit_callbacks):
    from datetime import time

    j = journey(
        {"kind": Step.Kind.WAIT_UNTIL, "until_date_field": "event.expires_at", "until_time": time(9, 0)},
        sms("오늘 만료돼요"),
    )
    expired, today = consenting(2)
    enroll(j, [expired], context={"expires_at": "2026-12-01"})
    enroll(j, [today], context={"expires_at": "2026-12-07T23:59:00+09:00"})  # T0 is 14:00 that day: send now
    tick(T0, django_capture_on_commit_callbacks)
    by_contact = dict(Enrollment.objects.values_list("contact_id", "exit_reason"))
    assert by_contact[expired.pk] == "date passed: 2026-12-01"
    assert list(OutboxMessage.objects.values_list("send__contact", flat=True)) == [today.pk]
