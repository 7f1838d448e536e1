"""In-process CPU cost of the ingest request path and of the worker's processing, for A/B comparisons of changes.

    .venv/bin/python bench/ingest_inprocess.py --setup            # once: database loop_bench_inprocess, 10,000 users
    .venv/bin/python bench/ingest_inprocess.py --rounds 5          # medians of 5 rounds
    .venv/bin/python bench/ingest_inprocess.py --profile worker    # cProfile of one part: batch, single or worker

No HTTP server: requests go through Django's WSGI handler in this process (one thread), so the figures leave out
gunicorn and the network and are much less noisy on a shared machine than ``bench/ingest.py``. Each round posts
``--requests`` batches of 100 messages, then applies them as the worker does (``events_process_pending``), then
``--singles`` single /track requests and applies those. CPU is this thread's (``time.thread_time``) and that of
its PostgreSQL backend (from ``/proc``, so PostgreSQL must run on this machine), per 100-event request or per single
event. Same message mix as ``bench/ingest.py``; the cache and broker are Redis databases 10 and 11 by default.
"""

import argparse
import base64
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
URL = os.environ.get("INPROCESS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/loop_bench_inprocess")
os.environ["DATABASE_URL"] = URL
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
os.environ["DEBUG"] = "false"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ["API_RATE_LIMIT"] = "1000000/s"
os.environ.setdefault("CACHE_URL", "redis://127.0.0.1:6379/11")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/10")

import ingest as benchmod  # noqa: E402  (bench/ingest.py: the message mix and database helpers)

CLK = os.sysconf("SC_CLK_TCK")
#: The API key's secret, kept between --setup and the measuring runs.
KEY_FILE = Path(os.environ.get("LOOP_VAR_DIR", "/tmp")) / "ingest-inprocess.key"


def pg_cpu(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--singles", type=int, default=600)
    ap.add_argument("--profile", choices=["batch", "worker", "single", "single-worker"], help="cProfile one part")
    ap.add_argument("--setup", action="store_true")
    args = ap.parse_args()

    if args.setup:
        benchmod.create_database(URL)
    import django

    django.setup()
    from django.core.cache import cache
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from django.db import connection

    from crm.models import ApiKey, Source
    from crm.services.apikeys import api_key_create
    from crm.services.event_processing import events_process_pending

    if args.setup:
        call_command("migrate", verbosity=0)
        source = Source.objects.create(name="bench shop")
        _k, secret = api_key_create(source=source, name="bench")
        KEY_FILE.write_text(secret)
    secret = KEY_FILE.read_text()
    ApiKey.objects.update(last_used_at=None)
    app = get_wsgi_application()
    auth = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
    rng = random.Random(1)

    def call(path, body):
        data = json.dumps(body, ensure_ascii=False).encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "HTTP_HOST": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(data)),
            "HTTP_AUTHORIZATION": auth,
            "wsgi.input": io.BytesIO(data),
            "wsgi.url_scheme": "http",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        status = []
        out = b"".join(app(environ, lambda s, h: status.append(s)))
        assert status[0].startswith("200"), (status, out[:300])

    if args.setup:
        users = list(range(benchmod.USERS))
        for i in range(0, len(users), 100):
            call("/api/v1/batch", benchmod.make_batch(rng, 0, users=users[i : i + 100]))
        # visitors
        for _ in range(30):
            call("/api/v1/batch", benchmod.make_batch(rng, 100))
        events_process_pending()
        print("setup done")

    cache.clear()
    connection.ensure_connection()
    with connection.cursor() as c:
        c.execute("SELECT pg_backend_pid()")
        pid = c.fetchone()[0]

    profiler = cProfile.Profile() if args.profile else None

    def measure(part: str, fn, count: int) -> tuple[float, float]:
        """Run fn; return (Python, PostgreSQL) CPU milliseconds per unit (``count`` units)."""
        if args.profile == part:
            profiler.enable()
        python0, postgres0 = time.thread_time(), pg_cpu(pid)
        fn()
        python, postgres = time.thread_time() - python0, pg_cpu(pid) - postgres0
        if args.profile == part:
            profiler.disable()
        return python / count * 1000, postgres / count * 1000

    batches = [benchmod.make_batch(rng, 100) for _ in range(args.requests * args.rounds)]
    kinds = ["Product Viewed", "Product Viewed", "Product Added"]
    singles = [
        benchmod.make_message(rng, datetime.now(UTC), kind=rng.choice(kinds)) for _ in range(args.singles * args.rounds)
    ]
    res: dict[str, list[tuple[float, float]]] = {"batch": [], "bworker": [], "single": [], "sworker": []}
    for r in range(args.rounds):
        some = batches[r * args.requests : (r + 1) * args.requests]
        res["batch"].append(measure("batch", lambda some=some: [call("/api/v1/batch", b) for b in some], len(some)))
        res["bworker"].append(measure("worker", events_process_pending, len(some)))
        some = singles[r * args.singles : (r + 1) * args.singles]
        res["single"].append(measure("single", lambda some=some: [call("/api/v1/track", m) for m in some], len(some)))
        res["sworker"].append(measure("single-worker", events_process_pending, len(some)))
    for name, vals in res.items():
        py = statistics.median(v[0] for v in vals)
        pg = statistics.median(v[1] for v in vals)
        unit = "per 100-event request" if name.startswith("b") else "per single event"
        print(f"{name:8s} python {py:6.2f} ms  postgres {pg:6.2f} ms  total {py + pg:6.2f} ms  ({unit})")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    main()
