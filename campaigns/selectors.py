"""Reads across the campaigns models: a run's figures per variant and for its holdout, the one source of the run
report, the A/B report, a recurring campaign's runs chart and the automatic winner; never writes.

Definitions (docs/analytics.md, "Definitions"), over the run's sends, test sends never counted, per variant:

- **audience**: the variant's sends, whatever became of them; **sent**, **skipped**, **failed**: by status.
- **delivered**: sent, with delivery reported (``delivered_at``, or a ``delivered`` receipt).
- **opened** / **clicked**: sent, with a first counted open / click (automatic opens and clicks never set these
  unless ``TRACKING_COUNT_BOTS``).
- **unsubscribed**: sent, whose receipt is ``unsubscribed``.
- **converted**: sends with at least one attributed conversion (``campaigns.services.attribution``: the goal event
  within the window after the touch, last touch, one conversion per event); **revenue**: the sum of those
  conversions' revenue.
- the **holdout**: its ``members`` (holdout sends) and the holdout conversions (``converted``, ``revenue``).

Sends without a variant that are not holdout members (the rest of an A/B test waiting for its winner) count in the
run's totals under ``UNASSIGNED`` and in no variant.

A settled run's figures are read from ``Run.figures`` (stored by ``campaigns.services.run_figures``); the figures of
the others are counted in two grouped queries, one over the sends and one over the conversions, whatever the number
of runs, plus one for the variants' names (``runs_figures``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Count, Q, Sum

from campaigns.models import Conversion, DeliveryStatus, Run, Send, Variant
from campaigns.stats import rate

REVENUE_KEYS = ("revenue", "total", "value")
HOLDOUT = "holdout"
UNASSIGNED = ""
#: A run is *settled* this long after its attribution window closed: late receipts and conversions are in.
SETTLED_AFTER = timedelta(days=1)

SENT = Q(status=Send.Status.SENT)
SEND_FIGURES = {
    "audience": Count("id"),
    "sent": Count("id", filter=SENT),
    "skipped": Count("id", filter=Q(status=Send.Status.SKIPPED)),
    "failed": Count("id", filter=Q(status=Send.Status.FAILED)),
    "delivered": Count(
        "id", filter=SENT & (Q(delivered_at__isnull=False) | Q(delivery_status=DeliveryStatus.DELIVERED))
    ),
    "opened": Count("id", filter=SENT & Q(opened_at__isnull=False)),
    "clicked": Count("id", filter=SENT & Q(clicked_at__isnull=False)),
    "unsubscribed": Count("id", filter=SENT & Q(delivery_status=DeliveryStatus.UNSUBSCRIBED)),
}
#: The counted figures of a variant (and of a run: their sums), in the order reports show them.
FIGURES = (*SEND_FIGURES, "converted", "revenue")


def _revenue(properties: dict) -> Decimal:
    for key in REVENUE_KEYS:
        value = properties.get(key) if isinstance(properties, dict) else None
        if value not in (None, ""):
            try:
                return Decimal(str(value))
            except (InvalidOperation, ValueError):
                return Decimal(0)
    return Decimal(0)


def empty_figures() -> dict[str, Any]:
    return {**dict.fromkeys(SEND_FIGURES, 0), "converted": 0, "revenue": Decimal(0)}


def empty_holdout() -> dict[str, Any]:
    return {"members": 0, "converted": 0, "revenue": Decimal(0)}


def runs_figures(run_ids: list[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """``{run id: {label: figures}}`` counted now, ``label`` a variant's name, ``HOLDOUT`` or ``UNASSIGNED``: one
    grouped query over the runs' sends, one over their conversions and one for the variants' names."""
    result: dict[int, dict[str, dict[str, Any]]] = {run_id: {} for run_id in run_ids}
    if not run_ids:
        return result
    names = {
        pk: f"{name} (#{pk})" if name in (HOLDOUT, UNASSIGNED) else name  # names from before they were reserved
        for pk, name in Variant.objects.filter(campaign__runs__in=run_ids).values_list("id", "name").distinct()
    }
    sends = (
        Send.objects.filter(run_id__in=run_ids, is_test=False)
        .values_list("run_id", "variant_id", "is_holdout")
        .annotate(**SEND_FIGURES)
        .order_by()
    )
    for run_id, variant_id, is_holdout, *counts in sends:
        if is_holdout:
            row = result[run_id].setdefault(HOLDOUT, empty_holdout())
            row["members"] += counts[0]
            continue
        row = result[run_id].setdefault(names.get(variant_id, UNASSIGNED), empty_figures())
        for name, count in zip(SEND_FIGURES, counts, strict=True):
            row[name] += count
    conversions = (
        Conversion.objects.filter(run_id__in=run_ids)
        .values_list("run_id", "variant_id", "is_holdout")
        .annotate(converted=Count("send_id", distinct=True), revenue=Sum("revenue"))
        .order_by()
    )
    for run_id, variant_id, is_holdout, converted, revenue in conversions:
        label = HOLDOUT if is_holdout else names.get(variant_id, UNASSIGNED)
        row = result[run_id].setdefault(label, empty_holdout() if is_holdout else empty_figures())
        row["converted"] += converted
        row["revenue"] += revenue or Decimal(0)
    return result


def figures_dump(figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``figures`` as JSON for ``Run.figures`` (revenue as a decimal string)."""
    return {label: {**row, "revenue": str(row["revenue"])} for label, row in figures.items()}


