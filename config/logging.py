"""Structured logging: one line per event, as JSON (production) or key=value (development), secrets redacted.

Every log record, whether it comes from ``structlog.get_logger()`` or from the standard library (Django, Celery,
gunicorn), passes through the same processor chain and the same redaction step, so a password, an API key or an
``Authorization`` header can never reach a log line by accident.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "[redacted]"

#: Keys whose values are never logged, wherever they appear in an event (nested dicts included).
SECRET_KEY_PATTERN = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|write[_-]?key|authorization|cookie|session|signature|credential)",
    re.IGNORECASE,
)
#: Values that are secrets whatever key they sit under: our API keys, bearer/basic credentials, URL passwords.
SECRET_VALUE_PATTERNS = (
    (re.compile(r"\bloop_[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"), r"\1 " + REDACTED),
    (re.compile(r"(?i)([a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
)


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        for pattern, replacement in SECRET_VALUE_PATTERNS:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, Mapping):
        return {k: (REDACTED if SECRET_KEY_PATTERN.search(str(k)) else redact_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secret keys and secret-looking values anywhere in the event."""
    for key in list(event_dict):
        if key in ("event", "level", "logger", "timestamp"):
            if key == "event":
                event_dict[key] = redact_value(event_dict[key])
            continue
        if SECRET_KEY_PATTERN.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(event_dict[key])
    return event_dict


def drop_request_object(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Django attaches the HttpRequest to some records; keep only its method and path, never its body or headers."""
    request = event_dict.pop("request", None)
    if request is not None and hasattr(request, "method"):
        event_dict.setdefault("http_method", request.method)
        event_dict.setdefault("path", getattr(request, "path", ""))
    event_dict.pop("server_time", None)
    return event_dict


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    drop_request_object,
]


def build_logging_config(*, level: str, fmt: str) -> dict[str, Any]:
    """Return a ``LOGGING`` dict and configure structlog to render through the standard library."""
    if fmt not in ("json", "console"):
        raise ValueError(f"LOG_FORMAT must be 'json' or 'console'; got {fmt!r}")
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "logger", "event"])
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": SHARED_PROCESSORS,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    redact_secrets,
                    renderer,
                ],
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django": {"level": level, "propagate": True},
            # Never log SQL with parameters (they hold personal data), even when LOG_LEVEL=DEBUG.
            "django.db.backends": {"level": "INFO", "propagate": True},
            "celery": {"level": level, "propagate": True},
        },
    }


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


__all__ = ["REDACTED", "build_logging_config", "get_logger", "redact_secrets", "redact_value"]
