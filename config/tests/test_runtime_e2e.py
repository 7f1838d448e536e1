"""The runtime is real: separate worker, beat and web processes cooperate through the database and the broker.

Each test starts real processes (``celery -A config worker``, ``celery -A config beat`` with django-celery-beat's
DatabaseScheduler, and ``make run``'s runner ``config.devrun`` with Procfile.dev) against the test database
pytest-django created, and
checks the product's behaviour from the outside: a periodic task created in the database *after* the processes
started (as a marketer does in the admin) makes the worker write a ``Heartbeat`` row; SIGTERM stops worker and beat
cleanly; Ctrl-C (SIGINT) stops ``make run``'s process runner and every process under it.

Every process gets a marker variable in its environment, so a finalizer can find and kill whatever is left (pool
children and orphans included) even when a test fails halfway.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from crm.models import Heartbeat

BASE_DIR = Path(__file__).resolve().parents[2]
MARKER = "LOOP_E2E_RUN"
#: Bounds (seconds). Every wait polls; none of them is a sleep that hopes something happened.
START_TIMEOUT = 40
HEARTBEAT_TIMEOUT = 45
STOP_TIMEOUT = 25
POLL = 0.1

pytestmark = [pytest.mark.e2e]


# --- Processes, seen through /proc (no psutil) --------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    state: str
    cmdline: str


def process_table() -> dict[int, ProcInfo]:
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        table[int(entry.name)] = ProcInfo(int(entry.name), int(ppid), state, cmdline)
    return table


def descendants(pid: int) -> list[ProcInfo]:
    table = process_table()
    children: dict[int, list[ProcInfo]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def alive(pid: int) -> bool:
    """Running (zombies are dead processes waiting to be reaped, not running ones)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def processes_with_marker(token: str) -> list[int]:
    """Every live process whose environment carries ``LOOP_E2E_RUN=<token>``: children, grandchildren, orphans."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_for(condition: Callable[[], object], timeout: float, describe: Callable[[], str]) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {describe()}", pytrace=False)
        time.sleep(POLL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    name: str
    popen: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 6000) -> str:
        text = self.output()
        return text if len(text) <= chars else "[...]\n" + text[-chars:]


class Runtime:
    """Starts processes for one test and guarantees they are gone afterwards."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.token = uuid.uuid4().hex[:12]
        self.services: list[Service] = []

    # Environment ------------------------------------------------------------------------------------------------
    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                MARKER: self.token,
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "PYTHONPATH": str(BASE_DIR),
                "PYTHONUNBUFFERED": "1",
                # Their own var/ (file cache, and the embedded broker's folders unless another broker is given).
                "LOOP_VAR_DIR": str(self.tmp_path / "var"),
                "DATABASE_URL": url_of_test_database(),
                "LOG_FORMAT": "console",
                "LOG_LEVEL": "INFO",
            }
        )
        env.pop("LOOP_INTEGRATION", None)
        env.update(overrides)
        return env

    # Processes --------------------------------------------------------------------------------------------------
    def start(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> Service:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=cwd or self.tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the finalizer kills the whole group
            )
        service = Service(name, popen, log)
        self.services.append(service)
        return service

    def report(self) -> str:
        parts = []
        for service in self.services:
            state = "running" if service.popen.poll() is None else f"exited with {service.popen.returncode}"
            parts.append(f"\n----- {service.name} (pid {service.popen.pid}, {state}) -----\n{service.tail()}")
        return "".join(parts)

    def wait_for_output(self, service: Service, text: str, timeout: float = START_TIMEOUT) -> None:
        def seen() -> bool:
            if text in service.output():
                return True
            if service.popen.poll() is not None:
                pytest.fail(
                    f"{service.name} exited with {service.popen.returncode} before printing {text!r}:{self.report()}",
                    pytrace=False,
                )
            return False

        wait_for(seen, timeout, lambda: f"{service.name} to print {text!r}:{self.report()}")

    def stop(
        self, *services: Service, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT, group: bool = False
    ) -> list[int]:
        """Signal every service at once (``group``: its whole process group, a worker's pool children too), then
        wait (bounded) for each to exit; returns their exit codes."""
        for service in services:
            if group:
                os.killpg(service.popen.pid, sig)
            else:
                service.popen.send_signal(sig)
        deadline = time.monotonic() + timeout
        codes = []
        for service in services:
            try:
                codes.append(service.popen.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"{service.name} did not exit within {timeout}s of {signal.Signals(sig).name}:{self.report()}",
                    pytrace=False,
                )
        return codes

    def leftovers(self) -> list[str]:
        table = process_table()
        return [f"{pid} {table[pid].cmdline if pid in table else '?'}" for pid in processes_with_marker(self.token)]

    def cleanup(self) -> None:
        for service in self.services:
            if service.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.popen.pid, signal.SIGKILL)
                service.popen.wait(10)
        # Pool children, the runner's children in their own sessions, anything orphaned.
        for _round in range(3):
            pids = processes_with_marker(self.token)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


