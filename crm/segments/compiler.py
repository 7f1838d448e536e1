"""Compile a segment's rule document into one ORM query over contacts."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from crm.models import Contact, Segment

EMPTY_RULES = {"version": 1, "root": {"type": "group", "op": "and", "children": []}}


def _compile(node: dict, *, now: datetime) -> Q:
    kind = node.get("type")
    if kind == "group":
        parts = [_compile(child, now=now) for child in node.get("children", [])]
        if node.get("op", "and") == "or":
            q = Q(pk__in=[])
            for part in parts:
                q |= part
        else:
            q = Q()
            for part in parts:
                q &= part
        return ~q if node.get("negate") else q
    if kind == "list":
        through = Contact.lists.through
        return Q(Exists(through.objects.filter(contact_id=OuterRef("pk"), contactlist_id=node["list"])))
    if kind == "tag":
        through = Contact.tags.through
        return Q(Exists(through.objects.filter(contact_id=OuterRef("pk"), tag__name=node["tag"])))
    raise ValueError(f"unknown condition type {kind!r}")


def segment_contacts(*, segment: Segment, now: datetime | None = None) -> QuerySet[Contact]:
    rules = segment.rules or EMPTY_RULES
    q = _compile(rules["root"], now=now or timezone.now())
    return Contact.objects.not_erased().filter(q)


def segment_contains(*, segment: Segment, contact: Contact, now: datetime | None = None) -> bool:
    return segment_contacts(segment=segment, now=now).filter(pk=contact.pk).exists()
