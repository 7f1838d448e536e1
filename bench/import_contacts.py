"""Benchmark of contact import and export (issue #5), on PostgreSQL.

    export LOOP_VAR_DIR=/tmp/var-import DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop_import_bench
    .venv/bin/python bench/import_contacts.py [--rows 100000] [--runs 3] [--baseline-rows 2000] [--export-rows 1000000]

1. Generates a 100,000-row CSV (10 columns, Korean text: 회원ID, 이름, 이메일, 휴대폰, SMS/이메일 수신동의,
   생년월일, 성별, 등급, 포인트) in which half the rows match existing contacts (by member ID; a third of those
   change a value or a consent, the rest are identical), and creates those existing contacts with their consent.
2. Imports it, from the same starting data each time, in the three ways a marketer or an operator does (each in a
   fresh process; ``--paths`` chooses):
   - ``service``: the services the admin and the tasks call (``contact_import_preview`` then
     ``contact_import_apply``), with wall time, CPU of the process and of its PostgreSQL backend, peak RSS, and
     (``--statements``) the wall time of each kind of SQL statement as the thread that runs it sees it;
   - ``cli``: ``manage.py import_contacts PATH`` end to end (interpreter and Django start-up included);
   - ``admin``: the admin's requests with Django's test client (upload, the preview task's body, the preview page,
     confirm, the apply task's body, the result page); only the Celery queueing delay is left out.
   Each run prints the machine's load and the share of the two cores other processes used meanwhile.
3. Times django-import-export's default row-by-row import (``crm.resources.ContactResource``) of the first
   ``--baseline-rows`` rows of the same file (the full file would take minutes), on the same starting data,
   extrapolates, and prints the ratio.
4. Exports ``--export-rows`` contacts to CSV and to XLSX and prints the peak memory of each, sampled while it runs.

The database named by DATABASE_URL is emptied of contacts first: use a benchmark database (loop_import_bench),
migrated (``manage.py migrate``). Peak RSS is measured in child processes, one per phase, so that phases do not
inherit each other's peak. On a shared machine wrap the run in ``flock /tmp/loop-bench.lock`` and use
``--wait-quiet``."""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")

FAMILY = "김이박최정강조윤장임한오서신권황안송류홍"
GIVEN = ["민준", "서연", "지훈", "수아", "하준", "지우", "예린", "도윤", "하은", "시우", "서준", "지민", "예준", "채원"]
GRADES = ["VIP", "GOLD", "SILVER", "BRONZE", "일반"]
HEADERS = [
    "회원ID",
    "이름",
    "이메일",
    "휴대폰",
    "SMS 수신동의",
    "이메일 수신동의",
    "생년월일",
    "성별",
    "등급",
    "포인트",
]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as stat:
        return int(stat.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values[:8]) - idle) / ticks, sum(values[:8]) / ticks


def wait_for_quiet(limit: float) -> None:
    """Wait (at most ``limit`` seconds) until the machine is nearly idle: other people's work skews the figures."""
    deadline = time.monotonic() + limit
    while True:
        busy0, total0 = machine_cpu()
        time.sleep(2)
        busy1, total1 = machine_cpu()
        share = (busy1 - busy0) / max(1e-9, total1 - total0)
        if share < 0.1 or time.monotonic() > deadline:
            return


class Others:
    """The share of the machine's CPU that other processes used while a phase ran (``own``: CPU seconds of the
    phase's own processes, its PostgreSQL backend included)."""

    def __init__(self) -> None:
        self.busy, self.total = machine_cpu()
        self.load = load_average()

    def share(self, own: float) -> float:
        busy, total = machine_cpu()
        return max(0.0, (busy - self.busy) - own) / max(1e-9, total - self.total)


def setup_django() -> None:
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("This benchmark runs on PostgreSQL: set DATABASE_URL=postgres://.../loop_import_bench")


def backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def person(i: int, rng: random.Random) -> list[str]:
    return [
        f"M{i:07d}",
        rng.choice(FAMILY) + rng.choice(GIVEN),
        f"member{i}@example.co.kr",
        f"010-{2000 + i // 10000:04d}-{i % 10000:04d}",
        rng.choice(["Y", "N"]),
        rng.choice(["예", "아니오"]),
        f"19{rng.randint(60, 99)}.{rng.randint(1, 12):02d}.{rng.randint(1, 28):02d}",
        rng.choice(["남", "여"]),
        rng.choice(GRADES),
        f"{rng.randint(0, 50000):,}",
    ]


def generate(path: Path, rows: int) -> list[list[str]]:
    """Write the CSV; return the rows of the contacts that exist before the import (every other row)."""
    rng = random.Random(5)
    existing = []
    with path.open("w", newline="", encoding="utf-8-sig") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS)
        for i in range(rows):
            row = person(i, rng)
            writer.writerow(row)
            if i % 2 == 0:
                before = list(row)
                if i % 6 == 0:  # a third of the existing contacts change: a grade and a consent
                    before[8] = "일반" if row[8] != "일반" else "VIP"
                    before[4] = "N" if row[4] == "Y" else "Y"
                existing.append(before)
    return existing


def reset_database(existing: list[list[str]]) -> None:
    """Empty the contact tables and create the existing contacts with their attributes and consent (COPY)."""
    import json

    from django.db import connection
    from django.utils import timezone

    from crm.importing.mapping import parse_date, parse_phone

    tables = "crm_contact, crm_consent, crm_consentchange, crm_contact_tags, crm_contact_lists, crm_contactimport"
    created = timezone.now() - timedelta(days=30)
    with connection.cursor() as django_cursor:
        django_cursor.execute(f"TRUNCATE {tables}, crm_tag, crm_contactlist RESTART IDENTITY CASCADE")
        cursor = django_cursor.cursor
        columns = "id, external_id, email, phone, name, locale, time_zone, attributes, order_count, total_revenue"
        with cursor.copy(f"COPY crm_contact ({columns}, created_at, updated_at) FROM STDIN") as copy:
            for n, row in enumerate(existing, start=1):
                attributes = {
                    "birth_date": parse_date(row[6]).isoformat(),
                    "gender": "male" if row[7] == "남" else "female",
                    "등급": row[8],
                    "포인트": int(row[9].replace(",", "")),
                }
                values = [n, row[0], row[2], parse_phone(row[3]), row[1], "", "", json.dumps(attributes), 0, 0]
                copy.write_row([*values, created, created])
        cursor.execute("SELECT setval(pg_get_serial_sequence('crm_contact', 'id'), %s)", [len(existing)])
        with cursor.copy("COPY crm_consent (contact_id, purpose, granted, changed_at, source) FROM STDIN") as copy:
            for n, row in enumerate(existing, start=1):
                copy.write_row([n, "sms", row[4] == "Y", created, "signup"])
                copy.write_row([n, "email", row[5] == "예", created, "signup"])
        cursor.execute("ANALYZE crm_contact")
        cursor.execute("ANALYZE crm_consent")


def time_statements() -> dict[str, list[float]]:
    """Wrap psycopg's execute and copy: wall seconds and count per kind of statement (first words), as the thread
    that runs the statement sees it (on the import's statement thread this includes waiting for the GIL)."""
    import re
    from contextlib import contextmanager

    import psycopg

    spent: dict[str, list[float]] = {}

    def kind(query) -> str:
        text = query.decode() if isinstance(query, bytes) else str(query)
        text = re.sub(r"\s+", " ", text).strip()
        text = re.sub(r"\(.*", "", text) if text.startswith(("INSERT", "COPY")) else text
        return text[:70]

    execute = psycopg.Cursor.execute

    def timed_execute(self, query, params=None, **kwargs):
        started = time.perf_counter()
        try:
            return execute(self, query, params, **kwargs)
        finally:
            entry = spent.setdefault(kind(query), [0.0, 0])
            entry[0] += time.perf_counter() - started
            entry[1] += 1

    copy = psycopg.Cursor.copy

    @contextmanager
    def timed_copy(self, statement, *args, **kwargs):
        started = time.perf_counter()
        with copy(self, statement, *args, **kwargs) as cp:
            yield cp
        entry = spent.setdefault(kind(statement), [0.0, 0])
        entry[0] += time.perf_counter() - started
        entry[1] += 1

    psycopg.Cursor.execute = timed_execute
    psycopg.Cursor.copy = timed_copy
    return spent


