"""Segment services: create/update (validation, version), count, the daily size history (idempotent beat task),
segments inside segments (evaluated with the inner segment's current rules), cycles and deletion guards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings

from crm.models import Segment, SegmentSize
from crm.segments import EMPTY_RULES, RulesInvalid
from crm.services.segments import (
    SegmentInUse,
    segment_count,
    segment_create,
    segment_delete,
    segment_sizes_record,
    segment_update,
)
from crm.tasks import segment_sizes_record_task
from crm.tests.factories import ContactFactory, TagFactory

pytestmark = pytest.mark.django_db


def doc(*children, op: str = "and") -> dict:
    return {"version": 1, "root": {"type": "group", "op": op, "children": list(children)}}


def big_spenders(amount: int = 100000) -> dict:
    return doc({"type": "orders", "field": "revenue", "op": "gte", "value": amount})


@pytest.fixture
def people():
    return {
        "rich": ContactFactory(total_revenue=Decimal("300000"), order_count=3),
        "mid": ContactFactory(total_revenue=Decimal("150000"), order_count=1),
        "poor": ContactFactory(total_revenue=Decimal("0")),
    }


def members(segment: Segment) -> set[int]:
    return set(segment.contacts().values_list("pk", flat=True))


# --- Create and update -------------------------------------------------------------------------------------------


def test_create_validates_and_starts_at_version_1(admin_user):
    segment = segment_create(name=" 큰손 ", rules=big_spenders(), description="10만원 이상", created_by=admin_user)
    segment.refresh_from_db()
    assert (segment.name, segment.version, segment.created_by, segment.description) == (
        "큰손",
        1,
        admin_user,
        "10만원 이상",
    )
    assert segment.rules == big_spenders()


def test_create_without_rules_is_everybody(people):
    segment = segment_create(name="everyone")
    assert segment.rules == EMPTY_RULES
    assert members(segment) == {c.pk for c in people.values()}


def test_create_refuses_invalid_rules_and_writes_nothing():
    with pytest.raises(RulesInvalid) as caught:
        segment_create(name="bad", rules=doc({"type": "orders", "field": "revenue", "op": "gte"}))
    assert caught.value.errors[0].path == "root.children[0].value"
    assert not Segment.objects.exists()


def test_create_refuses_a_blank_name():
    with pytest.raises(RulesInvalid) as caught:
        segment_create(name="  ", rules=big_spenders())
    assert caught.value.errors[0].path == "name"


def test_update_bumps_the_version_only_when_the_rules_change(people):
    segment = segment_create(name="big", rules=big_spenders())
    segment_count(segment=segment)
    segment = segment_update(segment=segment, name="big spenders", description="changed")
    assert (segment.version, segment.last_count) == (1, 2)

    segment = segment_update(segment=segment, rules=big_spenders(200000))
    segment.refresh_from_db()
    assert (segment.version, segment.last_count, segment.last_counted_at) == (2, None, None)
    assert members(segment) == {people["rich"].pk}

    segment = segment_update(segment=segment, rules=big_spenders(200000))
    assert segment.version == 2


def test_update_with_invalid_rules_changes_nothing():
    segment = segment_create(name="big", rules=big_spenders())
    with pytest.raises(RulesInvalid):
        segment_update(segment=segment, name="renamed", rules=doc({"type": "nope"}))
    segment.refresh_from_db()
    assert (segment.name, segment.version, segment.rules) == ("big", 1, big_spenders())


# --- Counting and the daily sizes ----------------------------------------------------------------------------------


def test_count_is_stored_on_the_segment(people):
    segment = segment_create(name="big", rules=big_spenders())
    at = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert segment_count(segment=segment, now=at) == 2
    segment.refresh_from_db()
    assert (segment.last_count, segment.last_counted_at) == (2, at)


def test_a_count_of_old_rules_is_not_stored_over_new_rules(people):
    segment = segment_create(name="big", rules=big_spenders())
    stale = Segment.objects.get(pk=segment.pk)
    segment_update(segment=segment, rules=big_spenders(200000))
    segment_count(segment=stale)  # counted with version 1's rules
    segment.refresh_from_db()
    assert segment.last_count is None


def test_daily_sizes_are_one_row_per_segment_and_workspace_day(people):
    big = segment_create(name="big", rules=big_spenders())
    everyone = segment_create(name="everyone")
    # 2026-02-28 23:30 UTC is already 2026-03-01 in Seoul.
    with time_machine.travel(datetime(2026, 2, 28, 23, 30, tzinfo=UTC), tick=False):
        assert segment_sizes_record() == 2
        ContactFactory(total_revenue=Decimal("500000"))
        assert segment_sizes_record() == 2  # the same day again: replaced, not added
    rows = list(SegmentSize.objects.order_by("segment__name").values_list("segment__name", "day", "count"))
    assert rows == [("big", datetime(2026, 3, 1).date(), 3), ("everyone", datetime(2026, 3, 1).date(), 4)]

    with time_machine.travel(datetime(2026, 3, 1, 16, 0, tzinfo=UTC), tick=False):
        segment_sizes_record_task()
    assert SegmentSize.objects.filter(segment=big).count() == 2
    assert list(SegmentSize.objects.filter(segment=everyone).values_list("day", flat=True)) == [
        datetime(2026, 3, 1).date(),
        datetime(2026, 3, 2).date(),
    ]
    big.refresh_from_db()
    assert big.last_count == 3


def test_a_broken_segment_does_not_stop_the_others(people):
    good = segment_create(name="good", rules=big_spenders())
    Segment.objects.create(name="broken", rules=doc({"type": "segment", "segment": 987654}))
    assert segment_sizes_record() == 1
    assert list(SegmentSize.objects.values_list("segment", flat=True)) == [good.pk]


def test_the_daily_task_is_scheduled_by_beat():
    from celery.schedules import crontab
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import ModelEntry

    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["segment-sizes-daily"]
    assert entry["task"] == "crm.segment_sizes_record"
    assert entry["schedule"] == crontab(hour=0, minute=10)
    app.loader.import_default_modules()
    assert "crm.segment_sizes_record" in app.tasks
    # What DatabaseScheduler does with each entry when beat starts: a periodic task in the workspace time zone.
    ModelEntry.from_entry("segment-sizes-daily", app=app, **entry)
    task = PeriodicTask.objects.get(name="segment-sizes-daily")
    assert (task.task, task.crontab.hour, task.crontab.minute, str(task.crontab.timezone)) == (
        "crm.segment_sizes_record",
        "0",
        "10",
        "Asia/Seoul",
    )


# --- Segments inside segments --------------------------------------------------------------------------------------


def test_an_included_segment_is_evaluated_with_its_current_rules(people):
    inner = segment_create(name="inner", rules=big_spenders())
    outer = segment_create(name="outer", rules=doc({"type": "segment", "segment": inner.pk}))
    excluded = segment_create(name="excluded", rules=doc({"type": "segment", "segment": inner.pk, "negate": True}))
    assert members(outer) == {people["rich"].pk, people["mid"].pk}
    assert members(excluded) == {people["poor"].pk}

    segment_update(segment=inner, rules=big_spenders(200000))
    outer.refresh_from_db()
    assert members(outer) == {people["rich"].pk}
    assert members(excluded) == {people["mid"].pk, people["poor"].pk}
    assert outer.contains(people["rich"])
    assert not outer.contains(people["mid"])


def test_nested_three_levels(people):
    vip_tag = TagFactory(name="vip")
    people["poor"].tags.add(vip_tag)
    c = segment_create(name="C", rules=doc({"type": "tag", "tag": "vip"}))
    b = segment_create(name="B", rules=doc({"type": "segment", "segment": c.pk}, big_spenders()["root"], op="or"))
    a = segment_create(
        name="A",
        rules=doc({"type": "segment", "segment": b.pk}, {"type": "orders", "field": "count", "op": "lte", "value": 1}),
    )
    assert members(a) == {people["mid"].pk, people["poor"].pk}


def test_a_cycle_written_around_the_services_fails_clearly_at_evaluation(people):
    a = Segment.objects.create(name="A", rules=doc())
    b = Segment.objects.create(name="B", rules=doc({"type": "segment", "segment": a.pk}))
    a.rules = doc({"type": "segment", "segment": b.pk})
    a.save()
    with pytest.raises(RulesInvalid) as caught:
        list(a.contacts())
    assert caught.value.errors[0].code == "cycle"
    assert "A → B → A" in caught.value.errors[0].message


def test_updating_into_a_cycle_is_refused(people):
    a = segment_create(name="A", rules=big_spenders())
    b = segment_create(name="B", rules=doc({"type": "segment", "segment": a.pk}))
    with pytest.raises(RulesInvalid) as caught:
        segment_update(segment=a, rules=doc({"type": "segment", "segment": b.pk}))
    assert caught.value.errors[0].code == "cycle"
    a.refresh_from_db()
    assert a.rules == big_spenders()


def test_a_used_segment_cannot_be_deleted(people):
    inner = segment_create(name="inner", rules=big_spenders())
    outer = segment_create(name="outer", rules=doc({"type": "segment", "segment": inner.pk}))
    with pytest.raises(SegmentInUse) as caught:
        segment_delete(segment=inner)
    assert caught.value.users == [outer]
    segment_delete(segment=outer)
    segment_delete(segment=inner)
    assert not Segment.objects.exists()


def test_erased_contacts_are_never_members():
    ContactFactory(erased_at=datetime(2026, 1, 1, tzinfo=UTC))
    kept = ContactFactory()
    everyone = segment_create(name="everyone")
    assert members(everyone) == {kept.pk}
    assert everyone.contains(kept)
    assert segment_count(segment=everyone) == 1


def test_relative_times_use_the_moment_of_evaluation(people):
    segment = segment_create(name="seen today", rules=doc({"type": "field", "field": "last_seen_at", "op": "today"}))
    seen = ContactFactory(last_seen_at=datetime(2026, 3, 1, 1, 0, tzinfo=UTC))  # 10:00 in Seoul
    with time_machine.travel(datetime(2026, 3, 1, 14, 59, tzinfo=UTC), tick=False):  # 23:59 in Seoul
        assert segment.contains(seen)
    with time_machine.travel(datetime(2026, 3, 1, 15, 0, tzinfo=UTC), tick=False):  # midnight in Seoul
        assert not segment.contains(seen)
    assert segment.contains(seen, now=datetime(2026, 3, 1, 0, 0, tzinfo=UTC) + timedelta(hours=5))


def test_every_product_schedule_survives_the_settings_module():
    """The apps' beat entries live in one dict: a later assignment must not drop an earlier app's entries."""
    assert {
        "crm.events_sweep",
        "segment-sizes-daily",
        "heartbeat",
        "campaigns-tick",
        "campaigns-ads-reconsent-daily",
    } <= set(settings.CELERY_BEAT_SCHEDULE)
