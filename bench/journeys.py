"""Benchmark of the journeys engine (issue #9): advance 100,000 due enrollments through a branch and a wait.

    export LOOP_VAR_DIR=/tmp/var-journeys DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop_journeys_bench
    .venv/bin/python manage.py migrate && flock /tmp/loop-bench.lock .venv/bin/python bench/journeys.py

Creates the contacts once, then a journey "branch on trigger data → wait 1 hour (yes) / wait 2 hours (no)" and
``--enrollments`` enrollments already due at the branch (as after a finished wait), half of them with a trigger value
over the branch's threshold. Then runs ``journeys_tick`` in this process the way one worker would: claim batches of
``JOURNEY_BATCH_SIZE`` (``FOR UPDATE SKIP LOCKED``), evaluate the branch for each batch, compute the waits, write the
positions in one bulk UPDATE and the log in one INSERT. Prints enrollments/s and peak RSS, and verifies in SQL that
every enrollment waits at the right step with the right due time and has exactly two log lines.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--enrollments", type=int, default=100_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.db.models import Count
    from django.utils import timezone

    from crm.models import Contact
    from journeys.models import Enrollment, EnrollmentLog, Journey, Step
    from journeys.services.engine import journeys_tick

    n = args.enrollments
    have = Contact.objects.count()
    if have < n:
        Contact.objects.bulk_create(
            [Contact(external_id=f"jbench-{i}", name=f"고객{i}") for i in range(have, n)], batch_size=5000
        )
    contact_ids = list(Contact.objects.order_by("id").values_list("id", flat=True)[:n])

    Journey.objects.filter(name="bench-journey").delete()
    journey = Journey.objects.create(name="bench-journey", trigger=Journey.Trigger.API, status=Journey.Status.ACTIVE)
    branch = Step.objects.create(
        journey=journey,
        position=1,
        name="big cart?",
        kind=Step.Kind.BRANCH,
        condition=Step.Condition.DATA,
        condition_rules=[{"property": "event.value", "op": "gte", "value": 30000}],
    )
    short = Step.objects.create(journey=journey, position=2, name="wait 1h", kind="wait_duration", wait_minutes=60)
    long = Step.objects.create(journey=journey, position=3, name="wait 2h", kind="wait_duration", wait_minutes=120)
    branch.next_step, branch.no_step = short, long
    branch.save()
    short.next_step = None
    short.save()

    now = timezone.now()
    due = now - timedelta(seconds=5)
    started = time.perf_counter()
    Enrollment.objects.bulk_create(
        [
            Enrollment(
                journey=journey,
                contact_id=cid,
                current_step=branch,
                status=Enrollment.Status.WAITING,
                next_run_at=due,
                context={"value": 50000 if i % 2 else 10000, "product_name": "니트"},
                entry_key=f"c:{cid}",
                entered_at=due,
                triggered_at=due,
            )
            for i, cid in enumerate(contact_ids)
        ],
        batch_size=5000,
    )
    print(f"setup: {n} due enrollments in {time.perf_counter() - started:.1f} s ({connection.vendor})")

    started = time.perf_counter()
    result = journeys_tick(now=now, max_batches=10_000)
    elapsed = time.perf_counter() - started
    print(f"advanced {result.claimed} enrollments in {result.batches} batches, {elapsed:.1f} s")
    print(f"{result.claimed / elapsed:,.0f} enrollments/s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")

    rows = journey.enrollments.values("status", "current_step_id", "next_run_at").annotate(n=Count("id"))
    summary = {(r["status"], r["current_step_id"], r["next_run_at"]): r["n"] for r in rows}
    # Yes: waits 1 h at "wait 1h", then its path ends (the next position starts path B) → current step None.
    # No: waits 2 h at "wait 2h", then the end → current step None.
    assert summary == {
        ("waiting", None, due + timedelta(minutes=60)): (n + 1) // 2,
        ("waiting", None, due + timedelta(minutes=120)): n // 2,
    }, summary
    logs = EnrollmentLog.objects.filter(enrollment__journey=journey).count()
    assert logs == 2 * n, logs
    print("verified: every enrollment waits at the right step with the right due time, two log lines each")


if __name__ == "__main__":
    main()
