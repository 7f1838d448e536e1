"""Celery tasks of the crm app: thin wrappers around services (ids in, one service call, idempotent)."""

from celery import shared_task

from config.logging import get_logger
from crm import services
from crm.services.event_processing import events_backlog, events_process_pending
from crm.services.imports import contact_import_run_apply, contact_import_run_preview

logger = get_logger(__name__)

#: The sweep logs a warning when the oldest queued event has waited longer than this many seconds.
BACKLOG_WARNING_SECONDS = 60


@shared_task(name="crm.record_heartbeat", ignore_result=True)
def record_heartbeat(name: str = "beat") -> None:
    """Record that a periodic schedule fired: celery-beat schedules this, /healthz and the admin show it."""
    services.heartbeat_record(name=name)


@shared_task(name="crm.contact_import_preview", ignore_result=True)
def contact_import_preview_task(import_id: int) -> None:
    """Preview a large uploaded contacts file (idempotent: only a pending import is planned)."""
    contact_import_run_preview(import_id=import_id)


@shared_task(name="crm.contact_import_apply", ignore_result=True)
def contact_import_apply_task(import_id: int) -> None:
    """Apply a confirmed large import (idempotent: a redelivered task resumes after the last applied batch)."""
    contact_import_run_apply(import_id=import_id)


@shared_task(name="crm.events_process", ignore_result=True)
def events_process_task() -> None:
    """Apply stored events to derived state until none is left. Queued after the API stores events (at most one
    queued at a time); idempotent: a redelivered or concurrent run finds nothing, or another worker at it."""
    events_process_pending()


@shared_task(name="crm.events_sweep", ignore_result=True)
def events_sweep_task() -> None:
    """Every few seconds (celery-beat): apply events whose task was lost, and warn when the backlog grows old."""
    backlog = events_backlog()
    age = backlog.oldest_age()
    if backlog.failed or (age is not None and age.total_seconds() > BACKLOG_WARNING_SECONDS):
        logger.warning(
            "events.backlog",
            pending=backlog.pending,
            failed=backlog.failed,
            oldest_seconds=round(age.total_seconds(), 1) if age is not None else None,
        )
    if backlog.pending:
        events_process_pending()
