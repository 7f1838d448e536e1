"""Campaign figures for the dashboard and a recurring campaign's page: runs side by side, daily rates, what ran
today and what runs next. Reads only; every figure is one grouped query over a bounded time window or a bounded
list of runs (no Python loop over sends).

Definitions (the same everywhere they are shown):

- **sent**: sends with status ``sent`` (test sends never count); the rates below are shares of sent.
- **delivered**: sent sends whose provider reported delivery (``delivered_at`` set).
- **opened** / **clicked**: sent sends with a first open / click reported (``opened_at`` / ``clicked_at``).
- **converted**: sent sends whose contact had the campaign's goal event after ``sent_at`` and within the campaign's
  attribution window (``campaigns.selectors``' rule); campaigns without a goal event convert nothing.
- **unsubscribed**: sent sends whose receipt is ``unsubscribed``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import datetime, timedelta
from itertools import groupby

from django.core.cache import cache
from django.db.models import Count, DateTimeField, Exists, ExpressionWrapper, OuterRef, Q, QuerySet, Value
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from campaigns.models import Campaign, DeliveryStatus, Run, Send
from config.reports import Table, rate

#: How many of a recurring campaign's latest runs its chart shows.
RUNS_ON_CHART = 30
#: A run is *settled* this long after its attribution window closed (late receipts have arrived): its figures are
#: then kept for ``SETTLED_CACHE_SECONDS`` instead of being counted again on every page load.
SETTLED_AFTER = timedelta(days=1)
SETTLED_CACHE_SECONDS = 24 * 3600

SENT = Q(status=Send.Status.SENT)
FIGURES = {
    "sent": Count("id", filter=SENT),
    "delivered": Count("id", filter=SENT & Q(delivered_at__isnull=False)),
    "opened": Count("id", filter=SENT & Q(opened_at__isnull=False)),
    "clicked": Count("id", filter=SENT & Q(clicked_at__isnull=False)),
    "unsubscribed": Count("id", filter=SENT & Q(delivery_status=DeliveryStatus.UNSUBSCRIBED)),
}


def goal_reached(*, goal_event: str, window_hours: int) -> Exists:
    """True for a send whose contact had ``goal_event`` after ``sent_at``, within ``window_hours``."""
    from crm.models import Event

    window = timedelta(hours=window_hours)
    return Exists(
        Event.objects.filter(
            contact_id=OuterRef("contact_id"),
            name=goal_event,
            occurred_at__gt=OuterRef("sent_at"),
            occurred_at__lte=ExpressionWrapper(OuterRef("sent_at") + Value(window), output_field=DateTimeField()),
        )
    )


def conversions_by(sends: QuerySet, *, group: str, campaigns: QuerySet) -> dict:
    """``{group value: converted sends}`` for ``sends`` (already filtered) of ``campaigns``: one grouped query per
    distinct (goal event, attribution window) among the campaigns, usually one or two."""
    result: dict = defaultdict(int)
    rules = (
        campaigns.exclude(goal_event="")
        .order_by("goal_event", "attribution_window_hours")
        .values_list("goal_event", "attribution_window_hours", "id")
    )
    for (goal_event, window_hours), members in groupby(rules, key=lambda r: (r[0], r[1])):
        ids = [member[2] for member in members]
        rows = (
            sends.filter(SENT, campaign_id__in=ids)
            .filter(goal_reached(goal_event=goal_event, window_hours=window_hours))
            .values_list(group)
            .annotate(n=Count("id"))
            .order_by()
        )
        for key, n in rows:
            result[key] += n
    return result


def _with_rates(row: dict) -> dict:
    for name in ("delivered", "opened", "clicked", "converted", "unsubscribed"):
        row[f"{name}_rate"] = rate(row.get(name, 0), row["sent"])
    return row


def campaign_runs(campaign: Campaign, *, limit: int = RUNS_ON_CHART) -> list[dict]:
    """The latest ``limit`` runs of a campaign, oldest first: audience, sent, delivered, opened, clicked, converted,
    unsubscribed and rates per run. Two grouped queries over the runs' sends (three with a goal event); a settled
    run's figures are read from the cache when they were counted in the last ``SETTLED_CACHE_SECONDS``."""
    runs = list(
        Run.objects.filter(campaign=campaign)
        .order_by("-scheduled_for")
        .values("id", "scheduled_for", "status", "audience_count", "finished_at")[:limit]
    )
    runs.reverse()
    now = timezone.now()
    settle = timedelta(hours=campaign.attribution_window_hours) + SETTLED_AFTER
    settled = {
        run["id"]
        for run in runs
        if run["status"] == Run.Status.COMPLETED and run["finished_at"] and run["finished_at"] + settle < now
    }
    goal = hashlib.sha256(f"{campaign.goal_event}/{campaign.attribution_window_hours}".encode()).hexdigest()[:16]
    keys = {run_id: f"loop:report:run-figures:{run_id}:{goal}" for run_id in settled}
    stored = cache.get_many(list(keys.values())) if keys else {}
    figures = {run_id: stored[key] for run_id, key in keys.items() if key in stored}
    ids = [run["id"] for run in runs if run["id"] not in figures]
    if ids:
        sends = Send.objects.filter(run_id__in=ids, is_test=False)
        fresh = {row.pop("run_id"): row for row in sends.values("run_id").annotate(**FIGURES).order_by()}
        converted = conversions_by(sends, group="run_id", campaigns=Campaign.objects.filter(pk=campaign.pk))
        for run_id in ids:
            figures[run_id] = {**dict.fromkeys(FIGURES, 0), **fresh.get(run_id, {}), "converted": converted[run_id]}
        cache.set_many({keys[i]: figures[i] for i in ids if i in keys}, SETTLED_CACHE_SECONDS)
    status_labels = dict(Run.Status.choices)
    result = []
    for run in runs:
        row = {
            "run": timezone.localtime(run["scheduled_for"], campaign.zone).strftime("%Y-%m-%d %H:%M"),
            "scheduled_for": run["scheduled_for"],
            "status": str(status_labels.get(run["status"], run["status"])),
            "audience": run["audience_count"] or 0,
            **figures[run["id"]],
        }
        result.append(_with_rates(row))
    return result


