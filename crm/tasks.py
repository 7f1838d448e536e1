"""Celery tasks of the crm app: thin wrappers around services (ids in, one service call, idempotent)."""

from celery import shared_task

from crm import services
from crm.services.imports import contact_import_run_apply, contact_import_run_preview
from crm.services.segments import segment_sizes_record


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


@shared_task(name="crm.segment_sizes_record", ignore_result=True)
def segment_sizes_record_task() -> None:
    """Record today's member count of every segment (beat runs it daily; idempotent: one row per segment and day)."""
    segment_sizes_record()
