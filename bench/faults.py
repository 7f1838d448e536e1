"""Faults too slow for the test suite (issue #12): PostgreSQL restarted during event ingest.

    flock /tmp/loop-bench.lock .venv/bin/python bench/faults.py [--batches 200]

A private PostgreSQL cluster (``initdb`` + ``pg_ctl`` in a temporary folder, on a free port; run as the
``postgres`` user when this runs as root) and a private ``redis-server``, so the shared servers are never touched;
migrates, starts gunicorn and a Celery worker on them, posts ``--batches`` batches of 50 events from a client that
retries any batch not answered 200 with the same messageIds (as Segment's SDKs do), and restarts PostgreSQL
(``pg_ctl restart -m fast``: every connection dropped) while the batches flow. Then it checks that every messageId
is stored exactly once and applied (no queued event left): exit status 0, else 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from glob import glob
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingest
import soak

PG_BIN = Path(sorted(glob("/usr/lib/postgresql/*/bin"))[-1])


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Cluster:
    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "data"
        self.port = ingest.free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/loop_bench_faults"

    def ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "pg.log"), "-w"]
        subprocess.run(as_postgres([*argv, *args]), check=True, stdout=subprocess.DEVNULL)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        subprocess.run(
            as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.ctl("start")
        import psycopg

        with psycopg.connect(f"postgres://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE loop_bench_faults")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="loop-faults-"))
    folder.chmod(0o755)
    cluster = Cluster(folder)
    cluster.init()
    redis_process, redis_port = soak.start_redis(folder)
    settings = argparse.Namespace(
        broker_url=f"redis://127.0.0.1:{redis_port}/0",
        cache_url=f"redis://127.0.0.1:{redis_port}/1",
        workers=2,
        threads=2,
        worker_concurrency=1,
    )
    os.environ.setdefault("LOOP_VAR_DIR", str(folder / "var"))
    os.environ["CACHE_URL"] = settings.cache_url
    os.environ["CELERY_BROKER_URL"] = settings.broker_url
    ingest.django_setup(cluster.url)
    processes = []
    try:
        secret = ingest.prepare(cluster.url)
        port = ingest.free_port()
        processes.append(ingest.start_server(settings, cluster.url, port, folder / "processes.log"))
        processes += ingest.start_worker(settings, cluster.url, folder / "processes.log")
        batches = [
            [{"type": "track", "event": "Viewed", "userId": f"u{b % 13}", "messageId": f"f-{b}-{i}"} for i in range(50)]
            for b in range(args.batches)
        ]
        counts = {"acknowledged": 0, "retries": 0, "statuses": Counter()}

        def client() -> None:
            for batch in batches:
                while True:
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
                        conn.request(
                            "POST",
                            "/api/v1/batch",
                            body=json.dumps({"batch": batch}),
                            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
                        )
                        status = conn.getresponse().status
                        conn.close()
                    except (OSError, http.client.HTTPException) as exc:
                        status = type(exc).__name__
                    counts["statuses"][status] += 1
                    if status == 200:
                        counts["acknowledged"] += 1
                        break
                    counts["retries"] += 1
                    time.sleep(0.2)

        thread = threading.Thread(target=client)
        thread.start()
        while counts["acknowledged"] < args.batches // 4:
            time.sleep(0.05)
        restarted_at = counts["acknowledged"]
        cluster.ctl("restart", "-m", "fast")
        thread.join()
        import psycopg

        deadline = time.monotonic() + 120
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                queued = conn.execute("SELECT count(*) FROM crm_unprocessedevent").fetchone()[0]
                if not queued:
                    break
                time.sleep(0.5)
            stored = Counter(dict(conn.execute("SELECT message_id, count(*) FROM crm_event GROUP BY 1").fetchall()))
        expected = {m["messageId"] for batch in batches for m in batch}
        lost = len(expected - set(stored))
        duplicated = sum(1 for n in stored.values() if n > 1)
        report = {
            "batches": args.batches,
            "restarted_after_batches": restarted_at,
            "client_retries": counts["retries"],
            "answers": {str(k): v for k, v in counts["statuses"].items()},
            "events_expected": len(expected),
            "events_lost": lost,
            "events_duplicated": duplicated,
            "events_unapplied": queued,
        }
        print(json.dumps(report, indent=2))
        sys.exit(0 if not lost and not duplicated and not queued and counts["retries"] else 1)
    finally:
        for process in processes:
            ingest.stop_process_group(process)
        from django.db import connections

        connections.close_all()
        redis_process.kill()
        cluster.ctl("stop", "-m", "immediate")
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
