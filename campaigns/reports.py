"""Campaign figures for the dashboard and a recurring campaign's page: runs side by side, daily rates, what ran
today and what runs next. Reads only; every figure is one grouped query over a bounded time window or a bounded
list of runs (no Python loop over sends).

The figures and their definitions are ``campaigns.selectors``' (the same everywhere they are shown): **sent**,
**skipped**, **failed** by status (test sends never count); **delivered**, **opened**, **clicked**,
**unsubscribed** among the sent; **converted**: sent sends with an attributed conversion (the goal event within the
attribution window, last touch, one conversion per event: ``campaigns.services.attribution``) and **revenue** the
sum of those conversions'. Rates are shares of sent. A settled run's figures are read from ``Run.figures``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from campaigns.models import Campaign, Conversion, Run, Send
from campaigns.selectors import SEND_FIGURES, figures_of_runs, run_totals
from config.reports import Table, rate

#: The figures per day of sending (sends that were not sent have no day).
DAILY_FIGURES = {name: SEND_FIGURES[name] for name in ("sent", "delivered", "opened", "clicked", "unsubscribed")}
#: How many of a recurring campaign's latest runs its chart shows.
RUNS_ON_CHART = 30


def _with_rates(row: dict) -> dict:
    for name in ("delivered", "opened", "clicked", "converted", "unsubscribed"):
        row[f"{name}_rate"] = rate(row.get(name, 0), row["sent"])
    return row


def campaign_runs(campaign: Campaign, *, limit: int = RUNS_ON_CHART, now: datetime | None = None) -> list[dict]:
    """The latest ``limit`` runs of a campaign, oldest first: audience, sent, skipped, failed, delivered, opened,
    clicked, converted, revenue, unsubscribed and rates per run. Settled runs' figures are read from the run; the
    open runs' are counted in three grouped queries (sends, conversions, variant names)."""
    now = now or timezone.now()
    fields = ("scheduled_for", "status", "audience_count", "started_at", "finished_at", "figures", "figures_at")
    runs = list(Run.objects.filter(campaign=campaign).order_by("-scheduled_for").only(*fields)[:limit])
    runs.reverse()
    figures = figures_of_runs(runs, window_hours=campaign.attribution_window_hours, now=now)
    result = []
    for run in runs:
        row = {
            "run": timezone.localtime(run.scheduled_for, campaign.zone).strftime("%Y-%m-%d %H:%M"),
            "scheduled_for": run.scheduled_for,
            "status": run.get_status_display(),
            **run_totals(figures[run.pk]),
            "audience": run.audience_count or 0,
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
    ("revenue", _("revenue")),
    ("unsubscribed", _("unsubscribed")),
    ("unsubscribed_rate", _("unsubscribe rate")),
]


def campaign_runs_table(campaign: Campaign) -> Table:
    return Table(
        key="runs",
        title=_("Run after run"),
        columns=[
            ("run", _("run")),
            ("status", _("status")),
            ("audience", _("audience")),
            ("skipped", _("skipped")),
            ("failed", _("failed")),
            *RATE_COLUMNS,
        ],
        rows=campaign_runs(campaign),
        permission="campaigns.view_run",
        note=_(
            "The latest %(n)d runs. Rates are shares of the messages sent; converted: sends to which a goal event "
            "was attributed (within the attribution window, last touch); revenue: those events' revenue."
        )
        % {"n": RUNS_ON_CHART},
    )


def daily_rates(*, since: datetime, until: datetime) -> list[dict]:
    """Per day (workspace time zone) of ``sent_at`` in ``[since, until)``: the figures and their rates, every day
    present (zeros on quiet days). Two grouped queries: the sends, and the conversions by their send's day."""
    zone = timezone.get_current_timezone()
    sends = Send.objects.filter(sent_at__gte=since, sent_at__lt=until, is_test=False).annotate(
        day=TruncDate("sent_at", tzinfo=zone)
    )
    figures = {row.pop("day"): row for row in sends.values("day").annotate(**DAILY_FIGURES).order_by()}
    conversions = (
        Conversion.objects.filter(
            is_holdout=False, send__sent_at__gte=since, send__sent_at__lt=until, send__is_test=False
        )
        .annotate(day=TruncDate("send__sent_at", tzinfo=zone))
        .values_list("day")
        .annotate(converted=Count("send_id", distinct=True), revenue=Sum("revenue"))
        .order_by()
    )
    converted = {day: (n, revenue or Decimal(0)) for day, n, revenue in conversions}
    first, last = timezone.localtime(since, zone).date(), timezone.localtime(until - timedelta(microseconds=1), zone)
    days = [first + timedelta(days=n) for n in range((last.date() - first).days + 1)]
    rows = []
    for day in days:
        n, revenue = converted.get(day, (0, Decimal(0)))
        rows.append(
            _with_rates(
                {
                    "day": day,
                    **dict.fromkeys(DAILY_FIGURES, 0),
                    **figures.get(day, {}),
                    "converted": n,
                    "revenue": revenue,
                }
            )
        )
    return rows


def totals(rows: list[dict]) -> dict:
    """The sum of daily rows, with the rates over the whole period."""
    total = {name: sum(row[name] for row in rows) for name in (*DAILY_FIGURES, "converted", "revenue")}
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
