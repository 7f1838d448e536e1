"""config/logging.py: one line per event, JSON that parses, and secrets redacted from every kind of log record.

The formatter under test is built from ``build_logging_config()`` exactly as ``dictConfig`` builds it, and attached
to a private logger, so the test process's own logging configuration is left alone. One test also runs a fresh
interpreter with the real settings (``LOG_FORMAT=json``) and reads its stderr.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from config.logging import REDACTED, build_logging_config, get_logger, redact_text, redact_value

BASE_DIR = Path(__file__).resolve().parents[2]


class Captured:
    def __init__(self, fmt: str):
        self.fmt = fmt
        self.name = f"loop.tests.logging.{uuid.uuid4().hex[:8]}"
        self.stream = io.StringIO()
        self.structlog = get_logger(self.name)
        self.stdlib = logging.getLogger(self.name)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return self.text.splitlines()

    def events(self) -> list[dict]:
        assert self.fmt == "json"
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def capture():
    """capture(fmt) -> Captured: a private logger whose records go through the configured formatter."""
    saved_structlog = structlog.get_config()
    attached: list[tuple[logging.Logger, logging.Handler]] = []

    def attach(fmt: str) -> Captured:
        config = build_logging_config(level="DEBUG", fmt=fmt)
        spec = dict(config["formatters"]["structured"])
        formatter = spec.pop("()")(**spec)  # what logging.config.dictConfig does with a "()" factory
        result = Captured(fmt)
        handler = logging.StreamHandler(result.stream)
        handler.setFormatter(formatter)
        result.stdlib.addHandler(handler)
        result.stdlib.setLevel(logging.DEBUG)
        result.stdlib.propagate = False
        attached.append((result.stdlib, handler))
        return result

    yield attach
    for logger, handler in attached:
        logger.removeHandler(handler)
    structlog.configure(**saved_structlog)


@pytest.fixture(params=["json", "console"])
def captured(request, capture) -> Captured:
    return capture(request.param)


def raise_and_log(log: Callable, message: str) -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log(message)


# --- One line per event ------------------------------------------------------------------------------------------


def test_one_line_per_event_even_with_newlines_tracebacks_and_stacks(captured):
    captured.structlog.info("first line\nsecond line", note="a\nb")
    captured.stdlib.warning("stdlib first line\nstdlib second line")
    raise_and_log(captured.structlog.exception, "structlog failure")
    raise_and_log(captured.stdlib.exception, "stdlib failure")
    captured.stdlib.warning("with stack", stack_info=True)
    captured.structlog.info("with stack", stack_info=True)

    lines = captured.lines()
    assert len(lines) == 6, captured.text
    for line in lines[2:4]:
        assert "Traceback (most recent call last)" in line
        assert "ZeroDivisionError" in line
    assert "structlog failure" in lines[2]
    assert "stdlib failure" in lines[3]


def test_json_lines_parse_with_the_standard_fields(capture):
    captured = capture("json")
    captured.structlog.info("contact.imported", contact_id=42, tags=["vip", "한국어"])
    captured.stdlib.warning("plain %s message", "stdlib")
    raise_and_log(captured.stdlib.exception, "failed")

    imported, plain, failed = captured.events()
    assert imported["event"] == "contact.imported"
    assert imported["contact_id"] == 42
    assert imported["tags"] == ["vip", "한국어"], "non-ASCII is kept readable"
    assert imported["level"] == "info"
    assert imported["logger"] == captured.name
    assert imported["timestamp"].endswith("Z")
    assert plain["event"] == "plain stdlib message"
    assert plain["level"] == "warning"
    assert failed["level"] == "error"
    assert "ZeroDivisionError: division by zero" in failed["exception"]


def test_console_lines_are_key_value_with_the_event_first(capture):
    captured = capture("console")
    captured.structlog.info("contact.imported", contact_id=42)

    (line,) = captured.lines()
    assert line.startswith("timestamp=")
    assert "level='info'" in line
    assert f"logger='{captured.name}'" in line
    assert "event='contact.imported'" in line
    assert "contact_id=42" in line


# --- Secrets are redacted -----------------------------------------------------------------------------------------


class Secret(Exception):
    """An object whose repr() holds a secret, as a driver's exception or a connection object may."""