RATE_COLUMNS = [
    ("sent", _("sent")),
    ("delivered", _("delivered")),
    ("delivered_rate", _("delivery rate")),
    ("opened", _("opened")),
    ("opened_rate", _("open rate")),
    ("clicked", _("clicked")),
    ("clicked_rate", _("click rate")),
    ("converted", _("converted")),
    ("converted_rate", _("conversion rate")),
    ("unsubscribed", _("unsubscribed")),
    ("unsubscribed_rate", _("unsubscribe rate")),
]


def campaign_runs_table(campaign: Campaign) -> Table:
    return Table(
        key="runs",
        title=_("Run after run"),
        columns=[("run", _("run")), ("status", _("status")), ("audience", _("audience")), *RATE_COLUMNS],
        rows=campaign_runs(campaign),
        permission="campaigns.view_run",
        note=_(
            "The latest %(n)d runs. Rates are shares of the messages sent; converted: the goal event within the "
            "attribution window after the send."
        )
        % {"n": RUNS_ON_CHART},
    )


def daily_rates(*, since: datetime, until: datetime) -> list[dict]:
    """Per day (workspace time zone) of ``sent_at`` in ``[since, until)``: the figures and their rates, every day
    present (zeros on quiet days). Two grouped queries (plus one per goal rule)."""
    zone = timezone.get_current_timezone()
    sends = Send.objects.filter(sent_at__gte=since, sent_at__lt=until, is_test=False).annotate(
        day=TruncDate("sent_at", tzinfo=zone)
    )
    figures = {row.pop("day"): row for row in sends.values("day").annotate(**FIGURES).order_by()}
    campaigns = Campaign.objects.filter(id__in=sends.values("campaign_id"))
    converted = conversions_by(sends, group="day", campaigns=campaigns)
    first, last = timezone.localtime(since, zone).date(), timezone.localtime(until - timedelta(microseconds=1), zone)
    days = [first + timedelta(days=n) for n in range((last.date() - first).days + 1)]
    return [
        _with_rates({"day": day, **dict.fromkeys(FIGURES, 0), **figures.get(day, {}), "converted": converted[day]})
        for day in days
    ]


