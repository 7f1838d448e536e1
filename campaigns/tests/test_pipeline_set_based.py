"""The set-based send pipeline (issue #7): a constant number of statements per chunk, the SQL assignment identical to
``Assigner``, the frequency cap held under concurrent chunks, and the fast rendering identical to the engine's."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.assignment import Assigner, thresholds
from campaigns.models import Campaign, OutboxMessage, Send, SkipReason
from campaigns.personalization import compile_template, render, sample_render_data, sandbox_engine
from campaigns.services import sending
from campaigns.services.runs import run_create, run_start
from campaigns.services.sending import sends_process
from campaigns.tests.factories import CampaignFactory, VariantFactory
from crm.models import Contact
from crm.tests.factories import ConsentFactory, ContactFactory

SEOUL = ZoneInfo("Asia/Seoul")
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=SEOUL)


def people(n: int, *purposes: str) -> list[Contact]:
    contacts = ContactFactory.create_batch(n)
    for contact in contacts:
        for purpose in purposes:
            ConsentFactory(contact=contact, purpose=purpose)
    return contacts


# --- Assignment --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("holdout", "weights", "test"),
    [(0, [1], None), (10, [3, 1], None), (7, [1, 1, 1], 20), (50, [2, 0, 5], 100), (33, [1, 2], 33)],
)
def test_thresholds_give_the_assigners_answer_for_every_contact(holdout, weights, test):
    assigner = Assigner(
        campaign_id=17,
        seed=4,
        variants=[(100 + i, w) for i, w in enumerate(weights)],
        holdout_percent=holdout,
        test_percent=test,
    )
    t = thresholds(assigner)
    for contact_id in range(5000):
        digest = hashlib.sha256(f"17:4:{contact_id}".encode()).digest()
        n, m = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:16], "big")
        if n < t.holdout:
            got = (None, True)
        elif t.test is not None and m >= t.test:
            got = (None, False)
        else:
            got = (t.ids[min(sum(n >= b for b in t.bounds), len(t.ids) - 1)], False)
        expected = assigner.assign(contact_id)
        assert got == (expected.variant_id, expected.holdout), contact_id


@pytest.mark.django_db
@pytest.mark.parametrize("auto_winner", [False, True])
def test_the_snapshot_assigns_like_the_assigner(auto_winner, django_capture_on_commit_callbacks):
    """On PostgreSQL the snapshot assigns in SQL, elsewhere in Python: the same answer either way."""
    contacts = people(300, "email")
    campaign = CampaignFactory(
        variants=0,
        holdout_percent=15,
        auto_winner=auto_winner,
        winner_test_percent=40,
        assignment_seed=9,
        status=Campaign.Status.SCHEDULED,
    )
    a = VariantFactory(campaign=campaign, name="A", weight=2)
    b = VariantFactory(campaign=campaign, name="B", weight=1, send_delay_minutes=30)
    run, _ = run_create(campaign=campaign, scheduled_for=NOON)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run_start(run_id=run.pk, now=NOON)
    run.refresh_from_db()

    assigner = Assigner(
        campaign_id=campaign.pk,
        seed=9,
        variants=[(a.pk, 2), (b.pk, 1)],
        holdout_percent=15,
        test_percent=40 if auto_winner else None,
    )
    sends = {s.contact_id: s for s in Send.objects.filter(run=run)}
    assert set(sends) == {c.pk for c in contacts}
    due_now = set()
    for contact_id, send in sends.items():
        expected = assigner.assign(contact_id)
        assert (send.variant_id, send.is_holdout) == (expected.variant_id, expected.holdout)
        if expected.holdout:
            assert (send.status, send.skip_reason, send.finished_at) == ("skipped", SkipReason.HOLDOUT, NOON)
        elif expected.variant_id is None:
            assert (send.status, send.due_at, send.enqueued_at) == ("waiting", run.winner_decide_at, None)
        else:
            delay = timedelta(minutes=30 if expected.variant_id == b.pk else 0)
            assert (send.status, send.due_at) == ("queued", NOON + delay)
            assert send.enqueued_at == (NOON if not delay else None)
            if not delay:
                due_now.add(send.pk)
    assert run.audience_count == 300
    assert run.holdout_count == sum(s.is_holdout for s in sends.values())
    assert 20 <= run.holdout_count <= 75
    assert len(callbacks) == 1  # one chunk task for the sends due now
    assert set(Send.objects.filter(enqueued_at__isnull=False).values_list("pk", flat=True)) == due_now


# --- A constant number of statements per chunk -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_chunk_takes_the_same_number_of_statements_whatever_its_size(settings):
    settings.LOOP_SEND_CHUNK_SIZE = 1000
    campaign = CampaignFactory(variants=2, status=Campaign.Status.RUNNING)
    variants = list(campaign.variants.all())

    def chunk(n: int) -> int:
        sends = [
            Send.objects.create(
                campaign=campaign, contact=c, variant=variants[i % 2], channel="email", due_at=NOON, enqueued_at=NOON
            )
            for i, c in enumerate(people(n, "email"))
        ]
        with CaptureQueriesContext(connection) as queries:
            outcome = sends_process(send_ids=[s.pk for s in sends], now=NOON)
        assert outcome == {"sent": n}
        return len(queries.captured_queries)

    assert chunk(3) == chunk(40)
    assert OutboxMessage.objects.count() == 43


# --- Frequency cap under concurrency ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_chunks_of_different_campaigns_do_not_both_pass_the_cap(settings, monkeypatch):
    """Each thread reads the cap counts and then waits for the other one (up to a second) before going on: without
    the per-contact lock both read "nothing sent yet" and both deliver. With it, the second chunk cannot read its
    counts until the first committed its accepted sends, and skips them."""
    settings.LOOP_FREQUENCY_CAP_DAY = 1
    contacts = people(20, "email")
    first, second = CampaignFactory(status=Campaign.Status.RUNNING), CampaignFactory(status=Campaign.Status.RUNNING)
    chunks = [
        [Send.objects.create(campaign=campaign, contact=c, channel="email", due_at=NOON).pk for c in contacts]
        for campaign in (first, second)
    ]
    real_counts = sending._cap_counts
    barrier = threading.Barrier(2, timeout=1)

    def counts_then_wait(*args, **kwargs):
        result = real_counts(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return result

    monkeypatch.setattr(sending, "_cap_counts", counts_then_wait)
    errors = []

    def worker(ids):
        try:
            sends_process(send_ids=ids, now=NOON)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(ids,)) for ids in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    per_contact = {c.pk: 0 for c in contacts}
    for contact_id in Send.objects.filter(status="sent").values_list("contact_id", flat=True):
        per_contact[contact_id] += 1
    assert set(per_contact.values()) == {1}
    assert Send.objects.filter(skip_reason=SkipReason.FREQUENCY_CAP).count() == 20
    assert OutboxMessage.objects.count() == 20


@pytest.mark.django_db
def test_a_send_being_delivered_counts_toward_the_cap_and_a_retry_gives_its_place_back(settings, monkeypatch):
    from campaigns.channels.outbox import OutboxBackend

    settings.LOOP_FREQUENCY_CAP_DAY = 1
    contact = people(1, "email")[0]
    first = Send.objects.create(
        campaign=CampaignFactory(status=Campaign.Status.RUNNING), contact=contact, channel="email", due_at=NOON
    )
    second = Send.objects.create(
        campaign=CampaignFactory(status=Campaign.Status.RUNNING), contact=contact, channel="email", due_at=NOON
    )
    seen = {}

    def deliver_while_another_chunk_checks(self, messages):
        seen["during"] = Send.objects.values_list("status", "sent_at").get(pk=first.pk)
        sends_process(send_ids=[second.pk], now=NOON)  # the other campaign's chunk, meanwhile
        from campaigns.channels import SendResult

        return [SendResult(send_id=m.send_id, ok=False, error="busy", transient=True) for m in messages]

    monkeypatch.setattr(OutboxBackend, "send_batch", deliver_while_another_chunk_checks)
    sends_process(send_ids=[first.pk], now=NOON)

    assert seen["during"] == ("sending", NOON)
    second.refresh_from_db()
    assert second.skip_reason == SkipReason.FREQUENCY_CAP
    first.refresh_from_db()
    assert (first.status, first.sent_at) == ("queued", None)  # retried later: no longer counted


# --- Rendering -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("html", [False, True])
@pytest.mark.parametrize(
    "source",
    [
        "#{고객명|고객}님, 주말 한정 할인!",
        "#{고객명}님 #{할인 금액:number}원 #{쿠폰 코드} #{없는 변수|기본}",
        "<b>#{고객명}</b> & #{장바구니 금액:number}",
        "#{고객명}#{고객명}",
        "{% if cart.items %}#{상품명}{% endif %} #{고객명}",
        "{{ contact.name }} #{고객명}",
        "#{고객명} {x}",
    ],
)
def test_the_fast_rendering_outputs_what_the_engine_outputs(source, html):
    from django.template import Context

    compiled = compile_template(source, html=html)
    data = sample_render_data()
    data["contact"]["name"] = "<김 & 민준> {{ secret }}"
    fast = render(compiled, data)
    engine = sandbox_engine(html=html).from_string(compiled.template.source)
    context = {
        "contact": data["contact"],
        "attributes": {},
        "event": {},
        "cart": data["cart"],
        "coupon": {},
        "vars": {},
    }
    context.update({f"loopvar{i}": token_text(compiled, i, data) for i in range(len(compiled.tokens))})
    assert fast == engine.render(Context(context, autoescape=html))
    if "{%" in source or "{{" in source or "{x}" in source:
        assert compiled.parts is None
    else:
        assert compiled.parts is not None


def token_text(compiled, index, data):
    from campaigns.personalization import _token_text, _zone

    return _token_text(compiled.tokens[index], data, _zone(data))
