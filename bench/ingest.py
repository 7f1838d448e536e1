"""Ingest benchmark (issue #4): the tracking API under load through a real gunicorn process and a real Celery
worker, on PostgreSQL and Redis.

    .venv/bin/python bench/ingest.py [--database-url URL] [--seconds N] [--batch-rate N] [--single-rate N] ...

What it does, in order:

1. drops and creates the database (default ``postgres://postgres@127.0.0.1:5432/loop_bench``), migrates it and
   creates a source with an API key (``crm.services.apikeys.api_key_create``); empties its Redis databases;
2. starts ``gunicorn config.wsgi`` (gthread workers, so HTTP keep-alive works) with ``API_RATE_LIMIT=1000000/s``,
   and a Celery worker and celery-beat, with Redis as cache and broker (as in production): the API stores events
   and answers, the worker applies derived state (``crm.services.event_processing``);
3. warms up: one ``identify`` per user through /api/v1/batch, so the measured phases meet known contacts, as a
   running shop's traffic does;
4. drives load from separate load-generator processes (stdlib ``http.client``, one keep-alive connection per
   thread) for ``--seconds`` each, as fast as answered or paced at ``--batch-rate`` / ``--single-rate``: (0)
   *floor*: POST /api/v1/track without a key, answered 401 before any SQL, what gunicorn + Django + DRF cost per
   request; (a) POST /api/v1/batch with 100 Segment messages per request; (b) POST /api/v1/track with one event per
   request. Prints events/s, requests/s, latency p50/p95/p99, errors, the processing lag (age of the oldest queued
   event) and backlog, the time the worker took to drain it after the load, the sustained rate (acknowledged and
   applied), where the cores' time went (gunicorn, worker, PostgreSQL, Redis, the load generator, anything else,
   idle), the CPU per request counting the worker until drained, and the CPU-bound ceiling on dedicated cores;
5. checks with SQL that every message id acknowledged by the server is stored exactly once and that nothing else
   was stored (0 lost, 0 duplicated), and that derived state is complete and consistent with the events; the exit
   status is 1 otherwise;
6. inserts 100,000 events for one contact (COPY) and times its admin change page and the admin list of its
   events (Django test client, logged in as a superuser) and the timeline query itself: medians of several runs.

``--profile DIR`` records py-spy samples of the server and the worker per phase; ``bench/profile_split.py`` splits
them by step. Benchmarks print figures; they are not tests. Results are in docs/performance.md ("Ingest (issue
#4)").
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
#: gunicorn and celery of the virtualenv running the bench.
BIN = Path(sys.executable).parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/loop_bench"
USERS = 10_000
ANONYMOUS_VISITORS = 2_000
BATCH_SIZE = 100
TIMELINE_EVENTS = 100_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------------------------------------------
# Realistic Segment traffic of a Korean shop (no Django imports here: this runs in the load-generator processes).
# --------------------------------------------------------------------------------------------------------------

PRODUCTS = [
    (f"SKU-{n:05d}", name, price, category)
    for n, (name, price, category) in enumerate(
        [
            ("린넨 셔츠", 39_000, "의류"),
            ("데님 팬츠", 59_000, "의류"),
            ("캔버스 스니커즈", 69_000, "신발"),
            ("가죽 토트백", 129_000, "가방"),
            ("울 머플러", 29_000, "잡화"),
            ("세라믹 머그", 15_000, "리빙"),
            ("아로마 캔들", 22_000, "리빙"),
            ("무선 이어폰", 89_000, "전자"),
            ("텀블러 500ml", 25_000, "리빙"),
            ("요가 매트", 45_000, "스포츠"),
        ]
        * 20
    )
]
PAGES = [("/", "홈"), ("/best", "베스트"), ("/new", "신상품"), ("/event/winter", "겨울 기획전"), ("/cart", "장바구니")]
FAMILY = "김이박최정강조윤장임"
GIVEN = ["민준", "서연", "도윤", "서윤", "시우", "지우", "하준", "하윤", "주원", "지유"]
USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
LIBRARY = {"name": "analytics-python", "version": "2.4.0"}
#: (kind, weight): page views and product views dominate, as in any shop.
MIX = [
    ("page", 30),
    ("Product Viewed", 28),
    ("Product Added", 12),
    ("Products Searched", 5),
    ("Checkout Started", 6),
    ("Order Completed", 4),
    ("identify", 10),
    ("anonymous", 5),
]
MIX_KINDS = [kind for kind, _w in MIX]
MIX_WEIGHTS = [weight for _k, weight in MIX]


def _product(rng: random.Random, quantity: bool = False) -> dict:
    sku, name, price, category = rng.choice(PRODUCTS)
    item = {"product_id": sku, "name": name, "price": price, "category": category, "currency": "KRW"}
    if quantity:
        item["quantity"] = rng.randint(1, 3)
    return item


def _traits(user: int, rng: random.Random) -> dict:
    traits = {
        "email": f"user{user}@example.co.kr",
        "name": FAMILY[user % 10] + GIVEN[(user // 10) % 10],
        "phone": f"010-{2000 + user % 3900:04d}-{user % 10000:04d}",
        "grade": rng.choice(["basic", "silver", "gold", "vip"]),
        "birth_year": 1970 + user % 35,
        "marketing_channel": rng.choice(["instagram", "naver", "kakao", "organic"]),
    }
    if user % 7 == 0:
        traits["consents"] = {"email": True, "sms": user % 2 == 0, "ads": True}
    return traits


def make_message(rng: random.Random, now: datetime, kind: str | None = None, user: int | None = None) -> dict:
    """One Segment message; ~10,000 identified users (userId + their anonymousId) and anonymous visitors."""
    kind = kind or rng.choices(MIX_KINDS, MIX_WEIGHTS)[0]
    user = rng.randrange(USERS) if user is None else user
    at = (now - timedelta(seconds=rng.uniform(0, 600))).isoformat(timespec="milliseconds")
    message: dict = {
        "messageId": str(uuid.uuid4()),
        "userId": f"user-{user}",
        "anonymousId": f"anon-{user}",
        "timestamp": at,
        "context": {"ip": f"211.{user % 250}.{user % 7}.{user % 200}", "userAgent": USER_AGENT, "locale": "ko-KR"},
    }
    if kind == "page":
        path, title = rng.choice(PAGES)
        message.update(type="page", name=title, properties={"path": path, "url": f"https://shop.example.kr{path}"})
    elif kind == "identify":
        message.update(type="identify", traits=_traits(user, rng))
    elif kind == "anonymous":  # a visitor who never logged in
        del message["userId"]
        message["anonymousId"] = f"visitor-{rng.randrange(ANONYMOUS_VISITORS)}"
        message.update(type="track", event="Product Viewed", properties=_product(rng))
    elif kind in ("Checkout Started", "Order Completed"):
        products = [_product(rng, quantity=True) for _ in range(rng.randint(1, 3))]
        total = sum(p["price"] * p["quantity"] for p in products)
        props = {"products": products, "currency": "KRW", "value": total}
        if kind == "Order Completed":
            props.update(order_id=f"ORD-{uuid.uuid4().hex[:12]}", total=total, shipping=3000)
        message.update(type="track", event=kind, properties=props)
    elif kind == "Products Searched":
        message.update(type="track", event=kind, properties={"query": rng.choice(["셔츠", "머그", "이어폰", "가방"])})
    else:  # Product Viewed, Product Added
        message.update(type="track", event=kind, properties=_product(rng, quantity=kind == "Product Added"))
    return message


def make_batch(rng: random.Random, size: int, users: list[int] | None = None) -> dict:
    now = datetime.now(UTC)
    if users is None:
        messages = [make_message(rng, now) for _ in range(size)]
    else:
        messages = [make_message(rng, now, kind="identify", user=u) for u in users]
    return {"batch": messages, "sentAt": now.isoformat(timespec="milliseconds"), "context": {"library": LIBRARY}}


# --------------------------------------------------------------------------------------------------------------
# Load generator: separate processes, threads with one persistent keep-alive connection each.
# --------------------------------------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


def _load_thread(spec: dict, thread_no: int, out: dict, lock: threading.Lock) -> None:
    rng = random.Random(f"{spec['seed']}-{thread_no}")
    headers = {"Authorization": spec["auth"], "Content-Type": "application/json", "Connection": "keep-alive"}
    if spec.get("floor"):
        del headers["Authorization"]
    expected = 401 if spec.get("floor") else 200
    conn = http.client.HTTPConnection(spec["host"], spec["port"], timeout=60)
    latencies: list[float] = []
    ok_ids: list[str] = []
    failed_ids: list[str] = []
    errors: dict[str, int] = {}
    requests = events = stored = duplicates = connects = 0
    user_slices = spec.get("user_slices")
    job = 0
    while time.time() < spec["start_at"]:
        time.sleep(0.001)
    deadline = spec["start_at"] + spec["seconds"] if spec["seconds"] else float("inf")
    # Paced (open-loop) load: each thread sends one request every `interval` seconds on a fixed schedule, whatever
    # the answers' latency (up to its one connection); unpaced: the next request as soon as the answer arrives.
    interval = spec["interval"]
    next_at = spec["start_at"] + interval * thread_no / max(1, spec["threads"])
    while time.time() < deadline:
        if interval:
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
        if user_slices is not None:  # warm-up: each thread identifies its own slice of users, then stops
            if job >= len(user_slices[thread_no]):
                break
            body_obj = make_batch(rng, 0, users=user_slices[thread_no][job])
            job += 1
            messages = body_obj["batch"]
        elif spec.get("floor"):  # no key: the framework answers 401 before any query
            body_obj, messages = {}, []
        elif spec["path"].endswith("/batch"):
            body_obj = make_batch(rng, spec["batch_size"])
            messages = body_obj["batch"]
        else:
            body_obj = make_message(
                rng, datetime.now(UTC), kind=rng.choice(["Product Viewed", "Product Viewed", "Product Added"])
            )
            messages = [body_obj]
        body = json.dumps(body_obj, ensure_ascii=False).encode()
        ids = [m["messageId"] for m in messages]
        started = time.perf_counter()
        try:
            if conn.sock is None:
                connects += 1
            conn.request("POST", spec["path"], body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - started
            if response.status == expected == 401:
                latencies.append(elapsed)
                requests += 1
            elif response.status == expected:
                answer = json.loads(payload)
                stored += answer.get("stored", 0)
                duplicates += answer.get("duplicates", 0)
                if answer.get("rejected"):
                    errors["rejected messages"] = errors.get("rejected messages", 0) + len(answer["rejected"])
                    errors.setdefault(f"first rejection: {answer['rejected'][0]}"[:300], 0)
                refused = {r.get("index") for r in answer.get("rejected", ())}
                ok_ids.extend(mid for n, mid in enumerate(ids) if n not in refused)
                latencies.append(elapsed)
                requests += 1
                events += len(ids)
            else:
                errors[f"HTTP {response.status}"] = errors.get(f"HTTP {response.status}", 0) + 1
                failed_ids.extend(ids)
                if response.status != 500 or b"<html" not in payload:
                    errors.setdefault(f"first {response.status} body: {payload[:300]!r}", 0)
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            failed_ids.extend(ids)
            conn.close()
    conn.close()
    with lock:
        out["latencies"].extend(latencies)
        out["ok_ids"].extend(ok_ids)
        out["failed_ids"].extend(failed_ids)
        for name, count in errors.items():
            out["errors"][name] = out["errors"].get(name, 0) + count
        out["requests"] += requests
        out["events"] += events
        out["stored"] += stored
        out["duplicates"] += duplicates
        out["connects"] += connects


def load_process(spec: dict, results) -> None:
    """Entry point of one load-generator process: run ``spec['threads']`` client threads, report totals."""
    out = {
        "latencies": [],
        "ok_ids": [],
        "failed_ids": [],
        "errors": {},
        "requests": 0,
        "events": 0,
        "stored": 0,
        "duplicates": 0,
        "connects": 0,
    }
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_load_thread, args=(spec, n, out, lock), daemon=True) for n in range(spec["threads"])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids_file = Path(spec["ids_dir"]) / f"{spec['phase']}-{spec['process_no']}.ids"
    ids_file.write_text("\n".join(out["ok_ids"]) + ("\n" if out["ok_ids"] else ""))
    failed_file = ids_file.with_suffix(".failed")
    failed_file.write_text("\n".join(out["failed_ids"]) + ("\n" if out["failed_ids"] else ""))
    usage = os.times()
    results.put(
        {
            "latencies": out["latencies"],
            "errors": out["errors"],
            "requests": out["requests"],
            "events": out["events"],
            "stored": out["stored"],
            "duplicates": out["duplicates"],
            "connects": out["connects"],
            "ok_ids_file": str(ids_file),
            "failed_ids_file": str(failed_file),
            "cpu_seconds": usage.user + usage.system,
        }
    )


# --------------------------------------------------------------------------------------------------------------
# CPU accounting: where the 2 cores' time went during a phase (from /proc).
# --------------------------------------------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def _postgres_pids(database: str) -> list[int]:
    """This database's backends and PostgreSQL's shared processes (WAL writer, checkpointer, autovacuum...), not
    the backends of other databases: on a shared machine those belong to someone else's work."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            is_backend = "(" in title or "[local]" in title
            if not is_backend or f" {database} " in title:
                pids.append(int(entry.name))
    return pids


