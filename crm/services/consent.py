"""Consent: the current state per contact and purpose, and its append-only history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from crm.db import bulk_upsert
from crm.models import Consent, ConsentChange, ConsentPurpose

PURPOSES = set(ConsentPurpose.values)


@dataclass(frozen=True, slots=True)
class ConsentInput:
    contact_id: int
    purpose: str
    granted: bool
    changed_at: datetime
    source: str


def consent_record_many(*, changes: Iterable[ConsentInput]) -> int:
    """Record consent given or withdrawn, set-based. Returns how many changes took effect.

    A change takes effect when it differs from the current state and is not older than it (a late-arriving old
    message never overrides a newer decision). Every change that takes effect is appended to ConsentChange with its
    time and source.
    """
    changes = sorted(changes, key=lambda c: c.changed_at)
    if not changes:
        return 0
    unknown = {c.purpose for c in changes} - PURPOSES
    if unknown:
        raise ValueError(f"unknown consent purpose(s): {', '.join(sorted(unknown))}")
    contact_ids = {c.contact_id for c in changes}
    current = {
        (c.contact_id, c.purpose): c
        for c in Consent.objects.filter(contact_id__in=contact_ids, purpose__in={ch.purpose for ch in changes})
    }
    history: list[ConsentChange] = []
    for change in changes:
        key = (change.contact_id, change.purpose)
        state = current.get(key)
        if state is not None and (state.granted == change.granted or change.changed_at < state.changed_at):
            continue
        current[key] = Consent(
            contact_id=change.contact_id,
            purpose=change.purpose,
            granted=change.granted,
            changed_at=change.changed_at,
            source=change.source[:100],
        )
        history.append(
            ConsentChange(
                contact_id=change.contact_id,
                purpose=change.purpose,
                granted=change.granted,
                changed_at=change.changed_at,
                source=change.source[:100],
            )
        )
    if not history:
        return 0
    touched = sorted({(h.contact_id, h.purpose) for h in history})
    bulk_upsert(
        Consent,
        [
            {
                "contact_id": current[key].contact_id,
                "purpose": current[key].purpose,
                "granted": current[key].granted,
                "changed_at": current[key].changed_at,
                "source": current[key].source,
            }
            for key in touched
        ],
        unique_fields=["contact", "purpose"],
        update_fields=["granted", "changed_at", "source"],
    )
    recorded_at = timezone.now()
    bulk_upsert(
        ConsentChange,
        [
            {
                "contact_id": h.contact_id,
                "purpose": h.purpose,
                "granted": h.granted,
                "changed_at": h.changed_at,
                "source": h.source,
                "recorded_at": recorded_at,
            }
            for h in history
        ],
    )
    return len(history)
