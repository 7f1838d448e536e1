"""Stored report figures of settled runs (``Run.figures``), so that reports count only the sends of open runs.

A run is settled one day (``SETTLED_AFTER``) after its attribution window closed, counted from its end
(``finished_at``, or its start for a run cancelled before that was recorded): its receipts and conversions are in.
The hourly beat task ``campaigns.store_run_figures`` then counts its figures once (``campaigns.selectors``'
definitions) and stores them with the time they were counted (``Run.figures_at``). Opens, clicks and receipts that
arrive later still count: the figures of a run are counted again once a day (``REFRESH_EVERY``) until
``REFRESH_FOR`` after it ended; after that they stay as stored (with click-based attribution, a conversion after a
click more than 30 days late is not reflected). Set-based: ``BATCH_RUNS`` runs per set of grouped queries, one bulk
update per batch. When a campaign's conversions are counted again (its goal or window changed), the stored figures
of the runs of every campaign with that goal are dropped (``runs_figures_forget``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.models import Campaign, Run
from campaigns.selectors import SETTLED_AFTER, figures_dump, runs_figures

log = structlog.get_logger(__name__)

REFRESH_EVERY = timedelta(days=1)
REFRESH_FOR = timedelta(days=30)
BATCH_RUNS = 20
#: At most this many runs per call (a backlog, e.g. after an upgrade, is worked off over the next calls).
MAX_RUNS = 400


def runs_due_for_figures(*, now: datetime):
    """Settled runs whose figures are missing, or older than a day while the run is young enough to be refreshed;
    oldest first. Settled is per campaign window: one condition per distinct window (campaigns use a handful)."""
    windows = Campaign.objects.values_list("attribution_window_hours", flat=True).distinct().order_by()
    settled = Q(pk__in=[])
    for hours in windows:
        settled |= Q(campaign__attribution_window_hours=hours, ended__lte=now - timedelta(hours=hours) - SETTLED_AFTER)
    stale = Q(figures_at__lte=now - REFRESH_EVERY, ended__gte=now - REFRESH_FOR)
    return (
        Run.objects.filter(status__in=[Run.Status.COMPLETED, Run.Status.CANCELLED])
        .annotate(ended=Coalesce("finished_at", "started_at", "scheduled_for"))  # selectors.run_end
        .filter(settled)
        .filter(Q(figures_at__isnull=True) | stale)
        .defer("figures", "counts", "winner_explanation")
        .order_by("ended", "id")
    )


def runs_store_figures(*, now: datetime | None = None, max_runs: int = MAX_RUNS) -> int:
    """Count and store the figures of the runs due (see the module docstring); returns how many were stored."""
    now = now or timezone.now()
    due = list(runs_due_for_figures(now=now)[:max_runs])
    stored = 0
    for start in range(0, len(due), BATCH_RUNS):
        batch = due[start : start + BATCH_RUNS]
        try:
            counted = runs_figures([run.pk for run in batch])
        except Exception:  # one batch that cannot be counted must not hold back the runs after it
            log.exception("run_figures_failed", runs=[run.pk for run in batch])
            continue
        for run in batch:
            run.figures, run.figures_at = figures_dump(counted[run.pk]), now
        Run.objects.bulk_update(batch, ["figures", "figures_at"])
        stored += len(batch)
    if stored:
        log.info("run_figures_stored", runs=stored)
    return stored


def runs_figures_forget(*, goal_events: set[str]) -> int:
    """Drop the stored figures of the runs of campaigns with one of ``goal_events`` (after conversions were counted
    again: an event taken from one campaign may go to another with the same goal). They are counted live until the
    next hourly pass stores them again. Returns how many runs were affected."""
    return Run.objects.filter(campaign__goal_event__in=goal_events, figures_at__isnull=False).update(
        figures={}, figures_at=None
    )
