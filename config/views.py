"""Operational endpoints that are not part of any app: health checks."""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app as celery_app
from config.logging import get_logger

logger = get_logger(__name__)


def check_database() -> dict:
    started = time.monotonic()
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not reachable"
        logger.warning("healthz.database_unreachable", error=type(exc).__name__)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def check_broker() -> dict:
    started = time.monotonic()
    url = settings.CELERY_BROKER_URL
    # Only the scheme is ever reported or logged: the rest of the URL may hold a password.
    transport = url.split("://", 1)[0] if "://" in url else "unknown"
    try:
        if transport == "filesystem":
            # The embedded broker is reachable when its message folder exists and this process may write to it.
            folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
            if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
                raise OSError("broker folder missing or not writable")
        else:
            # Settings are read at call time (not from the Celery app's cached configuration). One attempt, bounded
            # by the connection timeout: a load balancer's probe must answer quickly, not retry.
            timeout = settings.CELERY_BROKER_CONNECTION_TIMEOUT
            with celery_app.connection_for_write(url=url, connect_timeout=timeout) as conn:
                conn.ensure_connection(max_retries=0, timeout=timeout)
    except Exception as exc:
        logger.warning("healthz.broker_unreachable", transport=transport, error=type(exc).__name__)
        return {"ok": False, "transport": transport, "error": type(exc).__name__}
    return {"ok": True, "transport": transport, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def event_backlog(database_ok: bool) -> dict:
    """Stored events not yet applied to derived state (informational: a lagging worker does not make this web
    process unhealthy, but monitoring should alert on it)."""
    if not database_ok:
        return {"pending": None, "failed": None, "oldest_seconds": None}
    from crm.services.event_processing import events_backlog

    try:
        backlog = events_backlog()
    except Exception as exc:
        logger.warning("healthz.backlog_unavailable", error=type(exc).__name__)
        return {"pending": None, "failed": None, "oldest_seconds": None}
    age = backlog.oldest_age()
    return {
        "pending": backlog.pending,
        "failed": backlog.failed,
        "oldest_seconds": round(age.total_seconds(), 1) if age is not None else 0.0,
    }


@never_cache
@require_GET
def healthz(request):
    """Database and broker reachability as JSON: 200 when both answer, 503 otherwise; plus the event processing
    backlog (``events``), for monitoring. No secrets, no auth."""
    checks = {"database": check_database(), "broker": check_broker()}
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "checks": checks,
            "events": event_backlog(checks["database"]["ok"]),
        },
        status=200 if healthy else 503,
    )


def not_found(request, exception=None):
    """404: the API answers in JSON like its other errors (``{"code", "message"}``); pages get Django's page."""
    if request.path.startswith("/api/"):
        from django.utils.translation import gettext

        return JsonResponse({"code": "not_found", "message": gettext("No such API endpoint or object.")}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
