"""Reusable filters for contacts and events."""

from __future__ import annotations

from django.db import models
from django.db.models import Exists, OuterRef


class ContactQuerySet(models.QuerySet):
    def not_erased(self) -> ContactQuerySet:
        return self.filter(erased_at__isnull=True)

    def consented(self, purpose: str) -> ContactQuerySet:
        """Contacts whose current consent for ``purpose`` is granted."""
        from crm.models import Consent

        return self.filter(Exists(Consent.objects.filter(contact=OuterRef("pk"), purpose=purpose, granted=True)))


class EventQuerySet(models.QuerySet):
    def named(self, name: str) -> EventQuerySet:
        return self.filter(name=name)

    def timeline(self) -> EventQuerySet:
        """Newest first, in the order the (contact, -occurred_at, -id) index serves."""
        return self.order_by("-occurred_at", "-id")