# (case id, how structlog logs it, how the standard library logs it, the secrets, what must survive)
CASES: list[tuple[str, Callable, Callable, list[str], list[str]]] = [
    (
        "password-token-authorization-kwargs",
        lambda log: log.info("login", password="hunter2-pw", token="tok-9f8e7d", authorization="Token abc-123-def"),
        lambda log: log.warning(
            "login", extra={"password": "hunter2-pw", "token": "tok-9f8e7d", "authorization": "Token abc-123-def"}
        ),
        ["hunter2-pw", "tok-9f8e7d", "abc-123-def"],
        ["login"],
    ),
    (
        "nested-api-key",
        lambda log: log.info("esp.configured", esp={"name": "ses", "auth": {"api_key": "AKIA-nested-42"}}),
        lambda log: log.warning(
            "esp.configured", extra={"esp": {"name": "ses", "auth": {"api_key": "AKIA-nested-42"}}}
        ),
        ["AKIA-nested-42"],
        ["esp.configured", "ses"],
    ),
    (
        "loop-api-key-in-message",
        lambda log: log.info("rejected key loop_0a1b2c3d_Zx9-Yw8_Vu7Ts6Rq5Po4Nm3Lk2Ji1 for source shop"),
        lambda log: log.warning("rejected key %s for source shop", "loop_0a1b2c3d_Zx9-Yw8_Vu7Ts6Rq5Po4Nm3Lk2Ji1"),
        ["Zx9-Yw8_Vu7Ts6Rq5Po4Nm3Lk2Ji1", "0a1b2c3d_Zx9"],
        ["rejected key", "for source shop"],
    ),
    (
        "bearer-in-message",
        lambda log: log.info("webhook called with Bearer xyzBEARER123 from shop"),
        lambda log: log.warning("webhook called with Bearer %s from shop", "xyzBEARER123"),
        ["xyzBEARER123"],
        ["Bearer", "from shop"],
    ),
    (
        "basic-in-message",
        lambda log: log.info("esp answered 401 for Basic dXNlcjpwYXNzd29yZA=="),
        lambda log: log.warning("esp answered 401 for Basic %s", "dXNlcjpwYXNzd29yZA=="),
        ["dXNlcjpwYXNzd29yZA"],
        ["esp answered 401", "Basic"],
    ),
    (
        "url-password-in-message",
        lambda log: log.info("broker redis://:url-secret-77@cache.internal:6379/0 unreachable"),
        lambda log: log.warning("broker %s unreachable", "amqp://loop:url-secret-77@mq.internal:5672//"),
        ["url-secret-77"],
        ["internal", "unreachable"],
    ),
    (
        "key-value-in-message",
        lambda log: log.info("retrying with password=pw-inline-1 and token: tk-inline-2 for contact_id=42"),
        lambda log: log.warning(
            "retrying with password=%s and token: %s for contact_id=42", "pw-inline-1", "tk-inline-2"
        ),
        ["pw-inline-1", "tk-inline-2"],
        ["retrying with password=", "contact_id=42"],
    ),
    (
        "dict-in-message",
        lambda log: log.info(f"config { ({'api_key': 'dict-key-5', 'region': 'ap-northeast-2'}) }"),
        lambda log: log.warning("config %s", {"api_key": "dict-key-5", "region": "ap-northeast-2"}),
        ["dict-key-5"],
        ["ap-northeast-2"],
    ),
    (
        "object-with-secret-in-its-repr",
        lambda log: log.info("broker.down", error=Secret("redis://:obj-secret-3@cache.internal/0")),
        lambda log: log.warning("broker.down", extra={"error": Secret("redis://:obj-secret-3@cache.internal/0")}),
        ["obj-secret-3"],
        ["broker.down", "cache.internal"],
    ),
    (
        "exception-text",
        lambda log: raise_and_log_secret(log.exception),
        lambda log: raise_and_log_secret(log.exception),
        ["exc-secret-8", "exc-token-9"],
        ["Traceback", "ConnectionError", "db.internal"],
    ),
]


def raise_and_log_secret(log: Callable) -> None:
    try:
        raise ConnectionError("postgres://loop:exc-secret-8@db.internal/loop refused; token=exc-token-9")
    except ConnectionError:
        log("database.unreachable")


@pytest.mark.parametrize("source", ["structlog", "stdlib"])
@pytest.mark.parametrize(("case", "via_structlog", "via_stdlib", "secrets", "kept"), CASES, ids=[c[0] for c in CASES])
def test_secrets_are_redacted(captured, source, case, via_structlog, via_stdlib, secrets, kept):
    if source == "structlog":
        via_structlog(captured.structlog)
    else:
        via_stdlib(captured.stdlib)

    text = captured.text
    assert len(captured.lines()) == 1, text
    assert REDACTED in text, text
    for secret in secrets:
        assert secret not in text, f"{case}: {secret!r} leaked into {text}"
    for part in kept:
        assert part in text, f"{case}: redaction removed {part!r}, which is not a secret: {text}"
    if captured.fmt == "json":
        captured.events()  # still valid JSON after redaction


def test_redaction_keeps_ordinary_values_and_is_idempotent():
    event = {"contact_id": 42, "ratio": 0.5, "ok": True, "missing": None, "tags": ("vip", "new"), "event": "x"}
    assert redact_value(event) == event
    text = "Authorization: Bearer abc.def; password='p w'; redis://u:pw@h/0; token=t1&x=1; loop_abcdefghijklmnop42"
    once = redact_text(text)
    assert redact_text(once) == once
    for secret in ("abc.def", "p w", ":pw@", "t1", "abcdefghijklmnop42"):
        assert secret not in once, once
    assert "x=1" in once


def test_the_configured_process_logs_redacted_json_lines(tmp_path):
    """The real settings, in a fresh interpreter: root logger, dictConfig and all."""
    code = """
import logging, django
django.setup()
from config.logging import get_logger
logging.getLogger("django.request").warning("upstream redis://:proc-secret-1@cache/0 said\\nno")
get_logger("crm.api").info("api.key_rejected", authorization="Bearer proc-secret-2", key="loop_abcd1234_proc-3xx-xx")
try:
    raise ValueError("token=proc-secret-4")
except ValueError:
    logging.getLogger("celery").exception("task failed")
"""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOOP_VAR_DIR": str(tmp_path / "var"),
        "LOG_FORMAT": "json",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    request, rejected, failed = (json.loads(line) for line in lines)
    assert request["logger"] == "django.request"
    assert request["event"] == f"upstream redis://:{REDACTED}@cache/0 said\nno"
    assert rejected["authorization"] == REDACTED
    assert rejected["key"] == REDACTED
    assert failed["level"] == "error"
    assert "ValueError" in failed["exception"]
    assert "proc-secret" not in result.stderr
