"""Reads across the campaigns models: goal metrics per variant (for the auto-winner) and a run's conversions per
variant and holdout (for its report); never writes.

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

from django.db.models import Count, DateTimeField, Exists, ExpressionWrapper, OuterRef, Q, Sum, Value
from django.db.models.functions import Coalesce

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


def run_conversions(*, run: Run) -> dict[str, dict]:
    """Conversions of a run per variant and for the holdout, for its report: ``{label: {"base", "converted",
    "rate"}}`` where ``label`` is the variant's name or ``"holdout"``.

    A variant's base is its sent sends, each converting when its contact has the goal event after ``sent_at`` and
    within the attribution window; the holdout's base is its members, measured the same way from the run's start,
    so the two rates compare (the lift). Empty when the campaign has no goal event. One query."""
    from crm.models import Event

    campaign = run.campaign
    if not campaign.goal_event:
        return {}
    start = run.started_at or run.scheduled_for
    window = timedelta(hours=campaign.attribution_window_hours)
    base = Send.objects.filter(run=run, is_test=False).filter(
        Q(status=Send.Status.SENT, variant__isnull=False) | Q(is_holdout=True)
    )
    since = Coalesce(OuterRef("sent_at"), Value(start), output_field=DateTimeField())
    goal = Event.objects.filter(
        contact_id=OuterRef("contact_id"),
        name=campaign.goal_event,
        occurred_at__gt=since,
        occurred_at__lte=ExpressionWrapper(since + Value(window), output_field=DateTimeField()),
    )
    rows = (
        base.annotate(converted=Exists(goal))
        .values_list("is_holdout", "variant__name")
        .annotate(n=Count("id"), converted_n=Count("id", filter=Q(converted=True)))
        .order_by()
    )
    result: dict[str, dict] = {}
    for is_holdout, name, n, converted in rows:
        row = result.setdefault("holdout" if is_holdout else name, {"base": 0, "converted": 0})
        row["base"] += n
        row["converted"] += converted
    for row in result.values():
        row["rate"] = row["converted"] / row["base"] if row["base"] else 0.0
    return result


def run_variant_report(*, run: Run) -> dict[str, dict]:
    """The report's figures per variant (by name) and ``"holdout"``, from the send ledger and the attributed
    conversions (``campaigns.services.attribution``): ``sent``, ``delivered``, ``opened``, ``clicked`` (sends with
    a first delivery/open/click: automatic opens and clicks never set these unless ``TRACKING_COUNT_BOTS``),
    ``unsubscribed``, ``converted`` (sends with a conversion), ``revenue``; the holdout's ``members``,
    ``converted`` and ``revenue``. Two aggregate queries over the run's sends and one over its conversions."""
    from campaigns.models import Conversion, DeliveryStatus

    sends = Send.objects.filter(run=run, is_test=False)
    result: dict[str, dict] = {}
    rows = (
        sends.filter(status=Send.Status.SENT, variant__isnull=False)
        .values_list("variant__name")
        .annotate(
            sent=Count("id"),
            delivered=Count("id", filter=Q(delivered_at__isnull=False) | Q(delivery_status=DeliveryStatus.DELIVERED)),
            opened=Count("id", filter=Q(opened_at__isnull=False)),
            clicked=Count("id", filter=Q(clicked_at__isnull=False)),
            unsubscribed=Count("id", filter=Q(delivery_status=DeliveryStatus.UNSUBSCRIBED)),
        )
        .order_by()
    )
    for name, sent, delivered, opened, clicked, unsubscribed in rows:
        result[name] = {
            "sent": sent,
            "delivered": delivered,
            "opened": opened,
            "clicked": clicked,
            "unsubscribed": unsubscribed,
            "converted": 0,
            "revenue": Decimal(0),
        }
    members = sends.filter(is_holdout=True).count()
    if members:
        result["holdout"] = {"members": members, "converted": 0, "revenue": Decimal(0)}
    conversions = (
        Conversion.objects.filter(run=run)
        .values_list("is_holdout", "send__variant__name")
        .annotate(converted=Count("send_id", distinct=True), revenue=Sum("revenue"))
        .order_by()
    )
    for is_holdout, name, converted, revenue in conversions:
        row = result.get("holdout" if is_holdout else name)
        if row is not None:
            row["converted"] += converted
            row["revenue"] += revenue or Decimal(0)
    return result
