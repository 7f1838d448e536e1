"""Soak benchmark (issue #12): events, a big campaign and waiting journeys at once, for minutes, on this machine.

    flock /tmp/loop-bench.lock .venv/bin/python bench/soak.py [--minutes 10] [--rate 1000] [--contacts 100000]
        [--enrollments 50000] [--database-url postgres://postgres@127.0.0.1:5432/loop_bench_soak]

What it does:

1. creates the database (named ``loop_bench*``; dropped at the end unless ``--keep``), migrates it, starts its own
   ``redis-server`` on a free port (broker on db 0, cache on db 1; the shared Redis is never touched);
2. creates ``--contacts`` contacts with email consent, a campaign to all of them (delivered to the outbox), a journey
   whose ``--enrollments`` enrollments wait at a one-step wait whose due times are spread over the soak, and a source
   with an API key;
3. starts real processes: ``gunicorn config.wsgi`` (gthread), a Celery worker (``--concurrency``) and one
   celery-beat (django-celery-beat, the product's schedule: events sweep, campaigns tick, journeys tick every 15 s);
4. starts the campaign's run (``campaigns.start_run`` through the broker) and, from a separate load process, posts
   ``--rate`` events per second through ``/api/v1/batch`` (100 messages per request, paced) for ``--minutes``;
5. samples every 2 s: sends delivered, events queued and the oldest queued event's age, enrollments fired and their
   lag behind their due time, worker RSS (main process plus pool children);
6. after the load, waits for the backlog to drain, then checks in SQL: every acknowledged message id stored exactly
   once (events lost, duplicates), sends per (run, contact) and outbox rows per send (duplicate sends);
7. prints the report (JSON too, ``--json``) and saves the plot (``--plot``, default docs/screenshots/soak.png).

The event→journey-step lag reported is the lag of the two halves a triggered step goes through: the event's
processing lag (its age when applied, the backlog's oldest age) plus the engine's lag behind a due step (the
enrollment log's time minus the enrollment's due time).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/loop_bench_soak"
SAMPLE_EVERY = 2.0


def start_redis(folder: Path) -> tuple[subprocess.Popen, int]:
    port = ingest.free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    import redis

    for _ in range(100):
        try:
            if redis.Redis(port=port, socket_connect_timeout=0.2).ping():
                return process, port
        except (redis.RedisError, OSError):
            time.sleep(0.1)
    sys.exit("redis-server did not start")


def setup_world(args) -> dict:
    """Contacts with consent, the campaign and its run, the journey with its waiting enrollments, the API key."""
    from django.utils import timezone

    from campaigns.models import Campaign, Variant
    from campaigns.services.runs import run_create
    from crm.models import Consent, Contact, Segment
    from journeys.models import Enrollment, Journey, Step

    started = time.monotonic()
    Contact.objects.bulk_create(
        (Contact(external_id=f"soak-{n}", email=f"soak{n}@example.com", name=f"고객{n}") for n in range(args.contacts)),
        batch_size=5000,
    )
    now = timezone.now()
    contact_ids = list(Contact.objects.filter(external_id__startswith="soak-").values_list("id", flat=True))
    Consent.objects.bulk_create(
        (Consent(contact_id=cid, purpose="email", granted=True, changed_at=now) for cid in contact_ids),
        batch_size=10_000,
    )
    segment = Segment.objects.create(
        name="soak: everyone", rules={"version": 1, "root": {"type": "group", "op": "and", "children": []}}
    )
    campaign = Campaign.objects.create(
        name="soak broadcast",
        channel="email",
        segment=segment,
        status=Campaign.Status.SCHEDULED,
        frequency_cap_exempt=True,
    )
    Variant.objects.create(campaign=campaign, name="A", subject="소크 테스트", body="#{고객명|고객}님, 안녕하세요")
    run, _created = run_create(campaign=campaign, scheduled_for=timezone.now())

    journey = Journey.objects.create(name="soak journey", trigger=Journey.Trigger.API, status=Journey.Status.ACTIVE)
    wait = Step.objects.create(journey=journey, position=1, name="wait", kind="wait_duration", wait_minutes=1)
    now = timezone.now()
    rng = random.Random(12)
    span = args.minutes * 60
    enrollments = [
        Enrollment(
            journey=journey,
            contact_id=cid,
            current_step=wait,
            status=Enrollment.Status.WAITING,
            next_run_at=now + timedelta(seconds=60 + rng.uniform(0, max(1, span - 90))),
            entry_key=f"soak:{cid}",
            entered_at=now,
            triggered_at=now,
        )
        for cid in contact_ids[: args.enrollments]
    ]
    Enrollment.objects.bulk_create(enrollments, batch_size=10_000)
    print(
        f"setup: {len(contact_ids):,} contacts, {len(enrollments):,} enrollments in {time.monotonic() - started:.0f} s"
    )
    return {"run_id": run.pk, "journey_id": journey.pk, "campaign_id": campaign.pk}


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in [pid, *ingest._children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


class Sampler:
    def __init__(self, url: str, world: dict, worker_pid: int):
        self.url, self.world, self.worker_pid = url, world, worker_pid
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def sample(self, conn) -> dict:
        sent, fired, lag, queued, oldest = conn.execute(
            "SELECT (SELECT count(*) FROM campaigns_send WHERE run_id = %(run)s AND status = 'sent'),"
            " (SELECT count(*) FROM journeys_enrollment WHERE journey_id = %(journey)s AND status <> 'waiting'),"
            " (SELECT max(extract(epoch FROM now() - next_run_at)) FROM journeys_enrollment"
            "   WHERE journey_id = %(journey)s AND status = 'waiting' AND next_run_at < now()),"
            " (SELECT count(*) FROM crm_unprocessedevent WHERE failed_at IS NULL),"
            " (SELECT extract(epoch FROM now() - e.received_at) FROM crm_unprocessedevent q JOIN crm_event e"
            "   ON e.id = q.event_id WHERE q.failed_at IS NULL ORDER BY q.event_id LIMIT 1)",
            {"run": self.world["run_id"], "journey": self.world["journey_id"]},
        ).fetchone()
        return {
            "t": time.monotonic() - self.t0,
            "sent": sent,
            "fired": fired,
            "journey_lag": float(lag or 0.0),
            "queued_events": queued,
            "event_lag": float(oldest or 0.0),
            "worker_rss_mb": rss_mb(self.worker_pid),
            "load1": os.getloadavg()[0],
        }

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(SAMPLE_EVERY):
                self.rows.append(self.sample(conn))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


def verify(url: str, ids_files: list[str], world: dict) -> dict:
    import psycopg

    acknowledged = []
    for name in ids_files:
        acknowledged += [line for line in Path(name).read_text().splitlines() if line]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE acked (message_id text)")
        with conn.cursor().copy("COPY acked (message_id) FROM STDIN") as copy:
            for mid in acknowledged:
                copy.write_row((mid,))
        lost = conn.execute(
            "SELECT count(*) FROM acked a"
            " WHERE NOT EXISTS (SELECT 1 FROM crm_event e WHERE e.message_id = a.message_id)"
        ).fetchone()[0]
        duplicated_events = conn.execute(
            "SELECT count(*) FROM (SELECT source_id, message_id FROM crm_event GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()[0]
        duplicate_sends = conn.execute(
            "SELECT count(*) FROM (SELECT run_id, contact_id FROM campaigns_send WHERE run_id IS NOT NULL"
            " GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()[0]
        duplicate_outbox = conn.execute(
            "SELECT count(*) FROM (SELECT send_id FROM campaigns_outboxmessage GROUP BY 1 HAVING count(*) > 1) d"
        ).fetchone()[0]
        sends = dict(
            conn.execute(
                "SELECT status, count(*) FROM campaigns_send WHERE run_id = %s GROUP BY 1", [world["run_id"]]
            ).fetchall()
        )
        unprocessed = conn.execute("SELECT count(*) FROM crm_unprocessedevent").fetchone()[0]
        enrollments = dict(
            conn.execute(
                "SELECT status, count(*) FROM journeys_enrollment WHERE journey_id = %s GROUP BY 1",
                [world["journey_id"]],
            ).fetchall()
        )
    return {
        "acknowledged_events": len(acknowledged),
        "events_lost": lost,
        "events_duplicated": duplicated_events,
        "events_unprocessed_after_drain": unprocessed,
        "sends": sends,
        "duplicate_sends": duplicate_sends + duplicate_outbox,
        "enrollments": enrollments,
    }


def plot(rows: list[dict], latencies: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] / 60 for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    ax = axes[0][0]
    if latencies:
        ms = sorted(latencies)
        ax.hist(ms, bins=60, range=(0, ingest._percentile(ms, 0.995)))
        for q, style in ((0.5, "-"), (0.99, "--")):
            value = ingest._percentile(ms, q)
            ax.axvline(value, color="k", linestyle=style, label=f"p{int(q * 100)} {value:.0f} ms")
        ax.legend()
    ax.set_title("API latency, /api/v1/batch (ms)")
    ax.set_xlabel("ms")
    ax = axes[0][1]
    sent = [r["sent"] for r in rows]
    rate = [0.0] + [(sent[i] - sent[i - 1]) / max(1e-9, rows[i]["t"] - rows[i - 1]["t"]) for i in range(1, len(rows))]
    ax.plot(t, rate, label="sends/s")
    fired = [r["fired"] for r in rows]
    ax.plot(t, [0.0] + [(fired[i] - fired[i - 1]) / SAMPLE_EVERY for i in range(1, len(rows))], label="steps/s")
    ax.set_title("throughput")
    ax.legend()
    ax = axes[1][0]
    ax.plot(t, [r["event_lag"] for r in rows], label="oldest queued event (s)")
    ax.plot(t, [r["journey_lag"] for r in rows], label="most overdue journey step (s)")
    ax.set_title("lag")
    ax.set_xlabel("minutes")
    ax.legend()
    ax = axes[1][1]
    ax.plot(t, [r["worker_rss_mb"] for r in rows], label="worker RSS (MB)")
    ax.plot(t, [r["load1"] * 100 for r in rows], label="load average ×100")
    ax.set_title("worker memory, machine load")
    ax.set_xlabel("minutes")
    ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000, help="events per second through /api/v1/batch")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--enrollments", type=int, default=50_000)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--load-threads", type=int, default=8)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "screenshots" / "soak.png"))
    parser.add_argument("--json", default="")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="loop-soak-"))
    os.environ.setdefault("LOOP_VAR_DIR", str(tmp / "var"))
    redis_process, redis_port = start_redis(tmp)
    args.broker_url = f"redis://127.0.0.1:{redis_port}/0"
    args.cache_url = f"redis://127.0.0.1:{redis_port}/1"
    os.environ["CACHE_URL"] = args.cache_url
    os.environ["CELERY_BROKER_URL"] = args.broker_url
    ingest.create_database(args.database_url)
    ingest.django_setup(args.database_url)
    processes: list[subprocess.Popen] = []
    try:
        secret = ingest.prepare(args.database_url)
        world = setup_world(args)
        log_path = tmp / "processes.log"
        port = ingest.free_port()
        processes.append(ingest.start_server(args, args.database_url, port, log_path))
        worker, beat = ingest.start_worker(args, args.database_url, log_path)
        processes += [worker, beat]

        from config.celery import app

        with app.connection_for_write(args.broker_url) as conn:
            app.send_task("campaigns.start_run", args=[world["run_id"]], connection=conn)
        sampler = Sampler(args.database_url, world, worker.pid)
        sampler.start()

        import base64

        seconds = args.minutes * 60
        per_request = 100
        requests_per_second = args.rate / per_request
        results: multiprocessing.Queue = multiprocessing.Queue()
        spec = {
            "seed": "soak",
            "threads": args.load_threads,
            "host": "127.0.0.1",
            "port": port,
            "auth": "Basic " + base64.b64encode(f"{secret}:".encode()).decode(),
            "path": "/api/v1/batch",
            "batch_size": per_request,
            "interval": args.load_threads / requests_per_second,
            "start_at": time.time() + 1,
            "seconds": seconds,
            "ids_dir": str(tmp),
            "phase": "soak",
            "process_no": 0,
        }
        load = multiprocessing.Process(target=ingest.load_process, args=(spec, results))
        load.start()
        outcome = results.get(timeout=seconds + 600)
        load.join()
        load_stopped = time.monotonic()
        monitor = ingest.BacklogMonitor(args.database_url)
        drained = monitor.wait_drained(timeout=300)
        # Let the journeys' last due steps fire and the campaign finish (bounded).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            last = sampler.rows[-1] if sampler.rows else None
            if last and last["fired"] >= args.enrollments and last["sent"] >= args.contacts:
                break
            time.sleep(2)
        sampler.stop()
        checks = verify(args.database_url, [outcome["ok_ids_file"]], world)
        latencies = sorted(outcome["latencies"])
        rows = sampler.rows
        busy = [r for r in rows if r["t"] <= seconds + 5]
        sent_during = (busy[-1]["sent"] - busy[0]["sent"]) if len(busy) > 1 else 0
        report = {
            "minutes": args.minutes,
            "target_events_per_s": args.rate,
            "events_per_s": round(outcome["events"] / seconds, 1),
            "api_p50_ms": round(ingest._percentile(latencies, 0.5) * 1000, 1) if latencies else None,
            "api_p99_ms": round(ingest._percentile(latencies, 0.99) * 1000, 1) if latencies else None,
            "api_errors": outcome["errors"],
            "event_processing_lag_max_s": round(max((r["event_lag"] for r in rows), default=0), 1),
            "journey_step_lag_max_s": round(max((r["journey_lag"] for r in rows), default=0), 1),
            "event_to_journey_step_lag_max_s": round(
                max((r["event_lag"] for r in rows), default=0) + max((r["journey_lag"] for r in rows), default=0), 1
            ),
            "backlog_drained_after_load_s": None if drained is None else round(drained, 1),
            "sends_per_s_during_load": round(sent_during / max(1e-9, busy[-1]["t"] - busy[0]["t"]), 1)
            if len(busy) > 1
            else 0,
            "worker_rss_mb_first_last_max": [
                round(rows[0]["worker_rss_mb"]) if rows else None,
                round(rows[-1]["worker_rss_mb"]) if rows else None,
                round(max((r["worker_rss_mb"] for r in rows), default=0)),
            ],
            "load_average_1m_mean": round(sum(r["load1"] for r in rows) / max(1, len(rows)), 2),
            "drain_wait_s": round(time.monotonic() - load_stopped, 1),
            **checks,
        }
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        if args.json:
            Path(args.json).write_text(json.dumps({"report": report, "samples": rows}, default=str, indent=1))
        plot(
            rows,
            [value * 1000 for value in latencies],
            Path(args.plot),
            f"Loop CRM soak: {args.rate} events/s, {args.contacts:,}-contact campaign, "
            f"{args.enrollments:,} journey steps, {args.minutes:g} min",
        )
        print(f"plot: {args.plot}")
        ok = not checks["events_lost"] and not checks["events_duplicated"] and not checks["duplicate_sends"]
        sys.exit(0 if ok else 1)
    finally:
        for process in processes:
            ingest.stop_process_group(process)
        redis_process.kill()
        redis_process.wait()
        ingest.drop_database(args.database_url, keep=args.keep)


if __name__ == "__main__":
    main()
