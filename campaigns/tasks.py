"""Celery tasks of the campaigns app: thin wrappers around services (ids in, one service call, idempotent)."""

from __future__ import annotations

from celery import shared_task

from campaigns.services.runs import campaign_fire_recurring, campaigns_tick, run_start
from campaigns.services.sending import sends_process


@shared_task(name="campaigns.tick", ignore_result=True)
def tick() -> None:
    """Every minute from beat: due runs, winners, stale claims, due sends, finished runs."""
    campaigns_tick()


@shared_task(name="campaigns.fire_recurring", ignore_result=True)
def fire_recurring(campaign_id: int) -> None:
    """Run by a recurring campaign's own PeriodicTask: the run of the current occurrence, once."""
    campaign_fire_recurring(campaign_id=campaign_id)


@shared_task(name="campaigns.start_run", ignore_result=True)
def start_run(run_id: int) -> None:
    run_start(run_id=run_id)


@shared_task(name="campaigns.send_chunk", ignore_result=True)
def send_chunk(send_ids: list[int]) -> None:
    """Deliver one chunk of sends (claims only what is still due: a retry or duplicate sends nothing twice)."""
    sends_process(send_ids=send_ids)
