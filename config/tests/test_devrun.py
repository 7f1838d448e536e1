"""``make run``'s runner (config.devrun): a beat that swallowed the first SIGTERM is stopped by a second one."""

from __future__ import annotations

import sys
import time

import pytest

from config import devrun

#: A stand-in for a beat caught by SIGTERM during its start-up: the first SIGTERM is lost, the second stops it.
STUBBORN = (
    "import signal, sys, time\n"
    "seen = []\n"
    "def term(*_):\n"
    "    seen.append(1)\n"
    "    if len(seen) > 1: sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, term)\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)


def runner_with(name: str, monkeypatch) -> devrun.Runner:
    monkeypatch.setattr(devrun, "RESIGNAL_SECONDS", 0.5)
    command = f"{sys.executable} -c \"exec('''{STUBBORN}''')\""
    runner = devrun.Runner([devrun.Process(name, command)], stop_timeout=5, colour=False)
    runner.start()
    time.sleep(0.5)  # its signal handler is installed
    return runner


@pytest.mark.parametrize(("name", "killed"), [("beat", False), ("worker", True)])
def test_beat_is_signalled_again_until_it_stops(name, killed, monkeypatch, capsys):
    runner = runner_with(name, monkeypatch)
    started = time.monotonic()
    runner.stop("test")
    output = capsys.readouterr().out
    assert ("killing" in output) is killed  # a worker is signalled once (a repeat may be a cold stop)
    if not killed:
        assert time.monotonic() - started < 3
        assert runner.processes[0].popen.returncode == 0