def run_import(path: str, rows: int, statements: bool, queue) -> None:
    setup_django()
    from crm.services.imports import contact_import_apply, contact_import_preview

    spent = time_statements() if statements else {}
    pid = backend_pid()
    db0, cpu0, t0 = cpu_seconds(pid), cpu_seconds(), time.perf_counter()
    with open(path, "rb") as stream:
        ci = contact_import_preview(file=stream, file_name=Path(path).name, options={})
    t1 = time.perf_counter()
    db1, cpu1 = cpu_seconds(pid), cpu_seconds()
    assert ci.status == "previewed", ci.failure
    counts = {"new": ci.new_count, "updated": ci.updated_count, "unchanged": ci.unchanged_count}
    counts["errors"] = ci.error_count
    preview_statements = {k: list(v) for k, v in spent.items()}
    spent.clear()
    ci = contact_import_apply(contact_import=ci)
    t2 = time.perf_counter()
    db2, cpu2 = cpu_seconds(pid), cpu_seconds()
    assert ci.status == "completed", (ci.status, ci.failure, ci.preview.get("notice"))
    queue.put(
        {
            "counts": counts,
            "preview": t1 - t0,
            "apply": t2 - t1,
            "total": t2 - t0,
            "py_cpu": (cpu1 - cpu0, cpu2 - cpu1),
            "db_cpu": (db1 - db0, db2 - db1),
            "rss": rss_mb(),
            "statements": {"preview": preview_statements, "apply": dict(spent)},
        }
    )


def run_admin(path: str, rows: int, queue) -> None:
    """The admin flow with the test client; the tasks' bodies run here, where a Celery worker would run them."""
    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from crm import tasks
    from crm.models import ContactImport

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    tasks.contact_import_preview_task.delay = lambda import_id: None  # run below, as a worker would
    tasks.contact_import_apply_task.delay = lambda import_id: None
    user_model = get_user_model()
    admin = user_model.objects.filter(username="bench-admin").first()
    if admin is None:
        admin = user_model.objects.create_superuser("bench-admin", "bench@example.com", "bench-admin")
    client = Client(HTTP_ACCEPT_LANGUAGE="ko")
    client.force_login(admin)
    pid = backend_pid()
    db0, cpu0 = cpu_seconds(pid), cpu_seconds()
    marks = [time.perf_counter()]
    content = Path(path).read_bytes()
    response = client.post(
        "/admin/crm/contact/import/", {"file": SimpleUploadedFile(Path(path).name, content, "text/csv")}
    )
    assert response.status_code == 302, response.status_code
    ci = ContactImport.objects.latest("pk")
    assert ci.status == "pending", (ci.status, ci.failure)  # large: previewed by the task
    marks.append(time.perf_counter())
    tasks.contact_import_preview_task(ci.pk)
    marks.append(time.perf_counter())
    page = client.get(f"/admin/crm/contact/import/{ci.pk}/")
    assert page.status_code == 200
    marks.append(time.perf_counter())
    response = client.post(f"/admin/crm/contact/import/{ci.pk}/confirm/")
    assert response.status_code == 302
    marks.append(time.perf_counter())
    tasks.contact_import_apply_task(ci.pk)
    marks.append(time.perf_counter())
    page = client.get(f"/admin/crm/contact/import/{ci.pk}/")
    assert page.status_code == 200
    marks.append(time.perf_counter())
    ci.refresh_from_db()
    assert ci.status == "completed", (ci.status, ci.failure)
    names = ["upload", "preview task", "preview page", "confirm", "apply task", "result page"]
    queue.put(
        {
            "steps": {name: marks[i + 1] - marks[i] for i, name in enumerate(names)},
            "total": marks[-1] - marks[0],
            "cpu": cpu_seconds() - cpu0 + cpu_seconds(pid) - db0,
            "rss": rss_mb(),
        }
    )


