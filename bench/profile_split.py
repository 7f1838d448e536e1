"""Split py-spy samples of the server into the steps of an ingest request (used for docs/performance.md).

    .venv/bin/python bench/profile_split.py /tmp/prof/batch.collapsed [more.collapsed ...]

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
    ("ThreadWorker.handle ", "gunicorn: read request, write response"),
    ("WSGIHandler.__call__", "Django request/middleware overhead"),
    ("APIView.initial ", "DRF: content negotiation, versioning"),
    ("TrackingJSONParser.parse", "JSON: read body + json.loads"),
    ("WriteKeyAuthentication.authenticate", "auth: API key lookup"),
    ("close_old_connections", "Django: connection health check / close_old_connections"),
    ("ApiKeyThrottle.allow_request", "throttle: cache add + incr"),
    ("HasScope.has_permission", "auth: scope check"),
    ("tracking_ingest ", "tracking_ingest (other)"),
    ("parse_message ", "validation: parse_message"),
    ("event_record_batch ", "ingest: event_record_batch (other)"),
    ("_resolve_contacts ", "ingest: resolve contacts"),
    ("insert_ignore_returning ", "ingest: INSERT events ON CONFLICT"),
    ("contact_merge ", "ingest: contact merge"),
    ("_apply_profiles ", "ingest: profiles + consent"),
    ("_register_devices ", "ingest: devices"),
    ("commerce_apply ", "ingest: commerce (orders, carts, coupons)"),
    ("contacts_seen_refresh ", "ingest: first/last seen refresh"),
    ("Atomic.__exit__ ", "ingest: COMMIT"),
    ("Response.rendered_content", "DRF: render JSON response"),
    ("finalize_response", "DRF: render JSON response"),
]
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
                "ThreadWorker.handle" in f or "WSGIHandler.__call__" in f for f in frames
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
        print(f"\n{path}: {busy} samples in request handling ({idle} idle/other samples left out)")
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
