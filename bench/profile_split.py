"""Split py-spy samples of the server (and of the Celery worker) into the steps of ingest (docs/performance.md).

    .venv/bin/python bench/profile_split.py /tmp/prof/batch.collapsed /tmp/prof/batch-worker.collapsed ...

Input: ``py-spy record --format raw --idle`` output (what ``bench/ingest.py --profile DIR`` writes). Each sample is a
thread's stack at one instant, so over a request-handling thread the shares are shares of wall time. Samples of
threads that wait for a request (idle gunicorn threads, the arbiter) are counted apart and left out of the split.

Each sample is put under the deepest step it is in (the ``STEPS`` markers, matched root to leaf), and split by what
its innermost frame was doing: waiting for PostgreSQL (the query running, or waiting for a row lock), inside the
database driver, or running Python.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

#: (marker found in a frame, step name); a sample belongs to the last marker found from the root to the leaf.
STEPS = [
    # The web server: the request up to the answer.
    ("ThreadWorker.handle ", "gunicorn: read request, write response"),
    ("WSGIHandler.__call__", "Django request/middleware overhead"),
    ("APIView.initial ", "DRF: content negotiation, versioning"),
    ("TrackingJSONParser.parse", "JSON: read body + json.loads"),
    ("WriteKeyAuthentication.authenticate", "auth: API key lookup"),
    ("close_old_connections", "Django: close_old_connections"),
    ("close_if_health_check_failed", "Django: connection health check (SELECT 1)"),
    ("ApiKeyThrottle.allow_request", "throttle: cache round trip"),
    ("HasScope.has_permission", "auth: scope check"),
    ("tracking_ingest ", "tracking_ingest (other)"),
    ("parse_message ", "validation: parse_message"),
    ("event_record_batch ", "ingest: event_record_batch (other)"),
    ("_store_known_postgresql ", "ingest: one statement (known contacts: resolve, insert, queue)"),
    ("_store_resolving ", "ingest: full resolution + insert + queue"),
    ("_resolve_contacts ", "ingest: resolve/create contacts"),
    ("contact_merge ", "ingest: contact merge"),
    ("events_process_soon ", "ingest: queue the processing task (cache flag)"),
    ("Response.rendered_content", "DRF: render JSON response"),
    ("finalize_response", "DRF: render JSON response"),
    # The Celery worker: applying a batch.
    ("events_process_pending ", "worker: loop, trigger, linger"),
    ("_process_batch ", "worker: batch (lane lock, queue delete, other)"),
    ("_claim ", "worker: claim + read events"),
    ("_lock_contacts ", "worker: lock contacts"),
    ("_apply_profiles ", "worker: profiles + consent"),
    ("_register_devices ", "worker: devices"),
    ("commerce_apply ", "worker: commerce (orders, carts, coupons)"),
    ("contacts_seen_extend ", "worker: first/last seen"),
    ("_announce ", "worker: events_recorded receivers"),
    ("Atomic.__exit__ ", "COMMIT"),
]
#: A sample is work when one of its frames is one of these (a request, a processing run); the rest is idle.
WORK_FRAMES = ("ThreadWorker.handle", "WSGIHandler.__call__", "events_process_pending")
IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py",
    "EpollSelector.select",
    "PollSelector.select",
    "Arbiter.",
    "ThreadWorker.wait_for_and_dispatch_events",
    "ThreadWorker.run ",
)


def layer(leaf: str) -> str:
    if "Connection.wait (psycopg" in leaf or "_execute_send" in leaf or "wait_c" in leaf:
        return "PostgreSQL wait"
    if "psycopg/" in leaf:
        return "driver (psycopg)"
    if "django/db/" in leaf:
        return "Django ORM"
    return "Python"


def split(paths: list[str]) -> None:
    for path in paths:
        steps: dict[str, Counter] = defaultdict(Counter)
        idle = 0
        for line in Path(path).read_text().splitlines():
            stack, _sep, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            leaf = frames[-1]
            if any(marker in leaf for marker in IDLE_LEAVES) or not any(
                work in f for f in frames for work in WORK_FRAMES
            ):
                idle += count
                continue
            step = "other"
            for frame in frames:
                for marker, name in STEPS:
                    if marker in frame:
                        step = name
            steps[step][layer(leaf)] += count
        busy = sum(sum(c.values()) for c in steps.values())
        print(f"\n{path}: {busy} samples at work ({idle} idle/other samples left out)")
        layers = ["PostgreSQL wait", "driver (psycopg)", "Django ORM", "Python"]
        print(f"  {'step':58} {'share':>6}   " + "  ".join(f"{name:>16}" for name in layers))
        totals: Counter = Counter()
        for step, counter in sorted(steps.items(), key=lambda item: -sum(item[1].values())):
            n = sum(counter.values())
            totals.update(counter)
            cells = "  ".join(f"{counter[name] / busy:>16.1%}" for name in layers)
            print(f"  {step:58} {n / busy:>6.1%}   {cells}")
        cells = "  ".join(f"{totals[name] / busy:>16.1%}" for name in layers)
        print(f"  {'total':58} {1:>6.1%}   {cells}")


if __name__ == "__main__":
    split(sys.argv[1:])
