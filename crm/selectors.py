"""Reads across crm models. Never writes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import QuerySet
from django.utils.translation import gettext as _
from rest_framework.exceptions import ValidationError

from crm.emails import email_domain_lowercased
from crm.ingest.messages import parse_timestamp
from crm.phones import phone_search_variants

if TYPE_CHECKING:
    from crm.models import Contact


def contact_filter(*, queryset: QuerySet, params: Mapping[str, str]) -> QuerySet:
    """Filter contacts by exact email, phone in any format, external id and 'updated since'."""
    if email := params.get("email", "").strip():
        queryset = queryset.filter(email__in={email, email_domain_lowercased(email)})
    if phone := params.get("phone", "").strip():
        queryset = queryset.filter(phone__in=phone_search_variants(phone) or ["-"])
    if external_id := params.get("external_id", "").strip():
        queryset = queryset.filter(external_id=external_id)
    if since := params.get("updated_since", "").strip():
        try:
            queryset = queryset.filter(updated_at__gte=parse_timestamp(since))
        except (ValueError, TypeError):
            raise ValidationError({"updated_since": [_("Must be an ISO 8601 date and time.")]}) from None
    return queryset


@dataclass(frozen=True)
class RulesPreview:
    """Who a rule document selects now: the number of members and the newest few."""

    count: int
    sample: list[Contact]


def segment_rules_preview(
    *, rules: dict, segment_id: int | None = None, sample_size: int = 10, now: datetime | None = None
) -> RulesPreview:
    """Validate ``rules`` (references and cycles included, as when saving the segment ``segment_id``) and count
    the contacts they select now, with the ``sample_size`` newest of them. Two queries; raises ``RulesInvalid``."""
    from crm.models import Contact
    from crm.segments import compile_rules, validate_rules

    validate_rules(rules, segment_id=segment_id)
    members = Contact.objects.not_erased().filter(compile_rules(rules, now=now, segment_id=segment_id))
    count = members.count()
    sample = list(members.order_by("-pk").only("pk", "name", "email", "phone", "external_id")[:sample_size])
    return RulesPreview(count=count, sample=sample)


def event_names(*, limit: int = 500) -> list[str]:
    """The distinct event names, alphabetically, at most ``limit``: for the rule builder's suggestions.

    A loose index scan (a recursive query that asks the ``(name, occurred_at, contact)`` index for the next name
    after the last one), so the cost is one index probe per name, not a scan of every event.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(EVENT_NAMES_SQL, [limit])
        return [row[0] for row in cursor.fetchall()]


#: ``event_names``: each step asks the index for the smallest name after the previous one; ``n`` bounds the steps.
EVENT_NAMES_SQL = """
    WITH RECURSIVE names(name, n) AS (
        SELECT (SELECT MIN(name) FROM crm_event), 1
        UNION ALL
        SELECT (SELECT MIN(e.name) FROM crm_event e WHERE e.name > names.name), names.n + 1
        FROM names WHERE names.name IS NOT NULL AND names.n < %s
    )
    SELECT name FROM names WHERE name IS NOT NULL ORDER BY n
"""
