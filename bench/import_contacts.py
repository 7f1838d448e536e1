"""Benchmark of contact import and export (issue #5), on PostgreSQL.

    export LOOP_VAR_DIR=/tmp/var-import DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop_import_bench
    .venv/bin/python bench/import_contacts.py [--rows 100000] [--baseline-rows 2000] [--export-rows 1000000]

1. Generates a 100,000-row CSV (10 columns, Korean text: 회원ID, 이름, 이메일, 휴대폰, SMS/이메일 수신동의,
   생년월일, 성별, 등급, 포인트) in which half the rows match existing contacts (by member ID; a third of those
   change a value or a consent, the rest are identical), and creates those existing contacts with their consent.
2. Imports it through the services the admin uses (``contact_import_preview`` then ``contact_import_apply``) and
   prints wall time, rows/s, CPU of this process and of the PostgreSQL backend, and peak RSS.
3. Times django-import-export's default row-by-row import (``crm.resources.ContactResource``) of the first
   ``--baseline-rows`` rows of the same file (the full file would take minutes), on the same starting data,
   extrapolates, and prints the ratio.
4. Exports ``--export-rows`` contacts to CSV and to XLSX and prints the peak memory of each, sampled while it runs.

The database named by DATABASE_URL is emptied of contacts first: use a benchmark database (loop_import_bench),
migrated (``manage.py migrate``). Peak RSS is measured in child processes, one per phase, so that phases do not
inherit each other's peak.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import random
import resource
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


def run_import(path: str, rows: int, queue) -> None:
    setup_django()
    from crm.services.imports import contact_import_apply, contact_import_preview

    pid = backend_pid()
    db0, cpu0, t0 = cpu_seconds(pid), cpu_seconds(), time.perf_counter()
    with open(path, "rb") as stream:
        ci = contact_import_preview(file=stream, file_name=Path(path).name, options={})
    t1 = time.perf_counter()
    db1, cpu1 = cpu_seconds(pid), cpu_seconds()
    assert ci.status == "previewed", ci.failure
    counts = {"new": ci.new_count, "updated": ci.updated_count, "unchanged": ci.unchanged_count}
    counts["errors"] = ci.error_count
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
        }
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=2_000)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1, help="Import runs (the best and all are printed).")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--workdir", default=os.environ.get("LOOP_VAR_DIR", "/tmp") + "/bench")
    args = parser.parse_args()
    setup_django()
    from django import db

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"contacts-{args.rows}.csv"
    existing = generate(path, args.rows)
    print(f"File: {path} ({path.stat().st_size / 1e6:.1f} MB, {args.rows:,} rows, {len(HEADERS)} columns)")
    print(f"Machine: {os.cpu_count()} CPUs; load average before: {load_average()}")

    runs = []
    for run in range(args.runs):
        reset_database(existing)
        db.connections.close_all()
        result = in_child(run_import, str(path), args.rows)
        runs.append(result)
        print(
            f"Import run {run + 1}: preview {result['preview']:.2f} s + apply {result['apply']:.2f} s = "
            f"{result['total']:.2f} s → {args.rows / result['total']:,.0f} rows/s; CPU python "
            f"{sum(result['py_cpu']):.2f} s (preview {result['py_cpu'][0]:.2f}, apply {result['py_cpu'][1]:.2f}), "
            f"PostgreSQL backend {sum(result['db_cpu']):.2f} s (preview {result['db_cpu'][0]:.2f}, apply "
            f"{result['db_cpu'][1]:.2f}); peak RSS {result['rss']:.0f} MB; load {load_average()}"
        )
    best = min(runs, key=lambda r: r["total"])
    print(f"Counts: {best['counts']}")
    print(
        f"IMPORT {args.rows:,} rows: best {best['total']:.2f} s wall ({args.rows / best['total']:,.0f} rows/s), "
        f"CPU {sum(best['py_cpu']) + sum(best['db_cpu']):.2f} s (python + PostgreSQL), peak RSS "
        f"{best['rss']:.0f} MB"
    )

    reset_database(existing)
    db.connections.close_all()
    baseline = in_child(run_baseline, str(path), args.baseline_rows)
    rate = baseline["rows"] / baseline["seconds"]
    print(
        f"BASELINE django-import-export default import of the first {baseline['rows']:,} rows: "
        f"{baseline['seconds']:.2f} s → {rate:,.0f} rows/s ({baseline['totals']}); extrapolated to "
        f"{args.rows:,} rows: {args.rows / rate:,.0f} s. Ratio: {args.rows / best['total'] / rate:,.1f}× faster"
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