def url_of_test_database() -> str:
    """A DATABASE_URL for the test database pytest-django created (not the development database)."""
    settings = connection.settings_dict
    name = str(settings["NAME"])
    if connection.vendor == "sqlite":
        if name == ":memory:" or name.startswith("file:") or not Path(name).is_absolute():
            pytest.fail(f"the e2e tests need the SQLite test database in a file; it is {name!r}")
        return f"sqlite:///{name}"
    if connection.vendor == "postgresql":
        user = quote(settings.get("USER") or "", safe="")
        password = quote(settings.get("PASSWORD") or "", safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        port = f":{settings['PORT']}" if settings.get("PORT") else ""
        return f"postgres://{credentials}{settings.get('HOST') or ''}{port}/{quote(name, safe='')}"
    pytest.fail(f"no DATABASE_URL form for the {connection.vendor} test database")


@pytest.fixture
def runtime(transactional_db, tmp_path):
    """transactional_db: the rows this test writes are committed, so the processes see them (and vice versa)."""
    rt = Runtime(tmp_path)
    yield rt
    rt.cleanup()


# --- Worker + beat ------------------------------------------------------------------------------------------------


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "config", *args]


def run_heartbeat_scenario(runtime: Runtime, *, broker_url: str, queue: str | None = None) -> None:
    """Worker and beat up; a periodic task created afterwards in the database; its Heartbeat row appears; SIGTERM."""
    env = runtime.env(CELERY_BROKER_URL=broker_url)
    worker_args = ["worker", "--loglevel", "INFO", "--concurrency", "1", f"--hostname=e2e-{runtime.token}@%h"]
    # Gossip/mingle/heartbeat only talk to other workers; without them the worker is ready sooner.
    worker_args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if queue:
        worker_args += ["--queues", queue]
    worker = runtime.start("worker", celery(*worker_args), env=env)
    beat = runtime.start("beat", celery("beat", "--loglevel", "INFO", "--pidfile="), env=env)
    runtime.wait_for_output(worker, " ready.")
    runtime.wait_for_output(beat, "beat: Starting...")
    assert "django_celery_beat.schedulers.DatabaseScheduler" in beat.output(), runtime.report()

    # What a marketer does in the admin, after the processes are up.
    heartbeat = f"e2e-{runtime.token}"
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    created = time.monotonic()
    PeriodicTask.objects.create(
        name=f"e2e heartbeat {runtime.token}",
        interval=every_second,
        task="crm.record_heartbeat",
        kwargs=json.dumps({"name": heartbeat}),
        queue=queue,
    )

    row = wait_for(
        lambda: Heartbeat.objects.filter(name=heartbeat).first(),
        HEARTBEAT_TIMEOUT,
        lambda: f"the worker to record heartbeat {heartbeat!r} (scheduled by beat):{runtime.report()}",
    )
    latency = time.monotonic() - created
    assert row.count >= 1
    assert row.beat_at.tzinfo is not None

    stopping = time.monotonic()
    codes = runtime.stop(beat, worker, sig=signal.SIGTERM)
    stopped_in = time.monotonic() - stopping
    assert codes == [0, 0], f"beat and worker exited with {codes} after SIGTERM, not 0:{runtime.report()}"
    wait_for(lambda: not runtime.leftovers(), STOP_TIMEOUT, lambda: f"no processes left, found {runtime.leftovers()}")
    assert not (runtime.tmp_path / "celerybeat.pid").exists(), "--pidfile= must not write a pid file"
    print(f"heartbeat {latency:.1f}s after the periodic task was created; stopped {stopped_in:.1f}s after SIGTERM")