def run_cli(path: str) -> dict:
    """``manage.py import_contacts PATH`` in a new process: wall time from start to exit, its CPU and peak RSS."""
    command = [sys.executable, "manage.py", "import_contacts", path, "--no-progress"]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = process.stdout.read().decode()
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, output
    applied = float(output.rsplit("applied in ", 1)[1].split(" s", 1)[0])
    return {
        "total": elapsed,
        "apply": applied,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": usage.ru_maxrss / 1024,
        "output": output,
    }


def run_baseline(path: str, rows: int, queue) -> None:
    """django-import-export's default import (row by row, in a transaction) of the first ``rows`` rows."""
    setup_django()
    import tablib

    from crm.resources import ContactResource

    with open(path, encoding="utf-8-sig") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        dataset = tablib.Dataset(*[next(reader) for _ in range(rows)], headers=header)
    t0 = time.perf_counter()
    result = ContactResource().import_data(dataset, dry_run=False)
    elapsed = time.perf_counter() - t0
    assert not result.has_errors(), result.base_errors or [r.errors for r in result.rows if r.errors][:3]
    queue.put({"rows": rows, "seconds": elapsed, "totals": dict(result.totals), "rss": rss_mb()})


def create_contacts(total: int) -> None:
    """Add contacts (with attributes and two consents) until there are ``total`` of them, by COPY."""
    import json

    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    with connection.cursor() as django_cursor:
        django_cursor.execute("SELECT count(*) FROM crm_contact")
        have = django_cursor.fetchone()[0]
        cursor = django_cursor.cursor
        cursor.execute("SELECT coalesce(max(id), 0) FROM crm_contact")
        start = cursor.fetchone()[0] + 1
        missing = total - have
        if missing <= 0:
            return
        rng = random.Random(9)
        columns = "id, external_id, email, phone, name, locale, time_zone, attributes, order_count, total_revenue"
        with cursor.copy(f"COPY crm_contact ({columns}, created_at, updated_at) FROM STDIN") as copy:
            for n in range(start, start + missing):
                attributes = json.dumps({"등급": rng.choice(GRADES), "포인트": rng.randint(0, 50000)})
                values = [n, f"E{n:08d}", f"e{n}@example.com", f"+8210{30000000 + n % 60000000:08d}", "김민준"]
                copy.write_row([*values, "ko-KR", "", attributes, rng.randint(0, 9), rng.randint(0, 900000), now, now])
        cursor.execute("SELECT setval(pg_get_serial_sequence('crm_contact', 'id'), %s)", [start + missing])
        with cursor.copy("COPY crm_consent (contact_id, purpose, granted, changed_at, source) FROM STDIN") as copy:
            for n in range(start, start + missing):
                copy.write_row([n, "email", n % 3 != 0, now, "signup"])
                copy.write_row([n, "sms", n % 2 == 0, now, "signup"])
        cursor.execute("ANALYZE crm_contact")


