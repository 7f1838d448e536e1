"""Structured logging: one line per event, as JSON (production) or key=value (development), secrets redacted.

Every log record, whether it comes from ``structlog.get_logger()`` or from the standard library (Django, Celery,
gunicorn), passes through the same processor chain and the same redaction step, so a password, an API key or an
``Authorization`` header can never reach a log line by accident.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog

REDACTED = "[redacted]"

#: Keys whose values are never logged, wherever they appear in an event (nested dicts included).
SECRET_KEY_PATTERN = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|write[_-]?key|authorization|cookie|session|signature|credential)",
    re.IGNORECASE,
)
#: Inside free text (a message, an exception, the repr of an object): ``password=…``, ``token: …``,
#: ``'api_key': '…'``, ``X-Api-Key: …``, ``?access_token=…``. The name is kept, the value (quoted or not) is masked.
SECRET_IN_TEXT_PATTERN = re.compile(
    r"""(?ix)
    (?P<name>\b[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|write[_-]?key|authorization|cookie
        |credentials?|signature|session[_-]?(?:id|key))[\w-]*)
    (?P<separator>["']?\s*[:=]\s*)
    (?!\[redacted\])
    (?P<value>"[^"]*"|'[^']*'|(?:(?:bearer|basic|token|digest)\s+)?[^\s"',;&)}\]]+)
    """
)
#: Values that are secrets whatever key they sit under: our API keys, bearer/basic credentials, URL passwords.
SECRET_VALUE_PATTERNS = (
    (re.compile(r"\bloop_[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+(?!\[redacted\])[A-Za-z0-9._~+/=\-]+"), r"\1 " + REDACTED),
    (re.compile(r"(?i)([a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
)
#: Values a renderer writes as they are; anything else is rendered through ``repr()`` and redacted as text.
PLAIN_TYPES = (int, float, bool, type(None))


def _mask_in_text(match: re.Match) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match['name']}{match['separator']}{quote}{REDACTED}{quote}"


#: Settings whose values are secrets (``SECRET_KEY``, ``ANYMAIL["MAILGUN_API_KEY"]``, ``SLACK_WEBHOOK_URL``...).
SECRET_SETTING_PATTERN = re.compile(r"(SECRET|PASSWORD|TOKEN|_KEY$|^KEY$|WEBHOOK_URL|CREDENTIALS?)")
#: Settings whose names look secret but hold none (class paths).
NOT_SECRET_SETTINGS = frozenset({"PASSWORD_HASHERS", "AUTH_PASSWORD_VALIDATORS", "PASSWORD_RESET_TIMEOUT"})
#: Shorter values are not masked as text (they would mask ordinary words).
MIN_SECRET_LENGTH = 8
#: (the settings object they were read from, the secrets): read again when settings change (override_settings).
_configured: tuple[object, tuple[str, ...]] | None = None


def _secret_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        found = [value]
        parts = urlsplit(value) if "://" in value else None
        if parts is not None and len(parts.path) >= MIN_SECRET_LENGTH:
            # requests' exceptions name the host and the path apart: a secret URL's path alone is a secret too.
            found.append(parts.path + (f"?{parts.query}" if parts.query else ""))
            found.append(parts.path)
        return found
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _secret_strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _secret_strings(v)]
    return []


def configured_secrets() -> tuple[str, ...]:
    """The values of every secret setting (nested dicts such as ``ANYMAIL`` included), longest first. They are
    masked wherever they appear in a log line: in an exception's message, a URL, a provider's answer."""
    global _configured
    from django.conf import settings

    if not settings.configured:
        return ()
    wrapped = settings._wrapped
    if _configured is not None and _configured[0] is wrapped:
        return _configured[1]
    found: set[str] = set()
    for name in dir(settings):
        if not name.isupper() or name in NOT_SECRET_SETTINGS:
            continue
        value = getattr(settings, name, None)
        if SECRET_SETTING_PATTERN.search(name):
            found.update(_secret_strings(value))
        elif isinstance(value, Mapping):
            for key, inner in value.items():
                if SECRET_SETTING_PATTERN.search(str(key).upper()):
                    found.update(_secret_strings(inner))
    secrets = tuple(sorted((s for s in found if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True))
    _configured = (wrapped, secrets)
    return secrets


def redact_text(text: str) -> str:
    for secret in configured_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = SECRET_IN_TEXT_PATTERN.sub(_mask_in_text, text)
    for pattern, replacement in SECRET_VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, PLAIN_TYPES):
        return value
    if isinstance(value, Mapping):
        return {k: (REDACTED if SECRET_KEY_PATTERN.search(str(k)) else redact_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    # An exception, a URL object, a connection...: its repr (what the renderer would print) may hold a secret.
    return redact_text(repr(value))


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


def _at_least_info(level: str) -> str:
    number = logging.getLevelName(level.upper())
    return "INFO" if isinstance(number, int) and number < logging.INFO else level


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
            # urllib3 logs every request line (method, full path and query) at DEBUG: a secret webhook URL or a token
            # in a query string would be in it.
            "urllib3": {"level": _at_least_info(level), "propagate": True},
        },
    }


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


__all__ = ["REDACTED", "build_logging_config", "get_logger", "redact_secrets", "redact_text", "redact_value"]