def figures_load(stored: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        label: {**(empty_holdout() if label == HOLDOUT else empty_figures()), **row, "revenue": Decimal(row["revenue"])}
        for label, row in stored.items()
    }


def run_end(run: Run) -> datetime:
    """When a finished run ended: ``finished_at``, or for one cancelled before that was recorded, its start."""
    return run.finished_at or run.started_at or run.scheduled_for


def run_is_settled(run: Run, *, window_hours: int, now: datetime) -> bool:
    """Finished, and one ``SETTLED_AFTER`` past its attribution window: its receipts and conversions are in."""
    if run.status not in (Run.Status.COMPLETED, Run.Status.CANCELLED):
        return False
    return run_end(run) + timedelta(hours=window_hours) + SETTLED_AFTER <= now


def figures_of_runs(runs: list[Run], *, window_hours: int, now: datetime) -> dict[int, dict[str, dict[str, Any]]]:
    """The figures of ``runs`` (of one campaign): stored for the settled runs that have them, counted for the
    others (one pair of queries for all of them)."""
    result: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        if run.figures_at is not None and run_is_settled(run, window_hours=window_hours, now=now):
            result[run.pk] = figures_load(run.figures)
    result.update(runs_figures([run.pk for run in runs if run.pk not in result]))
    return result


def run_figures(run: Run, *, now: datetime) -> dict[str, dict[str, Any]]:
    return figures_of_runs([run], window_hours=run.campaign.attribution_window_hours, now=now)[run.pk]


def run_totals(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A run's figures: the sums over its variants and the unassigned sends (the holdout apart)."""
    total = empty_figures()
    for label, row in figures.items():
        if label != HOLDOUT:
            for name in FIGURES:
                total[name] += row[name]
    return total


def variant_goal_metrics(*, run: Run) -> dict[int, dict]:
    """For the automatic winner, counted now: ``{variant_id: {"name", "sent", "conversions", "revenue",
    "conversion_rate", "revenue_per_send"}}`` from the run's figures (``conversions``: its sends with an attributed
    conversion; the caller brings the attribution up to date first)."""
    figures = runs_figures([run.pk])[run.pk]
    metrics: dict[int, dict] = {}
    for variant in run.campaign.variants.order_by("id"):
        row = figures.get(variant.name, empty_figures())
        sent = row["sent"]
        metrics[variant.pk] = {
            "name": variant.name,
            "sent": sent,
            "conversions": row["converted"],
            "revenue": row["revenue"],
            "conversion_rate": rate(row["converted"], sent),
            "revenue_per_send": rate(float(row["revenue"]), sent),
        }
    return metrics
