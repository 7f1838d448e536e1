"""Concurrent ticks on PostgreSQL: claims with SKIP LOCKED are disjoint, every due enrollment advances once, and
each message is sent once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, connections

from campaigns.models import Campaign, Send
from crm.tests.factories import ConsentFactory, ContactFactory
from journeys.models import Enrollment, Journey, Step
from journeys.services.engine import enrollments_advance, enrollments_claim, journeys_tick
from journeys.services.enrollment import journey_enroll_contacts
from journeys.services.journeys import journey_activate
from journeys.tests.conftest import T0

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_concurrent_ticks_claim_disjoint_batches_and_send_each_message_once(postgresql):
    assert connection.vendor == "postgresql"
    j = Journey.objects.create(name="동시성", trigger=Journey.Trigger.API)
    Step.objects.create(journey=j, position=1, name="wait", kind="wait_duration", wait_minutes=30)
    Step.objects.create(journey=j, position=2, name="send", kind="send", channel="sms", body="#{고객명}님 안녕하세요")
    j = journey_activate(journey=j)
    contacts = ContactFactory.create_batch(300)
    for contact in contacts:
        ConsentFactory(contact=contact, purpose="sms")
    journey_enroll_contacts(journey=j, contact_ids=[c.pk for c in contacts], now=T0)
    journeys_tick(now=T0)
    due = T0 + timedelta(minutes=30)

    claims: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker():
        try:
            barrier.wait()
            while True:
                token, ids = enrollments_claim(now=due, limit=40)
                if not ids:
                    break
                claims.append(ids)
                enrollments_advance(token=token, ids=ids, now=due)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    claimed = Counter(i for batch in claims for i in batch)
    assert len(claimed) == 300
    assert max(claimed.values()) == 1
    assert Enrollment.objects.filter(status="completed").count() == 300
    assert Send.objects.count() == 300
    assert Campaign.objects.count() == 1  # the step's own message: one campaign, created by whichever worker came first
    assert settings.LOOP_JOURNEY_CLAIM_LEASE > 0
