"""Benchmark of the rule builder's live preview (issue #6): validate, count and sample, as ``preview.json`` does.

    export LOOP_VAR_DIR=/tmp/var-segbuilder DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop_segbuilder_bench
    .venv/bin/python manage.py migrate && .venv/bin/python bench/segment_preview.py [--contacts 200000]

Creates the contacts once (a third in 서울, the rest in other cities) with 5 events each over the last 60 days (one in
200 contacts also has a rare event), runs ``VACUUM ANALYZE``, then times ``segment_rules_preview`` for a few rule
documents a marketer builds: every contact, the builder guide's "city = 서울 AND viewed a page within 7 days", the
same with a rare event (few members: the newest-10 sample cannot stop early), and an OR of two conditions. Prints
the median and worst of 5 runs and the member count of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")

RUNS = 5
CITIES = ["서울", "부산", "대구"]
EVENTS = ["Viewed Page", "Product Viewed", "Product Added", "Order Completed", "Signed In"]


def rules(*children, op="and") -> dict:
    return {"version": 1, "root": {"type": "group", "op": op, "children": list(children)}}


SEOUL = {"type": "attribute", "key": "city", "value_type": "text", "op": "eq", "value": "서울"}
VIEWED_7 = {"type": "event", "op": "did", "name": "Viewed Page", "when": {"op": "within_last", "value": 7}}
RARE = {"type": "event", "op": "did", "name": "Rare Event"}
CASES = {
    "every contact": rules(),
    "city = 서울 AND Viewed Page within 7 days": rules(SEOUL, VIEWED_7),
    "city = 서울 AND a rare event": rules(SEOUL, RARE),
    "Order Completed 2+ times OR Viewed Page within 7 days": rules(
        {"type": "event", "op": "did", "name": "Order Completed", "count": {"op": "at_least", "value": 2}},
        VIEWED_7,
        op="or",
    ),
}


def populate(total: int) -> None:
    from django.db import connection

    from crm.models import Contact, Source

    have = Contact.objects.count()
    if have >= total:
        return
    source, _ = Source.objects.get_or_create(name="bench")
    Contact.objects.bulk_create(
        [
            Contact(
                external_id=f"bench-{i}",
                name=f"고객{i}",
                email=f"bench{i}@example.com",
                attributes={"city": CITIES[i % 3]},
            )
            for i in range(have, total)
        ],
        batch_size=5000,
    )
    names = "ARRAY[" + ", ".join(f"'{name}'" for name in EVENTS) + "]"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO crm_event (contact_id, source_id, message_id, type, name, properties, context, occurred_at,
                                   received_at)
            SELECT c.id, %s, 'bench-' || c.id || '-' || n, 'track', ({names})[1 + (c.id + n) %% 5], '{{}}', '{{}}',
                   now() - ((c.id * 7 + n * 13) %% 1440) * interval '1 hour',
                   now() - ((c.id * 7 + n * 13) %% 1440) * interval '1 hour'
            FROM crm_contact c CROSS JOIN generate_series(1, 5) AS n
            WHERE c.external_id LIKE 'bench-%%'
              AND NOT EXISTS (SELECT 1 FROM crm_event e WHERE e.contact_id = c.id)
            """,
            [source.pk],
        )
        cursor.execute(
            """
            INSERT INTO crm_event (contact_id, source_id, message_id, type, name, properties, context, occurred_at,
                                   received_at)
            SELECT c.id, %s, 'bench-rare-' || c.id, 'track', 'Rare Event', '{}', '{}', now(), now()
            FROM crm_contact c WHERE c.id %% 200 = 0 ON CONFLICT DO NOTHING
            """,
            [source.pk],
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=200_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection

    from crm.models import Event
    from crm.selectors import segment_rules_preview

    if connection.vendor != "postgresql":
        raise SystemExit("Run this benchmark on PostgreSQL (DATABASE_URL=postgres://...).")
    started = time.perf_counter()
    populate(args.contacts)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE crm_contact")
        cursor.execute("VACUUM ANALYZE crm_event")
    print(f"data: {args.contacts:,} contacts, {Event.objects.count():,} events ({time.perf_counter() - started:.1f} s)")
    for title, document in CASES.items():
        timings = []
        for _run in range(RUNS):
            began = time.perf_counter()
            preview = segment_rules_preview(rules=document)
            timings.append((time.perf_counter() - began) * 1000)
        print(
            f"{title}: {preview.count:,} members, sample {len(preview.sample)}; "
            f"median {statistics.median(timings):.0f} ms, worst {max(timings):.0f} ms"
        )


if __name__ == "__main__":
    main()
