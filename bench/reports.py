"""Benchmark of the reports (issue #10) on PostgreSQL: one recurring campaign with 1,000,000 sends.

    export LOOP_VAR_DIR=/tmp/var-reports DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop_reports_bench
    .venv/bin/python manage.py migrate && flock /tmp/loop-bench.lock .venv/bin/python bench/reports.py

Loads (once; ``--reload`` starts over) 100,000 contacts and a weekly-style recurring campaign with 10 runs of
100,000 sends each over the last 30 days, by COPY: 95 % delivered, 20 % opened, 5 % clicked, 0.2 % unsubscribed,
and an "Order Completed" event for 3 % of the sends within the attribution window (plus as many outside it); the
attribution pass (``conversions_attribute``) turns them into conversions. Then times, cold
(``LOOP_REPORT_CACHE_SECONDS=0``, best of ``--repeat``) and with the cache:

- the campaign report: the recurring campaign's runs (``campaigns.reports.campaign_runs``, the runs chart) with no
  figures stored (all 1M sends counted), storing the settled runs' figures (``runs_store_figures``), and with them
  stored (the open runs counted); the per-run report of its largest run (``campaigns.admin.run_report_context``);
- the dashboard: ``config.dashboard.dashboard_figures`` (runs today, next runs, 30 daily rows, seed metrics);

and checks the counts against what was loaded.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")

CONTACTS = 100_000
RUNS = 10
CAMPAIGN = "bench-reports 주말 프로모션"


def load(*, contacts: int, runs: int) -> None:
    import json

    from django.db import connection
    from django.utils import timezone

    from campaigns.models import Campaign, Run, Variant
    from crm.models import Contact, Segment, Source

    rng = random.Random(10)
    now = timezone.now()
    with connection.cursor() as django_cursor:
        django_cursor.execute(
            "TRUNCATE crm_contact, crm_event, campaigns_send, campaigns_run, campaigns_campaign"
            " RESTART IDENTITY CASCADE"
        )
        cursor = django_cursor.cursor
        columns = "id, external_id, email, phone, name, locale, time_zone, attributes, order_count, total_revenue"
        with cursor.copy(f"COPY crm_contact ({columns}, created_at, updated_at) FROM STDIN") as copy:
            for n in range(1, contacts + 1):
                orders = rng.choice((0, 0, 1, 1, 2, 3))
                copy.write_row(
                    [n, f"bench-{n}", f"bench{n}@example.com", "", f"고객{n}", "", "", "{}", orders, 0, now, now]
                )
        cursor.execute("SELECT setval(pg_get_serial_sequence('crm_contact', 'id'), %s)", [contacts])
        cursor.execute(
            "UPDATE crm_contact SET last_order_at = now() - (id % 400) * interval '1 day', "
            "first_order_at = now() - interval '500 days' WHERE order_count > 0"
        )
    segment, _ = Segment.objects.get_or_create(
        name="bench-everyone",
        defaults={"rules": {"version": 1, "root": {"type": "group", "op": "and", "children": []}}},
    )
    campaign = Campaign.objects.create(
        name=CAMPAIGN,
        channel="email",
        segment=segment,
        schedule=Campaign.Schedule.RECURRING,
        status=Campaign.Status.SCHEDULED,
        goal_event="Order Completed",
        attribution_window_hours=72,
    )
    variants = [Variant.objects.create(campaign=campaign, name=name, body="주말 한정 할인!") for name in "AB"]
    source, _ = Source.objects.get_or_create(name="bench-shop")
    run_ids = []
    for index in range(runs):
        at = now - timedelta(days=3 * (runs - 1 - index), hours=2)
        run = Run.objects.create(
            campaign=campaign,
            scheduled_for=at,
            status=Run.Status.COMPLETED,
            started_at=at,
            finished_at=at,
            audience_count=contacts,
        )
        run_ids.append((run.pk, at))
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        columns = (
            "campaign_id, run_id, contact_id, variant_id, is_holdout, is_test, channel, advertising, counts_toward_cap,"
            " status, skip_reason, due_at, claim, attempts, context, address, backend, content, provider_message_id,"
            " error, created_at, sent_at, finished_at, delivery_status, delivery_detail, delivered_at, opened_at,"
            " clicked_at"
        )
        events = 0
        orders = []
        with cursor.copy(f"COPY campaigns_send ({columns}) FROM STDIN") as copy:
            for run_id, at in run_ids:
                for contact_id in range(1, contacts + 1):
                    roll = rng.random()
                    sent_at = at + timedelta(seconds=contact_id % 600)
                    skipped = roll < 0.02
                    delivered = None if skipped or roll > 0.97 else sent_at + timedelta(seconds=5)
                    opened = sent_at + timedelta(minutes=30) if not skipped and roll < 0.22 else None
                    clicked = sent_at + timedelta(minutes=35) if not skipped and roll < 0.07 else None
                    receipt = (
                        "unsubscribed" if not skipped and 0.5 < roll < 0.502 else ("delivered" if delivered else "")
                    )
                    copy.write_row(
                        [
                            campaign.pk,
                            run_id,
                            contact_id,
                            variants[contact_id % 2].pk,
                            False,
                            False,
                            "email",
                            False,
                            True,
                            "skipped" if skipped else "sent",
                            "no_consent" if skipped else "",
                            at,
                            "",
                            1,
                            "{}",
                            f"bench{contact_id}@example.com",
                            "outbox",
                            json.dumps({"subject": "주말 한정 할인!"}),
                            "",
                            "",
                            at,
                            None if skipped else sent_at,
                            sent_at,
                            receipt,
                            "",
                            delivered,
                            opened,
                            clicked,
                        ]
                    )
                    if not skipped and rng.random() < 0.03:
                        orders.append((contact_id, sent_at + timedelta(hours=rng.randint(1, 70))))
                    if rng.random() < 0.03:
                        orders.append((contact_id, sent_at + timedelta(hours=rng.randint(80, 200))))
        with cursor.copy(
            "COPY crm_event (contact_id, source_id, message_id, type, name, properties, context, occurred_at,"
            " received_at) FROM STDIN"
        ) as event_copy:
            for contact_id, occurred in orders:
                if occurred > now:
                    continue
                events += 1
                event_copy.write_row(
                    [
                        contact_id,
                        source.pk,
                        f"order-{events}",
                        "track",
                        "Order Completed",
                        "{}",
                        "{}",
                        occurred,
                        occurred,
                    ]
                )
        for table in ("crm_contact", "crm_event", "campaigns_send", "campaigns_run"):
            cursor.execute(f"ANALYZE {table}")
    print(f"loaded {contacts:,} contacts, {runs} runs, {runs * contacts:,} sends, {events:,} order events")
    assert Contact.objects.count() == contacts


def best_of(label: str, repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    print(f"{label:<48} best {min(times):8.1f} ms   median {statistics.median(times):8.1f} ms")
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=CONTACTS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reload", action="store_true")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from campaigns.admin import run_report_context
    from campaigns.models import Campaign, Send
    from campaigns.reports import campaign_runs
    from config.dashboard import dashboard_figures

    assert connection.vendor == "postgresql", "the reports benchmark runs on PostgreSQL (DATABASE_URL)"
    if args.reload or not Campaign.objects.filter(name=CAMPAIGN).exists():
        started = time.perf_counter()
        load(contacts=args.contacts, runs=args.runs)
        print(f"load: {time.perf_counter() - started:.1f} s")
    campaign = Campaign.objects.get(name=CAMPAIGN)
    total = Send.objects.filter(campaign=campaign).count()
    print(f"campaign {campaign.pk}: {total:,} sends")

    from campaigns.models import Conversion, Run
    from campaigns.services.attribution import conversions_attribute
    from campaigns.services.run_figures import runs_store_figures

    if not Conversion.objects.filter(campaign=campaign).exists():
        started = time.perf_counter()
        added = conversions_attribute()
        print(f"attribution pass: {added:,} conversions in {time.perf_counter() - started:.1f} s")
    settings.LOOP_REPORT_CACHE_SECONDS = 0
    Run.objects.filter(campaign=campaign).update(figures={}, figures_at=None)
    rows = campaign_runs(campaign)
    assert sum(row["sent"] for row in rows) == Send.objects.filter(campaign=campaign, status="sent").count()
    converted_sends = Conversion.objects.filter(campaign=campaign).values("send_id").distinct().count()
    assert sum(row["converted"] for row in rows) == converted_sends
    largest = campaign.runs.order_by("-scheduled_for").first()

    best_of("campaign report: runs chart, nothing stored (1M sends)", args.repeat, lambda: campaign_runs(campaign))
    started = time.perf_counter()
    stored = runs_store_figures()
    print(f"storing the settled runs' figures: {stored} runs in {(time.perf_counter() - started) * 1000:.0f} ms")
    assert campaign_runs(campaign) == rows
    open_sends = Send.objects.filter(campaign=campaign, run__figures_at__isnull=True).count()
    best_of(
        f"campaign report: runs chart, settled stored ({open_sends:,} open)",
        args.repeat,
        lambda: campaign_runs(campaign),
    )
    best_of("campaign report: one run's report (100k sends)", args.repeat, lambda: run_report_context(largest))
    now = timezone.now()
    figures = dashboard_figures(now=now)
    assert sum(row["sent"] for row in figures["daily"]) == sum(row["sent"] for row in rows)
    best_of("dashboard: all figures (cold)", args.repeat, lambda: dashboard_figures(now=now))
    from campaigns.reports import daily_rates, next_runs
    from journeys.reports import seed_metrics

    today = now - timedelta(days=29)
    best_of("dashboard: daily rates, 30 days", args.repeat, lambda: daily_rates(since=today, until=now))
    best_of("dashboard: seed metrics", args.repeat, lambda: seed_metrics(now=now))
    best_of("dashboard: next runs", args.repeat, lambda: next_runs(now=now))
    settings.LOOP_REPORT_CACHE_SECONDS = 60
    from config.reports import cached

    cached("bench", lambda: dashboard_figures(now=now))
    best_of("dashboard: all figures (cached)", args.repeat, lambda: cached("bench", lambda: dashboard_figures(now=now)))
    for row in rows:
        print(
            f"  run {row['run']}: sent {row['sent']:,} delivered {row['delivered_rate']:.1%} opened "
            f"{row['opened_rate']:.1%} clicked {row['clicked_rate']:.1%} converted {row['converted_rate']:.2%}"
        )


if __name__ == "__main__":
    main()
