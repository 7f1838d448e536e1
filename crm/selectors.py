"""Reads across crm models. Never writes."""

from __future__ import annotations

from collections.abc import Mapping

from django.db.models import QuerySet
from django.utils.translation import gettext as _
from rest_framework.exceptions import ValidationError

from crm.emails import email_domain_lowercased
from crm.ingest.messages import parse_timestamp
from crm.phones import phone_search_variants


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
