"""Admin page benchmark (issue #11): every registered ModelAdmin's pages on the 1M contacts / 10M events database.

    .venv/bin/python bench/admin_pages.py [--database-url URL] [--runs 3] [--budget-ms 300] [--only crm.event]
                                          [--explain-slow]

Uses the database that ``bench/segments.py`` generated (default ``postgres://postgres@127.0.0.1:5432/loop_segbench``)
and does not change its data: it only migrates it (``manage.py migrate`` beforehand, or ``--migrate``) and creates
one superuser, ``bench-admin``, if missing. For each model in ``admin.site._registry`` it loads, logged in with
Django's test client, after one warm-up:

- the changelist;
- the changelist with a search (``?q=``, a term that misses: the worst case, every candidate row is looked at),
  when the admin has search fields;
- the changelist with its first filter choice (the first link of the filter sidebar that is not "All");
- the change page of the newest row (highest primary key), when the table has one.

It prints one line per page: the median of ``--runs`` loads in milliseconds, the number of SQL queries and their
time, and ``SLOW`` when the median exceeds the budget (300 ms). ``--explain-slow`` prints the slowest query of each
slow page. Exit status 1 when a page is slow. Wrap in ``flock /tmp/loop-bench.lock`` on a shared machine. Results
are in docs/performance.md ("Admin pages (issue #11)").
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/loop_segbench"
#: A search term no row contains: the search scans what its lookups allow, then finds nothing.
MISSING_TERM = "zz-no-such-contact-zz"
FILTER_LINK = re.compile(r'href="(\?[^"]+)"')


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def first_filter_query(html: str) -> str | None:
    """The first choice of the filter sidebar that narrows the list (not "All")."""
    start = html.find('id="changelist-filter"')
    if start < 0:
        return None
    end = html.find("</nav>", start)
    for link in FILTER_LINK.findall(html[start : end if end > 0 else None]):
        query = link.replace("&amp;", "&")
        if query != "?" and "_facets" not in query:
            return query
    return None


def measure(client, url: str, runs: int) -> tuple[float, int, float, list[tuple[float, str]], int]:
    """Median milliseconds of ``runs`` loads after a warm-up, queries of the last load, their total ms, the
    queries themselves (ms, SQL), status."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)
    status = response.status_code
    times = []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(url)
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
            else:
                _ = response.content
            times.append((time.perf_counter() - start) * 1000)
        status = response.status_code
    queries = [(float(q["time"]) * 1000, q["sql"]) for q in captured.captured_queries]
    return statistics.median(times), len(queries), sum(ms for ms, _ in queries), queries, status


def pages(model_admin, client) -> list[tuple[str, str]]:
    from django.urls import reverse

    opts = model_admin.model._meta
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    found = [("list", changelist)]
    if model_admin.search_fields:
        found.append(("search", f"{changelist}?q={MISSING_TERM}"))
    if model_admin.list_filter:
        html = client.get(changelist).content.decode()
        query = first_filter_query(html)
        if query:
            found.append(("filter", f"{changelist}{query}"))
    pk = model_admin.model._default_manager.order_by("-pk").values_list("pk", flat=True).first()
    if pk is not None:
        found.append(("change", reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--budget-ms", type=float, default=300.0)
    parser.add_argument("--only", action="append", default=[], help="app_label.model_name (repeatable)")
    parser.add_argument("--migrate", action="store_true", help="apply migrations first")
    parser.add_argument("--explain-slow", action="store_true", help="print the slowest query of each slow page")
    args = parser.parse_args()

    django_setup(args.database_url)
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    if args.migrate:
        call_command("migrate", verbosity=0)
    setup_test_environment()  # the test client's host is allowed; templates are instrumented as in tests
    user = get_user_model().objects.filter(username="bench-admin").first()
    if user is None:
        user = get_user_model().objects.create_superuser("bench-admin", "bench@example.com", None)
    client = Client()
    client.force_login(user)
    client.cookies["django_language"] = "ko"

    from crm.models import Contact, Event

    print(f"contacts {Contact.objects.count():,}, events {Event.objects.count():,}; median of {args.runs} loads")
    print(f"{'model':40} {'page':7} {'ms':>8} {'queries':>7} {'sql ms':>8}")
    slow = []
    registry = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label_lower)
    for model, model_admin in registry:
        label = model._meta.label_lower
        if args.only and label not in args.only:
            continue
        for kind, url in pages(model_admin, client):
            ms, count, sql_ms, queries, status = measure(client, url, args.runs)
            flag = "SLOW" if ms > args.budget_ms else ""
            if status != 200:
                flag = f"{flag} HTTP {status}".strip()
            print(f"{label:40} {kind:7} {ms:8.1f} {count:7d} {sql_ms:8.1f} {flag}", flush=True)
            if ms > args.budget_ms:
                slow.append((label, kind, url, queries))
    if slow:
        print(f"\n{len(slow)} page(s) over {args.budget_ms:.0f} ms:")
        for label, kind, url, queries in slow:
            print(f"- {label} {kind}: {url}")
            if args.explain_slow and queries:
                ms, sql = max(queries)
                print(f"    slowest query {ms:.1f} ms: {sql[:600]}")
    else:
        print(f"\nevery page under {args.budget_ms:.0f} ms")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
