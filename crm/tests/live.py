"""A real server process for tests that talk HTTP to the CRM: gunicorn serving ``config.wsgi`` on a free local port,
connected to the test database pytest-django created.

Use ``run_live_server()`` in a fixture that requests ``transactional_db``: the server is another process and sees
only committed rows. The process group is killed when the context exits, also when the test fails, so before
pytest-django flushes or drops the database.

``FlakyProxy`` sits between a client and the server and loses some of the server's answers after the server acted
on the request, the way a dropped connection does, so that an SDK really retries a batch that was already stored.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live_database_url() -> str:
    """A DATABASE_URL naming the database this test process uses: the test database pytest-django created."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    if connection.vendor == "postgresql":
        user = quote(settings.get("USER") or "", safe="")
        password = quote(settings.get("PASSWORD") or "", safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = settings.get("HOST") or "127.0.0.1"
        port = f":{settings['PORT']}" if settings.get("PORT") else ""
        return f"postgres://{credentials}{host}{port}/{quote(settings['NAME'], safe='')}"
    raise NotImplementedError(f"no live server for the {connection.vendor} backend")


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Terminate the whole process group (gunicorn's master and workers); kill it if it does not stop."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)


def _wait_until_healthy(server: LiveServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_error = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"the server exited with {server.process.returncode} before answering /healthz:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.2)
    pytest.fail(f"the server did not answer /healthz within {START_TIMEOUT:.0f} s ({last_error}):\n{server.log_tail()}")


@contextlib.contextmanager
def run_live_server(*, log_path: Path, env: dict[str, str] | None = None, workers: int = 2) -> Iterator[LiveServer]:
    """gunicorn with ``workers`` sync workers on a free 127.0.0.1 port, using the current (test) database."""
    port = free_port()
    server_env = {
        **os.environ,
        "DATABASE_URL": live_database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--timeout",
        "60",
        "--graceful-timeout",
        "5",
        # gunicorn 27 opens a control socket at one fixed path per user; parallel servers would take it from
        # each other.
        "--no-control-socket",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        server.stop()


@dataclass
class ProxyStats:
    requests: int = 0
    dropped: int = 0
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class FlakyProxy:
    """An HTTP proxy to ``upstream`` that forwards every request and loses the answer to every ``drop_every``-th
    one: the server has stored the batch, the client sees the connection close without a response and retries.

    It also counts what went through: messages posted (after gzip), and what the server answered stored and
    duplicate, including in the answers it lost."""

    def __init__(self, upstream: str, *, drop_every: int = 10, first_drop: int = 3):
        self.upstream = upstream.removeprefix("http://")
        self.drop_every = drop_every
        self.first_drop = first_drop
        self.stats = ProxyStats()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                proxy._forward(self)

            def log_message(self, format, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length", "connection")
        }
        upstream = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            upstream.request("POST", handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            status, answer_headers = response.status, response.getheaders()
        finally:
            upstream.close()
        with self.stats.lock:
            self.stats.requests += 1
            number = self.stats.requests
            drop = number >= self.first_drop and (number - self.first_drop) % self.drop_every == 0
            self.stats.dropped += drop
            self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
            self.stats.messages += _count_messages(body, handler.headers.get("Content-Encoding", ""))
            if status == 200:
                answer = json.loads(data)
                self.stats.stored += answer["stored"]
                self.stats.duplicates += answer["duplicates"]
        if drop:
            # The server did its work; the client never hears of it.
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.send_response(status)
        for name, value in answer_headers:
            if name.lower() not in ("connection", "transfer-encoding", "date", "server", "content-length"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _count_messages(body: bytes, encoding: str) -> int:
    if encoding.strip().lower() == "gzip":
        body = gzip.decompress(body)
    try:
        payload = json.loads(body)
    except ValueError:
        return 0
    return len(payload.get("batch", [])) if isinstance(payload, dict) else 0
