"""The automatic A/B winner: after the wait, the best variant by the campaign's metric goes to the rest."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign, Run, Send
from campaigns.selectors import variant_goal_metrics
from campaigns.services.sending import sends_enqueue
from campaigns.stats import two_proportion_test

log = structlog.get_logger(__name__)


def run_decide_winner(*, run_id: int, now: datetime | None = None) -> Run:
    """Pick the winner of a run's test (highest metric; ties go to the earlier variant), then release the waiting
    sends with that variant, due now plus the variant's delay. Idempotent: a decided run is left alone.

    The explanation keeps every variant's figures and the winner's two-proportion test against the runner-up
    (``significance``): the winner is always sent (waiting longer would delay the rest), but the report says in
    words when the difference was too small to decide or not significant (``campaigns.ab_report.winner_in_words``).

    The figures are the report's (``campaigns.selectors``): conversions are the attributed ones, so the goal events of
    the run's contacts not attributed yet are attributed first (received until a minute ago, ``attribution.SETTLE``).
    """
    from campaigns.services.attribution import run_conversions_attribute

    now = now or timezone.now()
    pending = Run.objects.filter(pk=run_id, winner_decided_at__isnull=True).select_related("campaign").first()
    if pending is not None:
        run_conversions_attribute(run=pending, now=now)
    with transaction.atomic():
        run = Run.objects.select_for_update().select_related("campaign").get(pk=run_id)
        if run.winner_decided_at is not None or run.status != Run.Status.SENDING:
            return run
        campaign = run.campaign
        metrics = variant_goal_metrics(run=run)
        key = campaign.winner_metric
        variants = list(campaign.variants.order_by("id"))
        best = max(variants, key=lambda v: (metrics[v.pk][key], -variants.index(v)))
        run.winner_variant = best
        run.winner_decided_at = now
        run.winner_explanation = {
            "metric": key,
            "goal_event": campaign.goal_event,
            "attribution_window_hours": campaign.attribution_window_hours,
            "variants": {
                str(v.pk): {
                    "name": v.name,
                    "sent": metrics[v.pk]["sent"],
                    "conversions": metrics[v.pk]["conversions"],
                    "revenue": str(metrics[v.pk]["revenue"]),
                    "conversion_rate": metrics[v.pk]["conversion_rate"],
                    "revenue_per_send": metrics[v.pk]["revenue_per_send"],
                }
                for v in variants
            },
            "winner": best.name,
            "significance": _significance(best, variants, metrics),
        }
        run.save(update_fields=["winner_variant", "winner_decided_at", "winner_explanation"])
        due = now + timedelta(minutes=best.send_delay_minutes)
        waiting = Send.objects.filter(run=run, status=Send.Status.WAITING)
        ids = list(waiting.values_list("pk", flat=True))
        waiting.update(variant=best, status=Send.Status.QUEUED, due_at=due)
        if due <= now:
            sends_enqueue(send_ids=ids, now=now)
    log.info("winner_decided", run=run.pk, winner=best.name, released=len(ids))
    return run


def _significance(best, variants, metrics) -> dict | None:
    """The winner's conversion rate against the runner-up's (two-proportion test, ``campaigns.stats``)."""
    others = [v for v in variants if v.pk != best.pk]
    if not others:
        return None
    runner_up = max(others, key=lambda v: (metrics[v.pk]["conversion_rate"], -variants.index(v)))
    win, other = metrics[best.pk], metrics[runner_up.pk]
    result = two_proportion_test(win["conversions"], win["sent"], other["conversions"], other["sent"])
    return {"runner_up": runner_up.name, "z": result.z, "p_value": result.p_value, "verdict": result.verdict}


def runs_decide_due_winners(*, now: datetime | None = None) -> int:
    now = now or timezone.now()
    due = Run.objects.filter(
        status=Run.Status.SENDING,
        winner_decide_at__lte=now,
        winner_decided_at__isnull=True,
        campaign__status__in=[Campaign.Status.RUNNING, Campaign.Status.SCHEDULED],
    ).values_list("pk", flat=True)
    count = 0
    for run_id in list(due):
        run_decide_winner(run_id=run_id, now=now)
        count += 1
    return count
