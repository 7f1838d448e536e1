"""Reads across the campaigns models: goal metrics per variant (for the auto-winner), never writes.

Goal metric (until attribution arrives with issue #10, which may replace this selector): a sent send *converts*
when its contact has a goal event (``campaign.goal_event``) after the send's ``sent_at`` and within
``campaign.attribution_window_hours`` of it. Per variant: ``sent`` (sends delivered), ``conversions`` (sends that
converted; one per send however many goal events follow), ``revenue`` (the sum over converting sends of the first
goal event's ``revenue``, ``total`` or ``value`` property), ``conversion_rate`` = conversions / sent and
``revenue_per_send`` = revenue / sent. Test sends never count.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.db.models import Count, DateTimeField, Exists, ExpressionWrapper, OuterRef, Value

from campaigns.models import Run, Send

REVENUE_KEYS = ("revenue", "total", "value")


def _revenue(properties: dict) -> Decimal:
    for key in REVENUE_KEYS:
        value = properties.get(key) if isinstance(properties, dict) else None
        if value not in (None, ""):
            try:
                return Decimal(str(value))
            except (InvalidOperation, ValueError):
                return Decimal(0)
    return Decimal(0)


def variant_goal_metrics(*, run: Run) -> dict[int, dict]:
    """``{variant_id: {"name", "sent", "conversions", "revenue", "conversion_rate", "revenue_per_send"}}``."""
    from crm.models import Event

    campaign = run.campaign
    window = timedelta(hours=campaign.attribution_window_hours)
    sent = Send.objects.filter(run=run, status=Send.Status.SENT, is_test=False, variant__isnull=False)
    metrics: dict[int, dict] = {
        v.pk: {"name": v.name, "sent": 0, "conversions": 0, "revenue": Decimal(0)} for v in campaign.variants.all()
    }
    if not campaign.goal_event:
        for variant_id, n in sent.values_list("variant_id").annotate(n=Count("id")).order_by():
            metrics[variant_id]["sent"] += n
        return _rates(metrics)
    goal = Event.objects.filter(
        contact_id=OuterRef("contact_id"),
        name=campaign.goal_event,
        occurred_at__gt=OuterRef("sent_at"),
        occurred_at__lte=ExpressionWrapper(OuterRef("sent_at") + Value(window), output_field=DateTimeField()),
    )
    rows = sent.annotate(converted=Exists(goal)).values_list("variant_id", "contact_id", "sent_at", "converted")
    converted: list[tuple[int, int, object]] = []
    for variant_id, contact_id, sent_at, did in rows.iterator(chunk_size=5000):
        metrics[variant_id]["sent"] += 1
        if did:
            metrics[variant_id]["conversions"] += 1
            converted.append((variant_id, contact_id, sent_at))
    for variant_id, contact_id, sent_at in converted:
        first = (
            Event.objects.filter(
                contact_id=contact_id,
                name=campaign.goal_event,
                occurred_at__gt=sent_at,
                occurred_at__lte=sent_at + window,
            )
            .order_by("occurred_at", "id")
            .values_list("properties", flat=True)
            .first()
        )
        metrics[variant_id]["revenue"] += _revenue(first or {})
    return _rates(metrics)


def _rates(metrics: dict[int, dict]) -> dict[int, dict]:
    for row in metrics.values():
        row["conversion_rate"] = row["conversions"] / row["sent"] if row["sent"] else 0.0
        row["revenue_per_send"] = float(row["revenue"]) / row["sent"] if row["sent"] else 0.0
    return metrics
