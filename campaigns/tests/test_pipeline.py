"""The send pipeline: snapshot, A/B and holdout, checks with reasons, quiet hours, frequency cap, retries, and no
duplicate or lost message under retried, concurrent or interrupted work."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.test import override_settings

from campaigns.channels import ChannelBackend, SendResult, register_backend
from campaigns.channels.base import Capabilities
from campaigns.models import Campaign, OutboxMessage, Run, Send, SkipReason
from campaigns.services.campaigns import campaign_cancel, campaign_rerandomize, campaign_schedule
from campaigns.services.runs import campaigns_tick, run_create, run_start
from campaigns.services.sending import campaign_send_one, campaign_test_send, sends_process
from campaigns.tests.factories import CampaignFactory, SegmentFactory, SuppressionFactory, VariantFactory
from crm.models import Contact
from crm.tests.factories import ContactFactory, ContactListFactory, EventFactory, TagFactory

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=SEOUL)


def people(n: int, *purposes: str, **fields) -> list[Contact]:
    from crm.tests.factories import ConsentFactory

    contacts = ContactFactory.create_batch(n, **fields)
    for contact in contacts:
        for purpose in purposes:
            ConsentFactory(contact=contact, purpose=purpose)
    return contacts


def start(campaign: Campaign, *, now: datetime = NOON, capture=None) -> Run:
    """Run the campaign now, executing the chunk tasks its commit enqueues."""
    campaign.status = Campaign.Status.SCHEDULED
    campaign.save(update_fields=["status"])
    run, _ = run_create(campaign=campaign, scheduled_for=now)
    with time_machine.travel(now, tick=False), capture(execute=True):
        run_start(run_id=run.pk, now=now)
    run.refresh_from_db()
    return run


def tick(now: datetime, capture) -> dict:
    """The beat tick at ``now``, with the tasks it enqueues run at that time too."""
    with time_machine.travel(now, tick=False), capture(execute=True):
        return campaigns_tick(now=now)


def process_all(ids, now):
    return sends_process(send_ids=list(ids), now=now)


# --- Snapshot, holdout, variants -----------------------------------------------------------------------------------


def test_sent_to_exactly_the_segments_consenting_members_minus_holdout(django_capture_on_commit_callbacks):
    vip = TagFactory(name="vip")
    unsubscribed = ContactListFactory()
    members = people(120, "email", tags=[vip])
    people(10, tags=[vip])  # members without consent
    people(10, "email")  # consenting non-members
    excluded = people(5, "email", tags=[vip], lists=[unsubscribed])
    campaign = CampaignFactory(
        segment=SegmentFactory(tag="vip"),
        exclude_segment=SegmentFactory(
            rules={
                "version": 1,
                "root": {"type": "group", "op": "and", "children": [{"type": "list", "list": unsubscribed.pk}]},
            }
        ),
        holdout_percent=10,
    )

    run = start(campaign, capture=django_capture_on_commit_callbacks)

    sends = Send.objects.filter(run=run)
    assert run.audience_count == 130
    assert not sends.filter(contact__in=excluded).exists()
    holdout = set(sends.filter(is_holdout=True).values_list("contact_id", flat=True))
    assert sends.filter(is_holdout=True).exclude(skip_reason=SkipReason.HOLDOUT).count() == 0
    assert 3 <= len(holdout) <= 25  # ~10 % of 130
    sent = set(sends.filter(status=Send.Status.SENT).values_list("contact_id", flat=True))
    assert sent == {c.pk for c in members} - holdout
    assert set(OutboxMessage.objects.values_list("send__contact_id", flat=True)) == sent
    no_consent = sends.filter(skip_reason=SkipReason.NO_CONSENT).exclude(is_holdout=True).count()
    assert no_consent + len(holdout) + len(sent) == 130
    assert run.status == Run.Status.COMPLETED
    assert run.holdout_count == len(holdout)
    assert run.counts["status"]["sent"] == len(sent)


def test_variant_counts_follow_the_weights_and_stay_stable_across_runs(django_capture_on_commit_callbacks):
    people(800, "email")
    campaign = CampaignFactory(variants=0)
    a = VariantFactory(campaign=campaign, name="A", weight=3)
    b = VariantFactory(campaign=campaign, name="B", weight=1)

    first = start(campaign, capture=django_capture_on_commit_callbacks)
    second = start(campaign, now=NOON + timedelta(days=7), capture=django_capture_on_commit_callbacks)

    counts = Counter(Send.objects.filter(run=first).values_list("variant__name", flat=True))
    assert counts["A"] + counts["B"] == 800
    assert 560 <= counts["A"] <= 640  # 600 expected; > 4 standard deviations of room
    assert first.counts["variants"]["A"]["sent"] == counts["A"]
    assignment = dict(Send.objects.filter(run=first).values_list("contact_id", "variant_id"))
    assert dict(Send.objects.filter(run=second).values_list("contact_id", "variant_id")) == assignment

    campaign_rerandomize(campaign=campaign)
    third = start(campaign, now=NOON + timedelta(days=14), capture=django_capture_on_commit_callbacks)
    changed = sum(
        1
        for contact, variant in Send.objects.filter(run=third).values_list("contact_id", "variant_id")
        if assignment[contact] != variant
    )
    assert changed > 100
    assert {a.pk, b.pk} == set(assignment.values())


def test_each_contact_gets_their_own_rendering(django_capture_on_commit_callbacks):
    kim = people(1, "email", name="김민준", attributes={"등급": "VIP"})[0]
    anon = people(1, "email", name="")[0]
    campaign = CampaignFactory(variants=0)
    VariantFactory(
        campaign=campaign,
        subject="#{고객명|고객}님",
        body="#{고객명|고객}님 (#{속성.등급|일반}) #{할인 금액:number}원",
        variables={"할인 금액": 5000},
    )

    start(campaign, capture=django_capture_on_commit_callbacks)

    bodies = dict(OutboxMessage.objects.values_list("send__contact_id", "body"))
    assert bodies == {kim.pk: "김민준님 (VIP) 5,000원", anon.pk: "고객님 (일반) 5,000원"}
    send = Send.objects.get(contact=kim)
    assert send.content["subject"] == "김민준님"
    assert send.address == kim.email


# --- Checks at send time ------------------------------------------------------------------------------------------


def test_every_skip_reason_is_recorded(django_capture_on_commit_callbacks, settings):
    settings.LOOP_FREQUENCY_CAP_DAY = 1
    ok = people(1, "email", "ads")[0]
    no_consent = people(1, "ads")[0]
    no_ads = people(1, "email")[0]
    suppressed = people(1, "email", "ads")[0]
    SuppressionFactory(contact=suppressed, channel="email")
    no_email = people(1, "email", "ads", email="")[0]
    capped = people(1, "email", "ads")[0]
    other = CampaignFactory()
    Send.objects.create(
        campaign=other,
        contact=capped,
        channel="email",
        status=Send.Status.SENT,
        sent_at=NOON - timedelta(hours=2),
        due_at=NOON,
    )
    campaign = CampaignFactory(purpose="advertising")
    run, _ = run_create(campaign=campaign, scheduled_for=NOON)
    campaign.status = Campaign.Status.SCHEDULED
    campaign.save()
    with django_capture_on_commit_callbacks(execute=False):
        run_start(run_id=run.pk, now=NOON)
    erased = Send.objects.get(run=run, contact=ok)
    Contact.objects.filter(pk=ok.pk).update(erased_at=NOON)  # erased between snapshot and sending
    process_all(Send.objects.filter(run=run).values_list("pk", flat=True), NOON)

    reasons = dict(Send.objects.filter(run=run).values_list("contact_id", "skip_reason"))
    assert reasons == {
        ok.pk: SkipReason.ERASED,
        no_consent.pk: SkipReason.NO_CONSENT,
        no_ads.pk: SkipReason.NO_ADS_CONSENT,
        suppressed.pk: SkipReason.SUPPRESSED,
        no_email.pk: SkipReason.UNREACHABLE,
        capped.pk: SkipReason.FREQUENCY_CAP,
    }
    assert erased.pk
    assert not OutboxMessage.objects.exists()


def test_push_needs_an_active_device(django_capture_on_commit_callbacks):
    from crm.tests.factories import DeviceFactory

    with_device, without = people(2, "push")
    DeviceFactory(contact=with_device)
    DeviceFactory(contact=without, active=False)
    run = start(CampaignFactory(channel="push"), capture=django_capture_on_commit_callbacks)

    assert dict(run.sends.values_list("contact_id", "status")) == {with_device.pk: "sent", without.pk: "skipped"}
    assert OutboxMessage.objects.get().to.startswith("test-push-token-")


def test_a_template_that_fails_for_one_contact_skips_only_that_send(django_capture_on_commit_callbacks, monkeypatch):
    from campaigns.services import sending

    people(3, "email")
    real = sending.render_content
    calls = {"n": 0}

    def flaky_render(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("boom")
        return real(**kwargs)

    monkeypatch.setattr(sending, "render_content", flaky_render)
    run = start(CampaignFactory(), capture=django_capture_on_commit_callbacks)

    assert run.counts["status"] == {"sent": 2, "skipped": 1}
    assert run.counts["skip_reason"] == {SkipReason.RENDER_ERROR: 1}


# --- Quiet hours ------------------------------------------------------------------------------------------------------

TEN_PM = datetime(2026, 12, 7, 22, 0, tzinfo=SEOUL)
EIGHT_AM = datetime(2026, 12, 8, 8, 0, tzinfo=SEOUL)


def test_advertising_at_night_is_held_until_08_00_local_then_sent(django_capture_on_commit_callbacks):
    sleeper = people(1, "email", "ads")[0]
    night_owl = people(1, "email", "ads", "ads_night")[0]
    london = people(1, "email", "ads", time_zone="Europe/London")[0]  # 13:00 there
    run = start(CampaignFactory(purpose="advertising"), now=TEN_PM, capture=django_capture_on_commit_callbacks)

    status = dict(run.sends.values_list("contact_id", "status"))
    assert status == {sleeper.pk: "held", night_owl.pk: "sent", london.pk: "sent"}
    assert run.sends.get(contact=sleeper).due_at == EIGHT_AM
    assert run.status == Run.Status.SENDING

    tick(EIGHT_AM - timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert run.sends.get(contact=sleeper).status == "held"
    tick(EIGHT_AM, django_capture_on_commit_callbacks)

    held = run.sends.get(contact=sleeper)
    assert held.status == "sent"
    assert held.sent_at == EIGHT_AM
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED


def test_quiet_hours_skip_option_and_informational_messages(django_capture_on_commit_callbacks):
    people(1, "email", "ads")
    ad = start(
        CampaignFactory(purpose="advertising", quiet_hours="skip"),
        now=TEN_PM,
        capture=django_capture_on_commit_callbacks,
    )
    info = start(CampaignFactory(frequency_cap_exempt=True), now=TEN_PM, capture=django_capture_on_commit_callbacks)

    assert ad.sends.get().skip_reason == SkipReason.QUIET_HOURS
    assert info.sends.get().status == "sent"


def test_kakao_friendtalk_advertising_is_quiet_from_20_00():
    from campaigns.channels import channel
    from campaigns.services.sending import quiet_until

    hours = channel("kakao").ads_quiet_hours
    assert quiet_until(now=datetime(2026, 12, 7, 20, 30, tzinfo=SEOUL), zone=SEOUL, hours=hours) == EIGHT_AM
    assert quiet_until(now=datetime(2026, 12, 7, 19, 59, tzinfo=SEOUL), zone=SEOUL, hours=hours) is None
    assert quiet_until(now=datetime(2026, 12, 8, 7, 59, tzinfo=SEOUL), zone=SEOUL, hours=hours) == EIGHT_AM


# --- Frequency cap -------------------------------------------------------------------------------------------------


@override_settings(LOOP_FREQUENCY_CAP_DAY=2, LOOP_FREQUENCY_CAP_WEEK=3)
def test_frequency_cap_counts_across_campaigns_per_day_and_week(django_capture_on_commit_callbacks):
    contact = people(1, "email")[0]

    def campaign_at(now, **kwargs):
        return start(CampaignFactory(**kwargs), now=now, capture=django_capture_on_commit_callbacks).sends.get()

    assert campaign_at(NOON).status == "sent"
    assert campaign_at(NOON + timedelta(hours=1)).status == "sent"
    assert campaign_at(NOON + timedelta(hours=2)).skip_reason == SkipReason.FREQUENCY_CAP  # 2 per day
    assert campaign_at(NOON + timedelta(hours=3), frequency_cap_exempt=True).status == "sent"  # exempt
    assert campaign_at(NOON + timedelta(days=1, hours=1)).status == "sent"  # a new day: 3rd this week
    assert campaign_at(NOON + timedelta(days=2, hours=1)).skip_reason == SkipReason.FREQUENCY_CAP  # 3 per week
    assert campaign_at(NOON + timedelta(days=8)).status == "sent"
    assert contact.campaign_sends.filter(status="sent").count() == 5


# --- Provider errors ------------------------------------------------------------------------------------------------


@register_backend
class ScriptedBackend(ChannelBackend):
    """A test backend: results are scripted per call; every call is recorded."""

    name = "scripted"
    capabilities = Capabilities(max_batch_size=2, idempotent=False)
    script: list = []
    delivered: list = []

    def send_batch(self, messages):
        action = self.script.pop(0) if self.script else "ok"
        if action == "raise":
            raise ConnectionError("provider unreachable")
        results = []
        for message in messages:
            if action == "ok":
                ScriptedBackend.delivered.append(message.send_id)
                results.append(SendResult(send_id=message.send_id, ok=True, provider_message_id=f"p-{message.send_id}"))
            else:
                results.append(
                    SendResult(
                        send_id=message.send_id, ok=False, error=f"{action} error", transient=action == "transient"
                    )
                )
        return results


@pytest.fixture
def scripted(settings):
    settings.LOOP_CHANNEL_BACKENDS = {"email": "scripted"}
    ScriptedBackend.script, ScriptedBackend.delivered = [], []
    return ScriptedBackend


def test_transient_errors_are_retried_with_backoff_and_permanent_ones_recorded(
    scripted, django_capture_on_commit_callbacks
):
    people(4, "email")
    scripted.script = ["transient", "permanent"]  # first batch of 2: transient; second: permanent
    run = start(CampaignFactory(), capture=django_capture_on_commit_callbacks)

    retrying = run.sends.filter(status="queued")
    assert retrying.count() == 2
    assert {s.due_at for s in retrying} == {NOON + timedelta(minutes=1)}
    assert run.sends.filter(status="failed", error="permanent error").count() == 2

    tick(NOON + timedelta(seconds=30), django_capture_on_commit_callbacks)  # not due yet
    assert run.sends.filter(status="queued").count() == 2
    tick(NOON + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert run.sends.filter(status="sent").count() == 2
    assert all(s.provider_message_id.startswith("p-") for s in run.sends.filter(status="sent"))
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED


@override_settings(LOOP_SEND_MAX_ATTEMPTS=2)
def test_retries_stop_after_the_last_attempt(scripted, django_capture_on_commit_callbacks):
    people(1, "email")
    scripted.script = ["transient", "transient"]
    run = start(CampaignFactory(), capture=django_capture_on_commit_callbacks)
    tick(NOON + timedelta(minutes=5), django_capture_on_commit_callbacks)

    send = run.sends.get()
    assert (send.status, send.attempts, send.error) == ("failed", 2, "transient error")


# --- No duplicate, no loss ------------------------------------------------------------------------------------------


def test_a_retried_or_duplicated_chunk_sends_nothing_twice(django_capture_on_commit_callbacks):
    people(5, "email")
    campaign = CampaignFactory()
    campaign.status = Campaign.Status.SCHEDULED
    campaign.save()
    run, _ = run_create(campaign=campaign, scheduled_for=NOON)
    with django_capture_on_commit_callbacks(execute=False):
        run_start(run_id=run.pk, now=NOON)
    ids = list(run.sends.values_list("pk", flat=True))

    process_all(ids, NOON)
    process_all(ids, NOON)  # the broker redelivers the task
    process_all(ids[:2], NOON + timedelta(minutes=1))

    assert OutboxMessage.objects.count() == 5
    assert run.sends.filter(status="sent").count() == 5
    assert set(run.sends.values_list("attempts", flat=True)) == {1}


def test_a_chunk_interrupted_half_way_resumes_without_duplicates(scripted, django_capture_on_commit_callbacks):
    people(6, "email")
    scripted.script = ["ok", "raise"]  # batches of 2: the first goes out, then the provider call blows up
    run = start(CampaignFactory(), capture=django_capture_on_commit_callbacks)

    assert run.sends.filter(status="sent").count() == 2
    assert run.sends.filter(status="queued").count() == 4  # released with a backoff, not lost
    assert run.sends.filter(status="sending").count() == 0

    tick(NOON + timedelta(minutes=1), django_capture_on_commit_callbacks)

    assert run.sends.filter(status="sent").count() == 6
    assert sorted(scripted.delivered) == sorted(run.sends.values_list("pk", flat=True))  # each exactly once


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even `except Exception` handlers."""