def totals(rows: list[dict]) -> dict:
    """The sum of daily rows, with the rates over the whole period."""
    total = {name: sum(row[name] for row in rows) for name in (*FIGURES, "converted")}
    return _with_rates(total)


def runs_between(*, since: datetime, until: datetime) -> list[dict]:
    """Runs started (or due) in ``[since, until)``, newest first, with their sent and skipped counts."""
    runs = (
        Run.objects.filter(scheduled_for__gte=since, scheduled_for__lt=until)
        .select_related("campaign")
        .annotate(
            sent=Count("sends", filter=Q(sends__status=Send.Status.SENT, sends__is_test=False)),
            skipped=Count("sends", filter=Q(sends__status=Send.Status.SKIPPED, sends__is_test=False)),
        )
        .order_by("-scheduled_for")[:100]
    )
    return [
        {
            "campaign": run.campaign.name,
            "campaign_id": run.campaign_id,
            "run_id": run.pk,
            "scheduled_for": run.scheduled_for,
            "status": run.get_status_display(),
            "audience": run.audience_count or 0,
            "sent": run.sent,
            "skipped": run.skipped,
        }
        for run in runs
    ]


def next_runs(*, now: datetime, limit: int = 20) -> list[dict]:
    """Broadcasts scheduled to run (one-time and recurring, scheduled or running), soonest first."""
    from campaigns.services.schedules import ACTIVE_STATUSES, next_run_at

    campaigns = Campaign.objects.filter(
        kind=Campaign.Kind.BROADCAST,
        status__in=ACTIVE_STATUSES,
        schedule__in=[Campaign.Schedule.ONCE, Campaign.Schedule.RECURRING],
    ).select_related("segment")[:500]
    upcoming = []
    for campaign in campaigns:  # a loop over scheduled campaigns (a handful), not over sends
        moment = next_run_at(campaign, now=now)
        if moment is not None:
            upcoming.append(
                {
                    "campaign": campaign.name,
                    "campaign_id": campaign.pk,
                    "next_run_at": moment,
                    "schedule": campaign.get_schedule_display(),
                    "channel": campaign.get_channel_display(),
                    "audience": campaign.segment.name if campaign.segment else "",
                }
            )
    upcoming.sort(key=lambda row: row["next_run_at"])
    return upcoming[:limit]


def campaign_runs_chart(rows: list[dict]) -> dict:
    """Chart.js data: per run, messages sent (bars, left axis), clicked and converted (lines, right axis)."""
    return {
        "type": "bar",
        "labels": [row["run"] for row in rows],
        "datasets": [
            {"type": "bar", "label": str(_("sent")), "data": [row["sent"] for row in rows], "yAxisID": "y"},
            {"type": "line", "label": str(_("clicked")), "data": [row["clicked"] for row in rows], "yAxisID": "y1"},
            {"type": "line", "label": str(_("converted")), "data": [row["converted"] for row in rows], "yAxisID": "y1"},
        ],
        "axes": {"y": str(_("sent")), "y1": str(_("clicked / converted"))},
    }


def campaign_runs_context(request, campaign: Campaign) -> dict:
    """A recurring campaign's runs for its page (cached briefly): the table, its chart and the CSV tables."""
    from django.utils import translation

    from config.reports import cached, visible

    table = cached(f"campaign-runs:{campaign.pk}:{translation.get_language()}", lambda: campaign_runs_table(campaign))
    tables = visible(request, [table])
    return {
        "tables": [table],
        "table": tables[0] if tables else None,
        "chart": campaign_runs_chart(table.rows) if tables and table.rows else None,
    }
