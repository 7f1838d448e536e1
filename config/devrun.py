"""``make run``'s process runner: starts the processes of ``Procfile.dev`` together, prefixes their output, and on
Ctrl-C (or SIGTERM) stops them all cleanly.

Why not honcho or foreman: they give processes a fixed 5 seconds to stop and then SIGKILL them, while a Celery
worker's warm shutdown (finish the running task, acknowledge it) can take longer on a busy machine; a task killed
mid-way would be redelivered, but a clean stop is what an operator expects from Ctrl-C. Here each process runs in
its own session, so the terminal's SIGINT reaches only this runner, which then sends SIGTERM to every process group
and waits up to ``LOOP_STOP_TIMEOUT`` seconds (default 30) before it kills what is left.

If one process exits on its own, the others are stopped too and the runner exits non-zero, so a crash is never
hidden behind a half-running system. Run as ``python -m config.devrun [Procfile]``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

COLOURS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m")
RESET = "\033[0m"
#: Processes sent SIGTERM again every RESIGNAL_SECONDS while they run on. Celery beat stops on SIGTERM by saving its
#: schedule from inside the signal handler; a SIGTERM that lands while beat is still writing the schedule at start-up
#: breaks that write, and django-celery-beat logs the error and carries on: beat would run until killed. A second
#: SIGTERM, once the start-up is over, stops it cleanly. (Workers are signalled once: a repeat may mean a cold stop.)
RESIGNAL = {"beat"}
RESIGNAL_SECONDS = 5.0


@dataclass
class Process:
    name: str
    command: str
    popen: subprocess.Popen | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


def read_procfile(path: Path) -> list[Process]:
    processes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise SystemExit(f"{path}:{number}: expected 'name: command', got {line!r}")
        processes.append(Process(name.strip(), command.strip()))
    if not processes:
        raise SystemExit(f"{path}: no processes")
    return processes


class Runner:
    def __init__(self, processes: list[Process], *, stop_timeout: float, colour: bool):
        self.processes = processes
        self.stop_timeout = stop_timeout
        self.colour = colour
        self.width = max(len(p.name) for p in processes)
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def say(self, name: str, text: str, index: int = -1) -> None:
        prefix = f"{name:<{self.width}} | "
        if self.colour and index >= 0:
            prefix = f"{COLOURS[index % len(COLOURS)]}{prefix}{RESET}"
        with self.lock:
            sys.stdout.write(prefix + text.rstrip("\n") + "\n")
            sys.stdout.flush()

    def _pump(self, index: int, process: Process) -> None:
        assert process.popen is not None
        assert process.popen.stdout is not None
        for raw in iter(process.popen.stdout.readline, b""):
            self.say(process.name, raw.decode("utf-8", "replace"), index)

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for index, process in enumerate(self.processes):
            # `exec` makes the program itself the session leader (dash would otherwise stay in between and take the
            # SIGTERM meant for the program).
            process.popen = subprocess.Popen(  # noqa: S602 (the Procfile is the project's own)
                f"exec {process.command}",
                shell=True,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            process.reader = threading.Thread(target=self._pump, args=(index, process), daemon=True)
            process.reader.start()
            self.say("system", f"{process.name} started (pid {process.popen.pid}): {process.command}")

    def _signal_all(self, sig: int, *, group: bool) -> None:
        """SIGTERM goes to each process itself (a Celery worker stops its own pool); SIGKILL to its whole group."""
        for process in self.processes:
            if process.popen is not None and process.popen.poll() is None:
                try:
                    if group:
                        os.killpg(process.popen.pid, sig)
                    else:
                        process.popen.send_signal(sig)
                except ProcessLookupError:
                    pass

    def stop(self, reason: str) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.say("system", f"{reason}: stopping all processes (up to {self.stop_timeout:.0f} s)")
        self._signal_all(signal.SIGTERM, group=False)
        deadline = time.monotonic() + self.stop_timeout
        again = time.monotonic() + RESIGNAL_SECONDS
        while time.monotonic() < deadline and any(p.popen.poll() is None for p in self.processes if p.popen):
            if time.monotonic() >= again:  # see RESIGNAL: a beat still starting may have swallowed the first one
                again += RESIGNAL_SECONDS
                for process in self.processes:
                    if process.name in RESIGNAL and process.popen and process.popen.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            process.popen.send_signal(signal.SIGTERM)
            time.sleep(0.1)
        left = [p.name for p in self.processes if p.popen and p.popen.poll() is None]
        if left:
            self.say("system", f"still running after {self.stop_timeout:.0f} s, killing: {', '.join(left)}")
            self._signal_all(signal.SIGKILL, group=True)
        for process in self.processes:
            if process.popen is not None:
                process.popen.wait()
            if process.reader is not None:
                process.reader.join(timeout=2)
        # Make sure nothing a process left in its group survives it.
        for process in self.processes:
            if process.popen is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.popen.pid, signal.SIGKILL)

    def run(self) -> int:
        interrupted = threading.Event()

        def on_signal(signum, _frame):
            interrupted.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        self.start()
        while not interrupted.is_set():
            exited = [p for p in self.processes if p.popen and p.popen.poll() is not None]
            if exited:
                process = exited[0]
                self.stop(f"{process.name} exited with code {process.popen.returncode}")
                return 1
            interrupted.wait(0.2)
        self.stop("interrupted")
        return 0


def main(argv: list[str]) -> int:
    procfile = Path(argv[1] if len(argv) > 1 else "Procfile.dev")
    stop_timeout = float(os.environ.get("LOOP_STOP_TIMEOUT", "30"))
    runner = Runner(read_procfile(procfile), stop_timeout=stop_timeout, colour=sys.stdout.isatty())
    return runner.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