def test_a_killed_worker_is_recovered_after_the_lease_on_an_idempotent_backend(
    django_capture_on_commit_callbacks, monkeypatch
):
    from campaigns.channels.outbox import OutboxBackend

    people(4, "email")
    real = OutboxBackend.send_batch

    def dies_after_delivering(self, messages):
        real(self, messages)
        raise WorkerKilled

    monkeypatch.setattr(OutboxBackend, "send_batch", dies_after_delivering)
    with pytest.raises(WorkerKilled):
        start(CampaignFactory(), capture=django_capture_on_commit_callbacks)
    monkeypatch.setattr(OutboxBackend, "send_batch", real)
    run = Run.objects.get()
    assert run.sends.filter(status="sending").count() == 4

    tick(NOON + timedelta(minutes=5), django_capture_on_commit_callbacks)  # within the lease: left alone
    assert run.sends.filter(status="sending").count() == 4
    tick(NOON + timedelta(minutes=11), django_capture_on_commit_callbacks)

    assert run.sends.filter(status="sent").count() == 4
    assert OutboxMessage.objects.count() == 4  # the re-delivery stored nothing twice
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED


def test_a_killed_worker_on_a_non_idempotent_backend_fails_its_sends_rather_than_duplicate(
    scripted, monkeypatch, django_capture_on_commit_callbacks
):
    people(2, "email")

    def killed(self, messages):
        raise WorkerKilled

    monkeypatch.setattr(ScriptedBackend, "send_batch", killed)
    with pytest.raises(WorkerKilled):
        start(CampaignFactory(), capture=django_capture_on_commit_callbacks)
    monkeypatch.undo()
    tick(NOON + timedelta(minutes=11), django_capture_on_commit_callbacks)

    run = Run.objects.get()
    assert set(run.sends.values_list("status", flat=True)) == {"failed"}
    assert "delivery unknown" in run.sends.first().error


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_run_starts_take_one_snapshot():
    people(30, "email")
    campaign = CampaignFactory()
    campaign.status = Campaign.Status.SCHEDULED
    campaign.save()
    errors = []
    barrier = threading.Barrier(2)

    def starter():
        try:
            barrier.wait()
            run, _ = run_create(campaign=campaign, scheduled_for=NOON)
            run_start(run_id=run.pk, now=NOON)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=starter) for _ in range(2)]
    with time_machine.travel(NOON, tick=False):
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert errors == []
    assert Run.objects.count() == 1
    assert Send.objects.count() == 30
    assert OutboxMessage.objects.count() == 30


