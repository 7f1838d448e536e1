"""Celery tasks of the crm app: thin wrappers around services (ids in, one service call, idempotent)."""

from celery import shared_task

from crm import services
from crm.services.event_processing import events_process_pending, events_sweep
from crm.services.imports import contact_import_run_apply, contact_import_run_preview
from crm.services.ingest import PROCESS_TRIGGER_MEMO_SECONDS
from crm.services.segments import segment_sizes_record

#: The processing task looks once more this long after finding nothing: longer than a web process's trigger memo,
#: so an event whose request relied on this task (and queued none) is never left for the sweep.
PROCESS_LINGER_SECONDS = 2 * PROCESS_TRIGGER_MEMO_SECONDS


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
    """Apply a confirmed large import (idempotent: a completed import is left alone; a redelivered task applies it
    again from the start, the interrupted transaction having been rolled back)."""
    contact_import_run_apply(import_id=import_id)


@shared_task(name="crm.events_process", ignore_result=True)
def events_process_task() -> None:
    """Apply stored events to derived state until none is left. Queued after the API stores events (at most one
    queued at a time); idempotent: a redelivered or concurrent run finds nothing, or another worker at it."""
    events_process_pending(linger=PROCESS_LINGER_SECONDS)


@shared_task(name="crm.events_sweep", ignore_result=True)
def events_sweep_task() -> None:
    """Every few seconds (celery-beat): apply events whose task was lost; warn when the backlog grows old."""
    events_sweep()


@shared_task(name="crm.segment_sizes_record", ignore_result=True)
def segment_sizes_record_task() -> None:
    """Record today's member count of every segment (beat runs it daily; idempotent: one row per segment and day)."""
    segment_sizes_record()