def test_worker_and_beat_on_the_embedded_broker(runtime):
    runtime_broker = runtime.tmp_path / "var" / "broker" / "queue"

    run_heartbeat_scenario(runtime, broker_url="filesystem://")

    assert runtime_broker.is_dir(), "the processes used their own broker folder"


@pytest.mark.integration
def test_worker_and_beat_on_redis(runtime, redis_url):
    queue = f"loop-e2e-{runtime.token}"  # a queue of its own: another run's worker on this Redis cannot take it
    try:
        run_heartbeat_scenario(runtime, broker_url=redis_url, queue=queue)
    finally:
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"*{runtime.token}*"):
            client.delete(key)
        client.close()


@pytest.mark.integration
def test_worker_and_beat_on_rabbitmq(runtime, rabbitmq_url):
    queue = f"loop-e2e-{runtime.token}"
    try:
        run_heartbeat_scenario(runtime, broker_url=rabbitmq_url, queue=queue)
    finally:
        from kombu import Connection

        with Connection(rabbitmq_url, connect_timeout=5) as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


# --- make run: config.devrun with Procfile.dev ------------------------------------------------------------------


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_make_run_serves_and_ctrl_c_stops_everything(runtime):
    port = free_port()
    env = runtime.env(LOOP_WEB_PORT=str(port), CELERY_BROKER_URL="filesystem://", LOOP_STOP_TIMEOUT="45")
    runner = runtime.start("devrun", [sys.executable, "-m", "config.devrun", "Procfile.dev"], env=env, cwd=BASE_DIR)

    healthz = f"http://127.0.0.1:{port}/healthz"
    wait_for(lambda: http_status(healthz) == 200, START_TIMEOUT, lambda: f"{healthz} to answer 200:{runtime.report()}")
    runtime.wait_for_output(runner, " ready.")
    runtime.wait_for_output(runner, "beat: Starting...")

    children = descendants(runner.popen.pid)
    commands = " | ".join(child.cmdline for child in children)
    for role in ("runserver", "worker", "beat"):
        assert any(role in child.cmdline for child in children), f"no {role} under the runner: {commands}"

    started = time.monotonic()
    (returncode,) = runtime.stop(runner, sig=signal.SIGINT, timeout=60)  # what Ctrl-C sends
    stopped_in = time.monotonic() - started

    assert returncode == 0, f"the runner exited with {returncode} after Ctrl-C:{runtime.report()}"
    orphans = [child for child in children if alive(child.pid)]
    assert not orphans, f"still running after the runner exited: {orphans}:{runtime.report()}"
    assert not runtime.leftovers(), f"processes left behind: {runtime.leftovers()}"
    # Every process stopped by itself (warm shutdown), none had to be killed.
    assert "killing" not in runner.output(), runtime.report()
    assert "Warm shutdown" in runner.output(), runtime.report()
    assert http_status(healthz) is None, "the web server still answers"
    print(f"the runner and its {len(children)} processes stopped {stopped_in:.1f}s after SIGINT")