@pytest.mark.django_db(transaction=True)
def test_two_workers_on_the_same_chunk_deliver_each_send_once():
    people(40, "email")
    campaign = CampaignFactory(status=Campaign.Status.RUNNING)
    sends = [
        Send.objects.create(campaign=campaign, contact=c, channel="email", due_at=NOON) for c in Contact.objects.all()
    ]
    ids = [s.pk for s in sends]
    barrier = threading.Barrier(2)

    def worker():
        try:
            barrier.wait()
            sends_process(send_ids=ids, now=NOON)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert OutboxMessage.objects.count() == 40
    assert Send.objects.filter(status="sent").count() == 40
    assert set(Send.objects.values_list("attempts", flat=True)) == {1}


# --- Lifecycle effects on sends -------------------------------------------------------------------------------------


def test_cancel_skips_what_is_not_sent_yet(django_capture_on_commit_callbacks):
    people(2, "email", "ads")
    campaign = CampaignFactory(purpose="advertising")
    run = start(campaign, now=TEN_PM, capture=django_capture_on_commit_callbacks)
    assert set(run.sends.values_list("status", flat=True)) == {"held"}

    campaign_cancel(campaign=campaign, now=TEN_PM + timedelta(minutes=5))
    tick(EIGHT_AM, django_capture_on_commit_callbacks)

    assert set(run.sends.values_list("skip_reason", flat=True)) == {SkipReason.CANCELLED}
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert not OutboxMessage.objects.exists()


