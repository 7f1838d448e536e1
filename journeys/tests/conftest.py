"""Fixtures of the journeys tests: Celery tasks run eagerly (the campaigns fixture), a world with a shop source,
consenting contacts, and helpers that record events and tick at a given moment (time_machine)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine

from campaigns.tests.conftest import eager_celery  # noqa: F401 (autouse fixture)
from crm.ingest.messages import parse_message
from crm.models import Source
from crm.services.event_processing import events_process_pending
from crm.services.ingest import event_record_batch
from crm.tests.factories import ConsentFactory, ContactFactory
from journeys.models import Journey
from journeys.playbooks import playbook_load
from journeys.services.engine import journeys_tick
from journeys.services.journeys import journey_activate

SEOUL = ZoneInfo("Asia/Seoul")
#: Monday 2026-12-07 14:00 in Seoul: not quiet hours, so advertising is delivered at once.
T0 = datetime(2026, 12, 7, 14, 0, tzinfo=SEOUL)


class Shop:
    """Records events as the tracking API would and applies them like the worker; ticks the engine."""

    def __init__(self, capture):
        self.source = Source.objects.create(name="shop")
        self.capture = capture
        self.counter = 0

    def customer(self, user: str = "u1", *purposes: str, **fields):
        contact = ContactFactory(external_id=user, **fields)
        for purpose in purposes or ("kakao", "email", "sms", "ads"):
            ConsentFactory(contact=contact, purpose=purpose)
        return contact

    def track(self, name: str, *, user: str = "u1", at: datetime, **properties) -> None:
        self.counter += 1
        raw = {
            "type": "track",
            "event": name,
            "userId": user,
            "messageId": f"m-{self.counter}",
            "timestamp": at.isoformat(),
            "properties": properties,
        }
        with time_machine.travel(at, tick=False), self.capture(execute=True):
            event_record_batch(source=self.source, messages=[parse_message(raw, index=0, received_at=at)])
            events_process_pending()

    def tick(self, at: datetime):
        with time_machine.travel(at, tick=False), self.capture(execute=True):
            return journeys_tick(now=at)


@pytest.fixture
def shop(db, django_capture_on_commit_callbacks):
    return Shop(django_capture_on_commit_callbacks)


@pytest.fixture
def playbook(db):
    """``playbook("cart_abandonment")``: load and activate it."""

    def load(playbook_name: str, **changes) -> Journey:
        journey = playbook_load(name=playbook_name)
        for field, value in changes.items():
            setattr(journey, field, value)
        journey.save()
        return journey_activate(journey=journey)

    return load


@pytest.fixture(autouse=True)
def scheduled_triggers_unthrottled():
    """Segment and date triggers are checked at most once a minute (a cache key): every test starts unthrottled."""
    from django.core.cache import cache

    from journeys.services.enrollment import SCHEDULED_KEY

    cache.delete(SCHEDULED_KEY)
    yield
    cache.delete(SCHEDULED_KEY)