def _pids_named(comm: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _all_process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every process on the machine, with its name (for "where did the other CPU go")."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            found[int(entry.name)] = (comm, _proc_cpu(int(entry.name)))
    return found


def _machine_cpu() -> tuple[float, float, float]:
    """(busy seconds, total seconds, of which interrupts and steal) summed over all cores since boot. Interrupt time
    (the loopback network stack runs in softirq) and hypervisor steal belong to no process."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS, sum(values[5:8]) / CLOCK_TICKS


class CpuSampler:
    """CPU seconds of the server processes, of PostgreSQL and of the whole machine between start() and stop().

    Processes come and go during a phase (Django closes a database connection after ``CONN_MAX_AGE`` and opens a
    new one, whose backend is a new process): a thread samples every process twice a second, so the CPU of one
    that ended is counted up to its last sample, and one that started is counted from zero."""

    INTERVAL = 0.5

    def __init__(self, trees: dict[str, list[int]], database: str):
        self.trees = trees  # group name → root pids (each counted with its children)
        self.database = database
        self._stop = threading.Event()

    def _pids(self) -> dict[str, list[int]]:
        groups = {name: [p for root in roots for p in (root, *_children(root))] for name, roots in self.trees.items()}
        groups["postgres"] = _postgres_pids(self.database)
        groups["redis"] = _pids_named("redis-server")
        return groups

    def _sample(self) -> None:
        for group, pids in self._pids().items():
            for pid in pids:
                value = _proc_cpu(pid)
                if value:
                    if value < self.first[group].get(pid, 0.0):  # the pid was reused by a new process
                        self.first[group][pid] = 0.0
                    self.first[group].setdefault(pid, 0.0)  # born during the phase: counted from zero
                    self.last[group][pid] = value

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    def start(self) -> None:
        self.everything = _all_process_cpu()
        self.first = {group: {pid: _proc_cpu(pid) for pid in pids} for group, pids in self._pids().items()}
        self.last = {group: dict(values) for group, values in self.first.items()}
        self.machine = _machine_cpu()
        self.wall = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.snapshot()

    def snapshot(self) -> dict:
        """CPU seconds so far (the sampler keeps running unless stopped)."""
        self._sample()
        machine = _machine_cpu()

        def delta(group: str) -> float:
            return sum(value - self.first[group].get(pid, 0.0) for pid, value in self.last[group].items())

        # The busiest processes outside the groups (other people's work on a shared machine, the kernel's threads).
        known = {pid for values in self.last.values() for pid in values} | {os.getpid(), *_children(os.getpid())}
        others: dict[str, float] = {}
        for pid, (comm, value) in _all_process_cpu().items():
            if pid not in known:
                spent = value - self.everything.get(pid, (comm, 0.0))[1]
                if spent > 0:
                    others[comm] = others.get(comm, 0.0) + spent
        return {
            "wall": time.monotonic() - self.wall,
            **{group: delta(group) for group in self.first},
            "busy": machine[0] - self.machine[0],
            "total": machine[1] - self.machine[1],
            "interrupts": machine[2] - self.machine[2],
            "top_other": sorted(others.items(), key=lambda item: -item[1])[:4],
        }


# --------------------------------------------------------------------------------------------------------------
# Orchestration (Django is imported only here, in the main process).
# --------------------------------------------------------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    if not name.startswith("loop_bench"):
        sys.exit(f"Refusing to drop {name!r}: the benchmark only uses databases named loop_bench*.")
    with psycopg.connect(_with_db(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str, *, keep: bool) -> None:
    from django.db import connections

    connections.close_all()
    if not keep:
        import psycopg

        with psycopg.connect(_with_db(url, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DEBUG"] = "false"  # DEBUG keeps every query in memory and would slow the timeline measurements
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def prepare(url: str) -> str:
    """Migrate, create the source and an API key; return the key's secret."""
    from django.core.management import call_command

    from crm.models import Source
    from crm.services.apikeys import api_key_create

    call_command("migrate", verbosity=0, interactive=False)
    source = Source.objects.create(name="bench shop", kind=Source.Kind.SHOP)
    _key, secret = api_key_create(source=source, name="bench")
    return secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(url: str, args) -> dict:
    """The environment of the web server and the Celery worker and beat: the same database, cache and broker."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "API_RATE_LIMIT": "1000000/s",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CACHE_URL": args.cache_url,
        "CELERY_BROKER_URL": args.broker_url,
    }
    return env


def flush_redis(url: str) -> None:
    """Empty the bench's Redis database (cache or broker) so that nothing of an earlier run is left in it."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def start_worker(args, url: str, log_path: Path) -> list[subprocess.Popen]:
    """A Celery worker (and celery-beat, as in production) on the same database, cache and broker as the server."""
    celery = str(BIN / "celery")
    log = log_path.open("ab")
    env = server_env(url, args)
    worker = subprocess.Popen(
        [celery, "-A", "config", "worker", "--concurrency", str(args.worker_concurrency), "--loglevel", "WARNING"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    beat = subprocess.Popen(
        [celery, "-A", "config", "beat", "--loglevel", "WARNING", "--schedule", str(log_path.parent / "beat")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    time.sleep(1)
    for process in (worker, beat):
        if process.poll() is not None:
            sys.exit(f"celery exited with {process.returncode}; see {log_path}")
    return [worker, beat]


class BacklogMonitor:
    """Samples the processing backlog (queued events and the age of the oldest) on its own connection, four times a
    second, from start() until stop(): the lag between the API's answer and the worker's processing."""

    INTERVAL = 0.25

    def __init__(self, url: str):
        self.url = url
        self.samples: list[tuple[float, int, float]] = []  # (monotonic time, queued events, oldest age in s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, conn) -> tuple[int, float]:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM crm_unprocessedevent WHERE failed_at IS NULL "
            "LIMIT 10000000) q), (SELECT extract(epoch FROM now() - e.received_at) FROM crm_unprocessedevent q "
            "JOIN crm_event e ON e.id = q.event_id WHERE q.failed_at IS NULL ORDER BY q.event_id LIMIT 1)"
        ).fetchone()
        return row[0], float(row[1] or 0.0)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(self.INTERVAL):
                queued, age = self.sample(conn)
                self.samples.append((time.monotonic(), queued, age))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def wait_drained(self, timeout: float) -> float | None:
        """Seconds until nothing is queued (None after ``timeout``)."""
        import psycopg

        started = time.monotonic()
        with psycopg.connect(self.url, autocommit=True) as conn:
            while time.monotonic() - started < timeout:
                queued, _age = self.sample(conn)
                if not queued:
                    return time.monotonic() - started
                time.sleep(0.05)
        return None


def start_server(args, url: str, port: int, log_path: Path) -> subprocess.Popen:
    command = [
        str(BIN / "gunicorn"),
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--worker-class",
        "gthread",
        "--keep-alive",
        "75",
        "--backlog",
        "2048",
        "--timeout",
        "60",
        "--worker-tmp-dir",
        "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir(),
        "--error-logfile",
        str(log_path),
    ]
    log = log_path.open("ab")
    process = subprocess.Popen(
        command, cwd=ROOT, env=server_env(url, args), stdout=log, stderr=log, start_new_session=True
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited with {process.returncode}; see {log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            if status in (200, 503):
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    sys.exit(f"gunicorn did not answer within 60 s; see {log_path}")


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_quiet(limit: float) -> None:
    """Wait (at most ``limit`` seconds) until the machine is nearly idle: other people's work skews the figures."""
    deadline = time.monotonic() + limit
    while True:
        busy0, total0, _ = _machine_cpu()
        time.sleep(2)
        busy1, total1, _ = _machine_cpu()
        share = (busy1 - busy0) / max(1e-9, total1 - total0)
        if share < 0.15 or time.monotonic() > deadline:
            print(f"   (machine {share:.0%} busy before this phase)")
            return


def run_phase(
    *,
    phase: str,
    path: str,
    args,
    port: int,
    auth: str,
    ids_dir: Path,
    server: subprocess.Popen,
    workers: list[subprocess.Popen],
    seconds: float,
    processes: int,
    threads: int,
    user_slices: list[list[list[int]]] | None = None,
    floor: bool = False,
    rate: float = 0.0,
) -> dict:
    """One phase: ``processes`` × ``threads`` clients, for ``seconds``, at ``rate`` requests/s in total (0: as fast
    as the server answers); CPU sampled until the worker has applied everything (the backlog is empty)."""
    if args.wait_quiet:
        wait_for_quiet(args.wait_quiet)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 1.5  # every process starts its clock at once, after the interpreters are up
    procs = []
    for n in range(processes):
        spec = {
            "host": "127.0.0.1",
            "port": port,
            "path": path,
            "auth": auth,
            "seconds": seconds,
            "threads": threads,
            "start_at": start_at,
            "seed": f"{args.seed}-{phase}-{n}",
            "batch_size": BATCH_SIZE,
            "ids_dir": str(ids_dir),
            "phase": phase,
            "process_no": n,
            "user_slices": user_slices[n] if user_slices else None,
            "floor": floor,
            # requests per second per thread → seconds between two requests of one thread
            "interval": processes * threads / rate if rate else 0.0,
        }
        proc = ctx.Process(target=load_process, args=(spec, results), daemon=True)
        proc.start()
        procs.append(proc)
    trees = {"server": [server.pid], "worker": [w.pid for w in workers]}
    sampler = CpuSampler(trees, urlsplit(args.database_url).path.lstrip("/"))
    monitor = BacklogMonitor(args.database_url)
    while time.time() < start_at:
        time.sleep(0.005)
    sampler.start()
    monitor.start()
    profilers = []
    if args.profile and seconds:
        # Sample the server's and the Celery worker's processes while the load runs: on-CPU samples only, or with
        # --profile-wall also the samples where a thread waits (for PostgreSQL, a lock, a request).
        for name, pid in ((phase, server.pid), (f"{phase}-worker", workers[0].pid)):
            profilers.append(
                subprocess.Popen(
                    [
                        args.py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--subprocesses",
                        *(["--idle"] if args.profile_wall else []),
                        "--nonblocking",
                        "--rate",
                        "200",
                        "--duration",
                        str(max(1, int(seconds) - 1)),
                        "--format",
                        "raw",
                        "--output",
                        str(Path(args.profile) / f"{name}.collapsed"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    gathered = [results.get() for _ in procs]
    cpu = sampler.snapshot()
    monitor.stop()
    # The worker applies what is still queued: the phase's work is done when the backlog is empty. CPU is counted
    # until then, so the cost per request includes the worker's share.
    drain = monitor.wait_drained(timeout=args.drain_timeout)
    cpu_drained = sampler.stop()
    for profiler in profilers:
        profiler.wait()
    for proc in procs:
        proc.join()
    latencies = sorted(x for r in gathered for x in r["latencies"])
    errors: dict[str, int] = {}
    for r in gathered:
        for name, count in r["errors"].items():
            errors[name] = errors.get(name, 0) + count
    wall = cpu["wall"]
    loadgen_cpu = sum(r["cpu_seconds"] for r in gathered)
    return {
        "phase": phase,
        "wall": wall,
        "requests": sum(r["requests"] for r in gathered),
        "events": sum(r["events"] for r in gathered),
        "stored": sum(r["stored"] for r in gathered),
        "duplicates": sum(r["duplicates"] for r in gathered),
        "connects": sum(r["connects"] for r in gathered),
        "latencies": latencies,
        "errors": errors,
        "ok_ids_files": [r["ok_ids_file"] for r in gathered],
        "failed_ids_files": [r["failed_ids_file"] for r in gathered],
        "cpu": {**cpu, "loadgen": loadgen_cpu},  # during the load
        "cpu_drained": {**cpu_drained, "loadgen": loadgen_cpu},
        "drain": drain,
        "backlog": monitor.samples,
    }


def report_phase(result: dict, unit: str) -> dict:
    lat = result["latencies"]
    wall = result["wall"]
    cpu = result["cpu"]
    cores = cpu["total"] / wall if wall else 0
    groups = ("server", "worker", "postgres", "redis", "loadgen")
    other = max(0.0, cpu["busy"] - sum(cpu[g] for g in groups))
    idle = max(0.0, cpu["total"] - cpu["busy"])
    drain = result["drain"]
    figures = {
        "events_per_s": result["events"] / wall,
        "requests_per_s": result["requests"] / wall,
        "p50_ms": _percentile(lat, 0.50) * 1000,
        "p95_ms": _percentile(lat, 0.95) * 1000,
        "p99_ms": _percentile(lat, 0.99) * 1000,
        "errors": sum(result["errors"].values()),
        "cpu_share": {name: cpu[name] / cpu["total"] for name in groups}
        | {"other": other / cpu["total"], "idle": idle / cpu["total"]},
    }
    title = {"floor": "floor: POST /api/v1/track without a key (401, no query)"}.get(result["phase"], result["phase"])
    print(f"\n== {title}: {result['requests']} requests, {result['events']} events in {wall:.1f} s")
    print(f"   {figures['events_per_s']:,.0f} events/s   {figures['requests_per_s']:,.1f} requests/s  (acknowledged)")
    print(
        f"   latency p50 {figures['p50_ms']:.1f} ms   p95 {figures['p95_ms']:.1f} ms   p99 {figures['p99_ms']:.1f} ms"
    )
    print(
        f"   errors {figures['errors']} {result['errors'] or ''}   stored {result['stored']} "
        f"duplicates {result['duplicates']}   connections opened {result['connects']}"
    )
    if result["events"]:
        samples = result["backlog"]
        ages = sorted(age for _t, _n, age in samples) or [0.0]
        queued = [n for _t, n, _age in samples] or [0]
        figures["processing"] = {
            "lag_median_s": statistics.median(ages),
            "lag_p95_s": _percentile(ages, 0.95),
            "lag_max_s": max(ages),
            "backlog_max": max(queued),
            "backlog_at_end": queued[-1],
            "drain_s": drain,
        }
        # Sustained: the rate at which events were both acknowledged and applied (the backlog drained).
        figures["sustained_per_s"] = result["events"] / (wall + drain) if drain is not None else 0.0
        p = figures["processing"]
        print(
            f"   processing lag (age of the oldest queued event, sampled every 0.25 s): "
            f"median {p['lag_median_s']:.2f} s"
            f", p95 {p['lag_p95_s']:.2f} s, max {p['lag_max_s']:.2f} s; backlog max {p['backlog_max']:,}, "
            f"at the end {p['backlog_at_end']:,}"
        )
        drained = f"drained {drain:.2f} s after the load stopped" if drain is not None else "NOT drained"
        print(f"   {drained}; sustained (acknowledged and applied): {figures['sustained_per_s']:,.0f} {unit}/s")
    share = figures["cpu_share"]
    print(
        f"   CPU of {cores:.0f} cores during the load: server {share['server']:.0%}  worker {share['worker']:.0%}  "
        f"postgres {share['postgres']:.0%}  redis {share['redis']:.0%}  load generator {share['loadgen']:.0%}  "
        f"other {share['other']:.0%}  idle {share['idle']:.0%}"
    )
    figures["top_other"] = [(name, seconds / cpu["total"]) for name, seconds in cpu["top_other"]]
    figures["interrupts_share"] = cpu["interrupts"] / cpu["total"]
    print(
        f"   of the other: interrupts and steal {figures['interrupts_share']:.0%}; busiest other processes: "
        + (", ".join(f"{n} {v:.0%}" for n, v in figures["top_other"]) or "none")
    )
    # Per request, counting the worker until the backlog was drained.
    spent = result["cpu_drained"]
    requests = max(1, result["requests"])
    per_request = {name: spent[name] / requests * 1000 for name in groups}
    figures["cpu_ms_per_request"] = per_request
    print(
        "   CPU per request (worker until drained): "
        + ", ".join(f"{name} {value:.2f} ms" for name, value in per_request.items())
    )
    # What the measured CPU cost allows if these cores did nothing else (no other processes, no lock waits).
    units = result["events"] or requests
    per_unit = sum(per_request.values()) * requests / units / 1000
    figures["cpu_bound_per_s"] = cores / per_unit if per_unit else float("nan")
    print(
        f"   CPU-bound ceiling on {cores:.0f} dedicated cores at this cost: {figures['cpu_bound_per_s']:,.0f} "
        f"{unit}/s ({sum(per_request.values()):.2f} ms CPU per request)"
    )
    return figures


def verify(phases: list[dict], source_name: str) -> dict:
    """Every message id acknowledged with 200 is stored once; nothing else is stored. Returns the counts."""
    from django.db import connection

    sent_ok: set[str] = set()
    sent_failed: set[str] = set()
    sent_total = 0
    for phase in phases:
        for name in phase["ok_ids_files"]:
            ids = Path(name).read_text().split()
            sent_total += len(ids)
            sent_ok.update(ids)
        for name in phase["failed_ids_files"]:
            sent_failed.update(Path(name).read_text().split())
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE bench_sent (message_id text PRIMARY KEY)")
        with cursor.connection.cursor().copy("COPY bench_sent (message_id) FROM STDIN") as copy:
            for mid in sent_ok:
                copy.write_row((mid,))
        cursor.execute(
            "SELECT count(*), count(DISTINCT e.message_id) FROM crm_event e JOIN crm_source s ON s.id = e.source_id "
            "WHERE s.name = %s",
            [source_name],
        )
        stored, stored_distinct = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM bench_sent b WHERE NOT EXISTS "
            "(SELECT 1 FROM crm_event e WHERE e.message_id = b.message_id)"
        )
        (lost,) = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM crm_event e WHERE NOT EXISTS "
            "(SELECT 1 FROM bench_sent b WHERE b.message_id = e.message_id)"
        )
        (unacknowledged,) = cursor.fetchone()
        cursor.execute("DROP TABLE bench_sent")
    counts = {
        "sent_acknowledged": sent_total,
        "distinct_acknowledged": len(sent_ok),
        "sent_in_failed_requests": len(sent_failed),
        "stored": stored,
        "duplicated": stored - stored_distinct,
        "lost": lost,
        "stored_not_acknowledged": unacknowledged,
    }
    # A request that failed (timeout, 5xx) may or may not have stored its messages; everything acknowledged must be
    # stored exactly once, and nothing may be stored that was never sent.
    ok = lost == 0 and counts["duplicated"] == 0 and unacknowledged <= len(sent_failed)
    print(
        f"\n== verification: {len(sent_ok):,} distinct message ids acknowledged, {stored:,} events stored; "
        f"lost {lost}, duplicated {counts['duplicated']}, stored but not acknowledged {unacknowledged} "
        f"(ids in failed requests: {len(sent_failed)})  -> {'OK' if ok else 'MISMATCH'}"
    )
    counts["ok"] = ok
    return counts


def verify_derived_state() -> dict:
    """Every stored event was applied, and the derived state agrees with the events: orders once per Order
    Completed, order counts from the orders, first/last seen from the events."""
    from django.db import connection

    checks = {
        "queued": "SELECT count(*) FROM crm_unprocessedevent",
        "orders_not_matching_events": (
            "SELECT abs((SELECT count(*) FROM crm_order) - "
            "(SELECT count(DISTINCT (contact_id, properties->>'order_id')) FROM crm_event "
            "WHERE name = 'Order Completed'))"
        ),
        "order_counts_wrong": (
            "SELECT count(*) FROM crm_contact c WHERE c.order_count <> "
            "(SELECT count(*) FROM crm_order o WHERE o.contact_id = c.id)"
        ),
        "seen_wrong": (
            "SELECT count(*) FROM crm_contact c JOIN (SELECT contact_id, min(occurred_at) lo, max(occurred_at) hi "
            "FROM crm_event GROUP BY contact_id) e ON e.contact_id = c.id "
            "WHERE c.first_seen_at IS DISTINCT FROM e.lo OR c.last_seen_at IS DISTINCT FROM e.hi"
        ),
    }
    counts = {}
    with connection.cursor() as cursor:
        for name, sql in checks.items():
            cursor.execute(sql)
            counts[name] = cursor.fetchone()[0]
    counts["ok"] = not any(counts.values())
    print(
        "== derived state: "
        + ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in counts.items() if name != "ok")
        + f"  -> {'OK' if counts['ok'] else 'MISMATCH'}"
    )
    return counts


def _median_ms(fn, runs: int) -> tuple[float, list[float]]:
    fn()  # warm caches (templates, query plans, PostgreSQL buffers)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), times


def insert_timeline_events(contact_id: int, source_id: int, count: int) -> None:
    """``count`` events for one contact, one every five minutes back from now, with COPY."""
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    rng = random.Random(7)
    columns = "contact_id, source_id, message_id, type, name, properties, context, occurred_at, received_at"
    context = json.dumps({"ip": "211.1.2.3", "userAgent": USER_AGENT, "library": LIBRARY})
    with connection.cursor() as cursor:
        with cursor.connection.cursor().copy(f"COPY crm_event ({columns}) FROM STDIN") as copy:
            for n in range(count):
                at = now - timedelta(minutes=n * 5 + rng.random())
                kind = rng.choices(["page", "Product Viewed", "Product Added", "Order Completed"], [5, 4, 2, 1])[0]
                if kind == "page":
                    kind_type, name, props = "page", "베스트", {"path": "/best", "url": "https://shop.example.kr/best"}
                else:
                    kind_type, name, props = "track", kind, _product(rng)
                row = (contact_id, source_id, f"timeline-{n}", kind_type, name, json.dumps(props, ensure_ascii=False))
                copy.write_row((*row, context, at, at))
        cursor.execute("ANALYZE crm_event")


def timeline_benchmark(runs: int) -> dict:
    """A contact with 100,000 events: its admin change page (with its recent events), the admin's list of all its
    events, and the timeline query itself; each the median of ``runs`` after one warm-up."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import NoReverseMatch, reverse

    from crm.models import Contact, Event, Source
    from crm.services.ingest import contacts_seen_refresh

    try:
        from crm.admin import RECENT_EVENTS as recent
    except ImportError:
        recent = 20
    source = Source.objects.get(name="bench shop")
    contact = Contact.objects.create(external_id="timeline-100k", email="heavy@example.co.kr", name="김헤비")
    started = time.perf_counter()
    insert_timeline_events(contact.pk, source.pk, TIMELINE_EVENTS)
    contacts_seen_refresh(contact_ids={contact.pk})
    total = Event.objects.filter(contact=contact).count()
    print(
        f"\n== timeline: {total:,} events for contact #{contact.pk} (COPY in {time.perf_counter() - started:.1f} s); "
        f"median of {runs} runs"
    )
    figures: dict = {"events": total, "recent_events": recent}

    queryset = Event.objects.filter(contact=contact).select_related("source").timeline()[:recent]
    figures["query_ms"], _times = _median_ms(lambda: list(queryset.all()), runs)
    with connection.cursor() as cursor:
        sql, params = queryset.query.sql_with_params()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        plan = [row[0] for row in cursor.fetchall()]
    figures["plan"] = plan
    print(f"   timeline query (newest {recent} events with their source): {figures['query_ms']:.2f} ms")
    print("     plan: " + " | ".join(line.strip() for line in plan[:3]))

    user_model = get_user_model()
    admin = user_model.objects.filter(username="bench-admin").first() or user_model.objects.create_superuser(
        "bench-admin", "bench-admin@example.co.kr", "bench-password-not-secret"
    )
    client = Client()
    client.force_login(admin)
    pages = []
    try:
        pages.append(("admin change page", reverse("admin:crm_contact_change", args=[contact.pk])))
    except NoReverseMatch:
        print("   admin change page: Contact is not registered in the admin, not measured")
    try:
        events_url = reverse("admin:crm_event_changelist") + f"?contact__id__exact={contact.pk}"
        pages.append(("admin list of the contact's events", events_url))
    except NoReverseMatch:
        pass
    for label, url in pages:
        response = client.get(url)
        if response.status_code != 200:
            print(f"   {label} {url}: HTTP {response.status_code}, not measured")
            continue
        queries: list[str] = []

        def count_queries(execute, sql, params, many, context, queries=queries):
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count_queries):
            size = len(client.get(url).content)

        def render(url=url):
            response = client.get(url)
            assert response.status_code == 200, response.status_code

        median, times = _median_ms(render, runs)
        key = "admin_change_page" if "change" in label else "admin_event_list"
        figures[key] = {"url": url, "median_ms": median, "min_ms": min(times), "max_ms": max(times)}
        figures[key].update(queries=len(queries), kilobytes=round(size / 1024))
        print(
            f"   {label} {url}: {median:.1f} ms (min {min(times):.1f}, max {max(times):.1f}); "
            f"{len(queries)} queries, {size / 1024:.0f} KB of HTML"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--seconds", type=float, default=30, help="duration of each measured phase")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (gthread)")
    parser.add_argument(
        "--cache-url", default="redis://127.0.0.1:6379/12", help="CACHE_URL of server and worker (emptied first)"
    )
    parser.add_argument(
        "--broker-url", default="redis://127.0.0.1:6379/13", help="CELERY_BROKER_URL of server and worker (emptied)"
    )
    parser.add_argument("--worker-concurrency", type=int, default=1, help="Celery worker processes")
    parser.add_argument(
        "--batch-rate", type=float, default=0, help="events/s to send in batches (paced); 0: as fast as possible"
    )
    parser.add_argument(
        "--single-rate", type=float, default=0, help="requests/s to send to /track (paced); 0: as fast as possible"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=300, help="after each phase wait this long for the worker to catch up"
    )
    parser.add_argument("--load-processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--batch-clients", type=int, default=6, help="concurrent connections for /batch")
    parser.add_argument("--single-clients", type=int, default=12, help="concurrent connections for /track")
    parser.add_argument("--timeline-runs", type=int, default=9)
    parser.add_argument("--skip", action="append", default=[], choices=["floor", "batch", "single", "timeline"])
    parser.add_argument("--seed", default="loop")
    parser.add_argument(
        "--wait-quiet", type=float, default=0, help="before each phase wait up to this many seconds for an idle machine"
    )
    parser.add_argument("--profile", help="write py-spy collapsed stacks of the server for each phase to this folder")
    parser.add_argument("--profile-wall", action="store_true", help="profile wall time (py-spy --idle), not CPU")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy", help="the py-spy executable")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards (default: drop it)")
    args = parser.parse_args()

    if not os.environ.get("LOOP_VAR_DIR"):
        os.environ["LOOP_VAR_DIR"] = tempfile.mkdtemp(prefix="loop-bench-var-")
    var_dir = Path(os.environ["LOOP_VAR_DIR"])
    var_dir.mkdir(parents=True, exist_ok=True)
    ids_dir = Path(tempfile.mkdtemp(prefix="loop-bench-ids-"))
    url = args.database_url

    print(f"Loop CRM ingest benchmark  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {os.cpu_count()} cores, {_cpu_model()}, Python {sys.version.split()[0]}")
    create_database(url)
    django_setup(url)
    secret = prepare(url)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        print(f"database: PostgreSQL {cursor.fetchone()[0]}  {urlsplit(url).hostname}/{urlsplit(url).path[1:]}")
    for redis_url in {args.cache_url, args.broker_url}:
        if redis_url.startswith("redis"):
            flush_redis(redis_url)
    print(
        f"server: gunicorn config.wsgi, {args.workers} workers x {args.threads} threads (gthread, keep-alive), "
        f"API_RATE_LIMIT=1000000/s, DEBUG off, cache {urlsplit(args.cache_url).scheme}"
    )
    print(
        f"worker: celery worker, concurrency {args.worker_concurrency}, and celery-beat; broker "
        f"{urlsplit(args.broker_url).scheme}"
    )
    print(
        f"load: {args.load_processes} processes, {args.batch_clients} connections for /batch "
        f"({BATCH_SIZE} messages each), {args.single_clients} for /track; {args.seconds:.0f} s per phase; "
        f"batch rate {f'{args.batch_rate:,.0f} events/s' if args.batch_rate else 'as fast as answered'}, "
        f"single rate {f'{args.single_rate:,.0f} requests/s' if args.single_rate else 'as fast as answered'}"
    )
    connection.close()

    load_phases = [name for name in ("floor", "batch", "single") if name not in args.skip]
    if not load_phases:
        if "timeline" not in args.skip:
            results = {"config": vars(args), "timeline": timeline_benchmark(args.timeline_runs)}
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        drop_database(url, keep=args.keep)
        return
    port = free_port()
    auth = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
    log_path = var_dir / "bench-gunicorn.log"
    server = start_server(args, url, port, log_path)
    workers = start_worker(args, url, var_dir / "bench-celery.log")
    results: dict = {"config": vars(args)}
    phases: list[dict] = []
    try:
        # Warm-up: every user identifies once (creates the 10,000 contacts), and every worker has served requests.
        users = list(range(USERS))
        chunks = [users[i : i + BATCH_SIZE] for i in range(0, USERS, BATCH_SIZE)]
        slices = [
            [chunks[j] for j in range(i, len(chunks), 4 * args.load_processes)] for i in range(4 * args.load_processes)
        ]
        per_process = [slices[p * 4 : (p + 1) * 4] for p in range(args.load_processes)]
        warm = run_phase(
            phase="warmup",
            path="/api/v1/batch",
            args=args,
            port=port,
            auth=auth,
            ids_dir=ids_dir,
            server=server,
            workers=workers,
            seconds=0,
            processes=args.load_processes,
            threads=4,
            user_slices=per_process,
        )
        phases.append(warm)
        print(
            f"\nwarm-up: {warm['events']:,} identify messages for {USERS:,} users in {warm['wall']:.1f} s, "
            f"errors {sum(warm['errors'].values())}"
        )
        if "floor" not in args.skip:
            floor = run_phase(
                phase="floor",
                path="/api/v1/track",
                args=args,
                port=port,
                auth=auth,
                ids_dir=ids_dir,
                server=server,
                workers=workers,
                seconds=min(args.seconds, 10),
                processes=args.load_processes,
                threads=max(1, args.single_clients // args.load_processes),
                floor=True,
            )
            results["floor"] = report_phase(floor, "requests")
        if "batch" not in args.skip:
            batch = run_phase(
                phase="batch",
                path="/api/v1/batch",
                args=args,
                port=port,
                auth=auth,
                ids_dir=ids_dir,
                server=server,
                workers=workers,
                seconds=args.seconds,
                processes=args.load_processes,
                threads=max(1, args.batch_clients // args.load_processes),
                rate=args.batch_rate / BATCH_SIZE,
            )
            phases.append(batch)
            results["batch"] = report_phase(batch, "events")
        if "single" not in args.skip:
            single = run_phase(
                phase="single",
                path="/api/v1/track",
                args=args,
                port=port,
                auth=auth,
                ids_dir=ids_dir,
                server=server,
                workers=workers,
                seconds=args.seconds,
                processes=args.load_processes,
                threads=max(1, args.single_clients // args.load_processes),
                rate=args.single_rate,
            )
            phases.append(single)
            results["single"] = report_phase(single, "events")
    finally:
        for process in (server, *workers):
            stop_process_group(process)
    results["verification"] = verify(phases, "bench shop")
    results["derived_state"] = verify_derived_state()
    if "timeline" not in args.skip:
        results["timeline"] = timeline_benchmark(args.timeline_runs)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    shutil.rmtree(ids_dir, ignore_errors=True)
    drop_database(url, keep=args.keep)
    if not results["verification"]["ok"] or not results["derived_state"]["ok"]:
        sys.exit(1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