def test_a_paused_campaign_sends_nothing_until_resumed(django_capture_on_commit_callbacks):
    from campaigns.services.campaigns import campaign_pause, campaign_resume

    people(2, "email", "ads")
    campaign = CampaignFactory(purpose="advertising")
    run = start(campaign, now=TEN_PM, capture=django_capture_on_commit_callbacks)
    campaign_pause(campaign=campaign)
    tick(EIGHT_AM, django_capture_on_commit_callbacks)
    assert set(run.sends.values_list("status", flat=True)) == {"held"}

    campaign_resume(campaign=campaign)
    tick(EIGHT_AM + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert set(run.sends.values_list("status", flat=True)) == {"sent"}


def test_send_now_runs_through_the_whole_lifecycle(django_capture_on_commit_callbacks):
    people(3, "email")
    campaign = CampaignFactory()
    with django_capture_on_commit_callbacks(execute=True):
        campaign_schedule(campaign=campaign)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.COMPLETED
    assert Run.objects.get().status == Run.Status.COMPLETED
    assert [c.action for c in campaign.changes.order_by("id")] == ["scheduled"]


def test_a_one_time_campaign_starts_when_the_tick_reaches_its_time(django_capture_on_commit_callbacks):
    people(2, "email")
    campaign = CampaignFactory(schedule=Campaign.Schedule.ONCE, send_at=NOON)
    campaign_schedule(campaign=campaign, now=NOON - timedelta(days=1))
    tick(NOON - timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert not Run.objects.exists()
    tick(NOON + timedelta(seconds=20), django_capture_on_commit_callbacks)
    tick(NOON + timedelta(seconds=40), django_capture_on_commit_callbacks)  # a second beat process

    run = Run.objects.get()
    assert run.scheduled_for == NOON
    assert run.sends.filter(status="sent").count() == 2


def test_per_variant_send_delay(django_capture_on_commit_callbacks):
    people(200, "email")
    campaign = CampaignFactory(variants=0, frequency_cap_exempt=True)
    VariantFactory(campaign=campaign, name="now")
    VariantFactory(campaign=campaign, name="later", send_delay_minutes=120)
    run = start(campaign, capture=django_capture_on_commit_callbacks)
    assert set(run.sends.filter(variant__name="later").values_list("status", flat=True)) == {"queued"}
    assert set(run.sends.filter(variant__name="now").values_list("status", flat=True)) == {"sent"}

    tick(NOON + timedelta(hours=2), django_capture_on_commit_callbacks)
    assert set(run.sends.values_list("status", flat=True)) == {"sent"}
    assert {s.sent_at for s in run.sends.filter(variant__name="later")} == {NOON + timedelta(hours=2)}


# --- Auto-winner ----------------------------------------------------------------------------------------------------


def test_auto_winner_tests_on_part_then_sends_the_best_variant_to_the_rest(django_capture_on_commit_callbacks):
    people(400, "email")
    campaign = CampaignFactory(
        variants=0,
        auto_winner=True,
        winner_test_percent=30,
        winner_wait_hours=4,
        goal_event="Order Completed",
        frequency_cap_exempt=True,
    )
    VariantFactory(campaign=campaign, name="A")
    b = VariantFactory(campaign=campaign, name="B")
    run = start(campaign, capture=django_capture_on_commit_callbacks)

    tested = run.sends.filter(status="sent")
    waiting = run.sends.filter(status="waiting")
    assert 80 <= tested.count() <= 160  # ~30 %
    waiting_count = waiting.count()
    assert tested.count() + waiting_count == 400
    # Half of B's recipients order within the window; A's recipients order only after it.
    for i, send in enumerate(tested.filter(variant=b)):
        if i % 2 == 0:
            EventFactory(
                contact_id=send.contact_id,
                name="Order Completed",
                occurred_at=NOON + timedelta(hours=1),
                properties={"revenue": 39000},
            )
    for send in tested.filter(variant__name="A"):
        EventFactory(contact_id=send.contact_id, name="Order Completed", occurred_at=NOON + timedelta(days=4))

    tick(NOON + timedelta(hours=3, minutes=59), django_capture_on_commit_callbacks)
    assert run.sends.filter(status="waiting").exists()
    tick(NOON + timedelta(hours=4), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert run.winner_variant == b
    assert run.winner_explanation["variants"][str(b.pk)]["conversions"] > 0
    assert run.winner_explanation["variants"][str(campaign.variants.get(name="A").pk)]["conversions"] == 0
    later = run.sends.filter(sent_at=NOON + timedelta(hours=4))
    assert later.count() == waiting_count
    assert set(later.values_list("variant", flat=True)) == {b.pk}
    assert run.status == Run.Status.COMPLETED


# --- One message to one contact (journeys) and test sends ------------------------------------------------------------


def test_send_one_is_idempotent_by_key_and_renders_the_event_context(django_capture_on_commit_callbacks):
    contact = people(1, "email")[0]
    campaign = CampaignFactory(kind=Campaign.Kind.TRIGGERED, segment=None, variants=0)
    VariantFactory(campaign=campaign, body="#{고객명}님, #{상품명} #{이벤트.price:number}원")

    with django_capture_on_commit_callbacks(execute=True):
        first = campaign_send_one(
            campaign=campaign,
            contact_id=contact.pk,
            key="journey:1:2",
            context={"event": {"product_name": "니트", "price": 39000}},
        )
    with django_capture_on_commit_callbacks(execute=True):
        again = campaign_send_one(campaign=campaign, contact_id=contact.pk, key="journey:1:2", context={})

    assert again.pk == first.pk
    assert Send.objects.count() == 1
    assert OutboxMessage.objects.get().body == f"{contact.name}님, 니트 39,000원"


def test_send_one_goes_through_the_same_checks(django_capture_on_commit_callbacks):
    contact = people(1)[0]  # no consent
    campaign = CampaignFactory(kind=Campaign.Kind.TRIGGERED, segment=None)
    with django_capture_on_commit_callbacks(execute=True):
        send = campaign_send_one(campaign=campaign, contact_id=contact.pk, key="k")
    send.refresh_from_db()
    assert send.skip_reason == SkipReason.NO_CONSENT


def test_test_send_goes_to_the_outbox_and_does_not_count(settings):
    settings.LOOP_CHANNEL_BACKENDS = {"email": "scripted"}
    settings.LOOP_FREQUENCY_CAP_DAY = 1
    contact = ContactFactory()  # no consent needed for a test send
    campaign = CampaignFactory(purpose="advertising")

    sends = campaign_test_send(campaign=campaign, variant=campaign.variants.get(), contact_ids=[contact.pk] * 2)

    assert [s.status for s in sends] == ["sent", "sent"]
    assert OutboxMessage.objects.count() == 2
    assert OutboxMessage.objects.first().subject.startswith("(광고) ")
    assert all(s.is_test and not s.counts_toward_cap for s in sends)


# --- Advertising form ----------------------------------------------------------------------------------------------


@override_settings(LOOP_SENDER_NAME="루프샵", LOOP_OPTOUT_PHONE="080-123-4567", LOOP_SENDER_CONTACT="02-000-0000")
def test_advertising_form_per_channel():
    from campaigns.advertising import UNSUBSCRIBE_URL, apply_advertising_form

    sms = apply_advertising_form(channel="sms", content={"body": "주말 할인!"})
    assert sms["body"] == "(광고)루프샵\n주말 할인!\n무료수신거부 080-123-4567"
    email = apply_advertising_form(
        channel="email", content={"subject": "주말 할인", "body": "본문", "html": "<p>x</p>"}
    )
    assert email["subject"] == "(광고) 주말 할인"
    assert email["body"].endswith(f"루프샵 02-000-0000\n수신을 원하지 않으시면 수신거부: {UNSUBSCRIBE_URL}")
    assert UNSUBSCRIBE_URL in email["html"]
    push = apply_advertising_form(channel="push", content={"subject": "할인", "body": "b"}, sender_name="다른샵")
    assert push["subject"] == "(광고) 할인"
