"""Operational records: heartbeats of periodic schedules."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from crm.models import Heartbeat


def heartbeat_record(*, name: str) -> Heartbeat:
    """Note that the periodic signal ``name`` fired now (idempotent per call: it only moves the time forward)."""
    now = timezone.now()
    with transaction.atomic():
        updated = Heartbeat.objects.filter(name=name).update(beat_at=now, count=F("count") + 1)
        if not updated:
            Heartbeat.objects.get_or_create(name=name, defaults={"beat_at": now, "count": 1})
    return Heartbeat.objects.get(name=name)