def run_export(fmt: str, out_path: str, queue) -> None:
    setup_django()
    from crm import exporting
    from crm.models import Contact

    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(current_rss_mb())
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rows = 0
    t0 = time.perf_counter()
    with open(out_path, "wb") as out:
        if fmt == "csv":
            for chunk in exporting.csv_stream(exporting.contact_rows(Contact.objects.all())):
                out.write(chunk)
            rows = -1
        else:
            rows = exporting.xlsx_write(exporting.contact_rows(Contact.objects.all()), out, sheet_title="contacts")
    elapsed = time.perf_counter() - t0
    stop.set()
    sampler.join()
    quarter = max(len(samples) // 4, 1)
    queue.put(
        {
            "fmt": fmt,
            "seconds": elapsed,
            "rows": rows,
            "bytes": os.path.getsize(out_path),
            "peak": rss_mb(),
            # The memory profile: RSS after the first quarter and at the end (flat = the same).
            "rss_first_quarter": max(samples[:quarter]),
            "rss_last_quarter": max(samples[-quarter:]),
        }
    )


def in_child(target, *args):
    """Run one phase in a fresh process (its own peak RSS and database connection)."""
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


class BackendSampler:
    """CPU seconds used by the PostgreSQL backends of one database between start and stop (a thread samples them
    four times a second: a backend exits with its client, e.g. the command line's)."""

    def __init__(self, database: str):
        self.marker = f" {database} ".encode()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self, initial: bool = False) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if self.marker not in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    continue
                cpu = cpu_seconds(int(entry.name))
            except (OSError, ValueError):
                continue
            pid = int(entry.name)
            self.first.setdefault(pid, cpu if initial else 0.0)
            self.last[pid] = cpu

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            self.sample()

    def __enter__(self) -> BackendSampler:
        self.sample(initial=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()
        self.sample()

    @property
    def cpu(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def spread(values: list[float]) -> str:
    return f"best {min(values):.2f} s, worst {max(values):.2f} s" if len(values) > 1 else f"{values[0]:.2f} s"


def print_statements(title: str, spent: dict[str, list[float]], limit: int = 14) -> None:
    print(f"  {title}: {sum(v[0] for v in spent.values()):.2f} s in SQL statements")
    for kind, (seconds, count) in sorted(spent.items(), key=lambda item: -item[1][0])[:limit]:
        print(f"    {seconds:6.2f} s {count:5d}×  {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=2_000)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1, help="Runs of each import path (the best and all are printed).")
    parser.add_argument(
        "--paths", default="service,cli,admin", help="Import paths to run: service, cli, admin (comma-separated)."
    )
    parser.add_argument("--statements", action="store_true", help="Time each kind of SQL statement (service path).")
    parser.add_argument(
        "--wait-quiet", type=float, default=0, help="Before each run wait up to this many seconds for an idle machine."
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--workdir", default=os.environ.get("LOOP_VAR_DIR", "/tmp") + "/bench")
    args = parser.parse_args()
    setup_django()
    from django import db
    from django.conf import settings

    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    database = settings.DATABASES["default"]["NAME"]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"contacts-{args.rows}.csv"
    existing = generate(path, args.rows)
    print(f"File: {path} ({path.stat().st_size / 1e6:.1f} MB, {args.rows:,} rows, {len(HEADERS)} columns)")
    print(f"Machine: {os.cpu_count()} CPUs; load average before: {load_average()}")

    def prepare() -> Others:
        reset_database(existing)
        db.connections.close_all()
        if args.wait_quiet:
            wait_for_quiet(args.wait_quiet)
        return Others()

    results: dict[str, list[dict]] = {name: [] for name in paths}
    for run in range(args.runs):
        if "service" in paths:
            others = prepare()
            result = in_child(run_import, str(path), args.rows, args.statements)
            other = others.share(sum(result["py_cpu"]) + sum(result["db_cpu"]))
            results["service"].append(result)
            print(
                f"Service run {run + 1}: preview {result['preview']:.2f} s + apply {result['apply']:.2f} s = "
                f"{result['total']:.2f} s → {args.rows / result['total']:,.0f} rows/s; CPU python "
                f"{sum(result['py_cpu']):.2f} s (preview {result['py_cpu'][0]:.2f}, apply {result['py_cpu'][1]:.2f}),"
                f" PostgreSQL backend {sum(result['db_cpu']):.2f} s (preview {result['db_cpu'][0]:.2f}, apply "
                f"{result['db_cpu'][1]:.2f}); peak RSS {result['rss']:.0f} MB; load before {others.load}, other "
                f"processes {other:.0%} of the machine"
            )
        if "cli" in paths:
            others = prepare()
            with BackendSampler(database) as backend:
                result = run_cli(str(path))
            other = others.share(result["cpu"] + backend.cpu)
            results["cli"].append(result)
            print(
                f"CLI run {run + 1}: manage.py import_contacts end to end {result['total']:.2f} s (of which apply "
                f"{result['apply']:.1f} s) → {args.rows / result['total']:,.0f} rows/s; CPU python {result['cpu']:.2f}"
                f" s, PostgreSQL {backend.cpu:.2f} s; peak RSS {result['rss']:.0f} MB; load before {others.load}, "
                f"other processes {other:.0%}"
            )
        if "admin" in paths:
            others = prepare()
            result = in_child(run_admin, str(path), args.rows)
            other = others.share(result["cpu"])
            results["admin"].append(result)
            steps = ", ".join(f"{name} {seconds:.2f}" for name, seconds in result["steps"].items())
            print(
                f"Admin run {run + 1}: {result['total']:.2f} s ({steps}); peak RSS {result['rss']:.0f} MB; load "
                f"before {others.load}, other processes {other:.0%}"
            )

    best = None
    if results.get("service"):
        runs = results["service"]
        best = min(runs, key=lambda r: r["total"])
        print(f"Counts: {best['counts']}")
        print(
            f"IMPORT {args.rows:,} rows (service): {spread([r['total'] for r in runs])} "
            f"({args.rows / best['total']:,.0f} rows/s): preview {best['preview']:.2f} s + apply {best['apply']:.2f} s;"
            f" CPU {sum(best['py_cpu']) + sum(best['db_cpu']):.2f} s (python + PostgreSQL), peak RSS "
            f"{max(r['rss'] for r in runs):.0f} MB"
        )
        if args.statements:
            print_statements("preview", best["statements"]["preview"])
            print_statements("apply", best["statements"]["apply"])
    if results.get("cli"):
        runs = results["cli"]
        print(
            f"IMPORT {args.rows:,} rows (manage.py import_contacts, end to end): {spread([r['total'] for r in runs])};"
            f" peak RSS {max(r['rss'] for r in runs):.0f} MB"
        )
    if results.get("admin"):
        runs = results["admin"]
        fastest = min(runs, key=lambda r: r["total"])
        steps = ", ".join(f"{name} {seconds:.2f}" for name, seconds in fastest["steps"].items())
        print(
            f"IMPORT {args.rows:,} rows (admin requests + task bodies): {spread([r['total'] for r in runs])} ({steps});"
            f" peak RSS {max(r['rss'] for r in runs):.0f} MB"
        )

    if not args.skip_baseline:
        reset_database(existing)
        db.connections.close_all()
        baseline = in_child(run_baseline, str(path), args.baseline_rows)
        rate = baseline["rows"] / baseline["seconds"]
        ratio = f" Ratio: {args.rows / best['total'] / rate:,.1f}× faster" if best else ""
        print(
            f"BASELINE django-import-export default import of the first {baseline['rows']:,} rows: "
            f"{baseline['seconds']:.2f} s → {rate:,.0f} rows/s ({baseline['totals']}); extrapolated to "
            f"{args.rows:,} rows: {args.rows / rate:,.0f} s.{ratio}"
        )

    if not args.skip_export:
        create_contacts(args.export_rows)
        db.connections.close_all()
        for fmt in ("csv", "xlsx"):
            result = in_child(run_export, fmt, str(workdir / f"export.{fmt}"))
            print(
                f"EXPORT {args.export_rows:,} contacts to {fmt.upper()}: {result['seconds']:.1f} s, "
                f"{result['bytes'] / 1e6:.0f} MB file; RSS after the first quarter {result['rss_first_quarter']:.0f} "
                f"MB, in the last quarter {result['rss_last_quarter']:.0f} MB, peak {result['peak']:.0f} MB"
            )
    print(f"Load average after: {load_average()}")


if __name__ == "__main__":
    main()
