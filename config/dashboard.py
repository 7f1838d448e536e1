"""The home dashboard on the admin index: what ran today, what runs next, key rates over the last 30 days with a
daily chart, and the seeds' metrics with their definitions. Every table downloads as CSV (``?format=csv&table=KEY``)
for whoever may view it. Figures are cached for ``LOOP_REPORT_CACHE_SECONDS``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from campaigns import reports as campaign_reports
from config.reports import Table, cached, visible
from journeys import reports as journey_reports

#: The period of the key rates and the seed metrics (days).
DASHBOARD_DAYS = 30


def start_of_day(now: datetime) -> datetime:
    local = timezone.localtime(now)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def dashboard_figures(*, now: datetime) -> dict[str, Any]:
    today = start_of_day(now)
    since = today - timedelta(days=DASHBOARD_DAYS - 1)
    until = today + timedelta(days=1)
    daily = campaign_reports.daily_rates(since=since, until=until)
    return {
        "runs_today": campaign_reports.runs_between(since=today, until=until),
        "journey_sends_today": journey_reports.journey_sends_between(since=today, until=until),
        "next_runs": campaign_reports.next_runs(now=now),
        "daily": daily,
        "totals": campaign_reports.totals(daily),
        "seeds": journey_reports.seed_metrics(now=now, days=DASHBOARD_DAYS),
    }


def dashboard_tables(figures: dict[str, Any]) -> list[Table]:
    return [
        Table(
            key="runs_today",
            title=_("Campaign runs today"),
            columns=[
                ("campaign", _("campaign")),
                ("scheduled_for", _("scheduled for")),
                ("status", _("status")),
                ("audience", _("audience")),
                ("sent", _("sent")),
                ("skipped", _("skipped")),
            ],
            rows=figures["runs_today"],
            permission="campaigns.view_run",
        ),
        Table(
            key="journey_sends_today",
            title=_("Journey messages today"),
            columns=[("journey", _("journey")), ("step", _("step")), ("messages", _("messages")), ("sent", _("sent"))],
            rows=figures["journey_sends_today"],
            permission="journeys.view_enrollment",
        ),
        Table(
            key="next_runs",
            title=_("Scheduled next"),
            columns=[
                ("campaign", _("campaign")),
                ("next_run_at", _("next run")),
                ("schedule", _("schedule")),
                ("channel", _("channel")),
                ("audience", _("audience")),
            ],
            rows=figures["next_runs"],
            permission="campaigns.view_campaign",
        ),
        Table(
            key="daily",
            title=_("Key rates, last 30 days"),
            columns=[("day", _("day")), *campaign_reports.RATE_COLUMNS],
            rows=figures["daily"],
            permission="campaigns.view_send",
            note=_(
                "Per day the messages were sent; rates are shares of the messages sent that day (test sends never "
                "count). Converted: sends to which a goal event was attributed (within the campaign's attribution "
                "window, last touch); revenue: those events' revenue."
            ),
        ),
        Table(
            key="seed_metrics",
            title=_("Seed metrics"),
            columns=[
                ("name", _("metric")),
                ("rate", _("rate")),
                ("part", _("count")),
                ("base", _("out of")),
                ("definition", _("definition")),
            ],
            rows=figures["seeds"],
            permission="crm.view_contact",
        ),
    ]


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    key = f"dashboard:{translation.get_language()}:{timezone.localdate(now):%Y%m%d}"
    figures = cached(key, lambda: dashboard_figures(now=now))
    tables = dashboard_tables(figures)
    return {"figures": figures, "tables": tables}


def dashboard_view_context(request: HttpRequest, context: dict[str, Any]) -> dict[str, Any] | None:
    """What the index template shows to this user: the tables they may view, the chart and the seed metrics."""
    tables = visible(request, context["tables"])
    if not tables:
        return None
    keys = {table.key for table in tables}
    figures = context["figures"]
    return {
        "figures": figures,
        "tables": tables,
        "seeds": figures["seeds"] if "seed_metrics" in keys else [],
        "daily_chart": daily_chart(figures["daily"]) if "daily" in keys else None,
    }


def daily_chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Chart.js data: messages sent per day (bars, left axis) and the rates (lines, right axis, percent)."""

    def percent(value: float | None) -> float | None:
        return None if value is None else round(value * 100, 2)

    return {
        "type": "bar",
        "labels": [row["day"].strftime("%m-%d") for row in rows],
        "datasets": [
            {"type": "bar", "label": str(_("sent")), "data": [row["sent"] for row in rows], "yAxisID": "y"},
            *(
                {
                    "type": "line",
                    "label": str(label),
                    "data": [percent(row[f"{name}_rate"]) for row in rows],
                    "yAxisID": "y1",
                }
                for name, label in RATE_SERIES
            ),
        ],
        "axes": {"y": str(_("messages")), "y1": str(_("rate (%)"))},
    }


RATE_SERIES = [
    ("delivered", _("delivery rate")),
    ("opened", _("open rate")),
    ("clicked", _("click rate")),
    ("converted", _("conversion rate")),
    ("unsubscribed", _("unsubscribe rate")),
]
