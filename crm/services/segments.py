"""Segments: create and change them (rules validated, version bumped), count members, keep the daily size history.

The only writers of ``Segment`` and ``SegmentSize``. Members themselves are read through ``segment.contacts()``
(``crm.segments``); their export goes through ``crm.exporting`` like every contact export.
"""

from __future__ import annotations

import copy
from datetime import date, datetime
from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from crm.models import Segment, SegmentSize
from crm.segments import EMPTY_RULES, RuleError, RulesInvalid, segment_contacts, validate_rules
from crm.segments.schema import segment_references

logger = structlog.get_logger(__name__)


class SegmentInUse(ValueError):
    """A segment other segments refer to cannot be deleted."""

    def __init__(self, segment: Segment, users: list[Segment]):
        self.users = users
        super().__init__(
            gettext("“%(name)s” is used by the segment(s) %(users)s; remove it from them first.")
            % {"name": segment.name, "users": ", ".join(f"“{s.name}”" for s in users)}
        )


def _clean_rules(rules: Any, *, segment_id: int | None) -> dict:
    if rules in (None, {}):
        return copy.deepcopy(EMPTY_RULES)
    return copy.deepcopy(validate_rules(rules, segment_id=segment_id))


def segment_create(*, name: str, rules: Any = None, description: str = "", created_by=None) -> Segment:
    """A new segment. Raises ``RulesInvalid`` (with every problem and its path) for invalid rules."""
    name = (name or "").strip()
    if not name:
        raise RulesInvalid([RuleError("name", "required", gettext("A segment needs a name."))])
    segment = Segment.objects.create(
        name=name,
        description=description or "",
        rules=_clean_rules(rules, segment_id=None),
        created_by=created_by,
    )
    logger.info("segment_created", segment_id=segment.pk, version=segment.version)
    return segment


def segment_update(
    *, segment: Segment, name: str | None = None, description: str | None = None, rules: Any = None
) -> Segment:
    """Change a segment. New rules are validated (cycles through other segments included) and bump ``version``;
    the cached count is cleared since it was made from the old rules."""
    fields = ["updated_at"]
    if name is not None:
        name = name.strip()
        if not name:
            raise RulesInvalid([RuleError("name", "required", gettext("A segment needs a name."))])
        segment.name = name
        fields.append("name")
    if description is not None:
        segment.description = description
        fields.append("description")
    if rules is not None:
        cleaned = _clean_rules(rules, segment_id=segment.pk)
        if cleaned != segment.rules:
            segment.rules = cleaned
            segment.version += 1
            segment.last_count = None
            segment.last_counted_at = None
            fields += ["rules", "version", "last_count", "last_counted_at"]
    with transaction.atomic():
        segment.save(update_fields=fields)
    logger.info("segment_updated", segment_id=segment.pk, version=segment.version)
    return segment


def segment_delete(*, segment: Segment) -> None:
    """Delete a segment no other segment refers to (else ``SegmentInUse``)."""
    users = [
        other
        for other in Segment.objects.exclude(pk=segment.pk).only("pk", "name", "rules")
        if segment.pk in segment_references(other.rules)
    ]
    if users:
        raise SegmentInUse(segment, users)
    segment.delete()


def segment_count(*, segment: Segment, now: datetime | None = None) -> int:
    """Count the members now (one COUNT query) and remember it on the segment (``last_count``)."""
    now = now or timezone.now()
    count = segment_contacts(segment=segment, now=now).count()
    Segment.objects.filter(pk=segment.pk, version=segment.version).update(last_count=count, last_counted_at=now)
    segment.last_count, segment.last_counted_at = count, now
    return count


def segment_sizes_record(*, now: datetime | None = None) -> int:
    """Record today's member count of every segment (the beat task ``crm.segment_sizes_record`` runs this daily).

    Idempotent: one ``SegmentSize`` row per segment and day (workspace time zone); running again the same day
    replaces that day's count. A segment whose rules cannot be evaluated (e.g. a segment it refers to was removed
    from the database by hand) is logged and skipped; the others are still counted. Returns the rows written.
    """
    now = now or timezone.now()
    day: date = timezone.localtime(now).date()
    written = 0
    for segment in Segment.objects.order_by("pk"):
        try:
            count = segment_count(segment=segment, now=now)
        except RulesInvalid as exc:
            logger.warning("segment_size_skipped", segment_id=segment.pk, errors=[e.code for e in exc.errors])
            continue
        SegmentSize.objects.bulk_create(
            [SegmentSize(segment=segment, day=day, count=count, counted_at=now)],
            update_conflicts=True,
            unique_fields=["segment", "day"],
            update_fields=["count", "counted_at"],
        )
        written += 1
    logger.info("segment_sizes_recorded", day=day.isoformat(), segments=written)
    return written
