"""Celery tasks of the crm app: thin wrappers around services (ids in, one service call, idempotent)."""

from celery import shared_task

from crm import services


@shared_task(name="crm.record_heartbeat", ignore_result=True)
def record_heartbeat(name: str = "beat") -> None:
    """Record that a periodic schedule fired: celery-beat schedules this, /healthz and the admin show it."""
    services.heartbeat_record(name=name)
