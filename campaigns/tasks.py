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


@shared_task(name="campaigns.ads_reconsent_notify", ignore_result=True)
def ads_reconsent_notify() -> None:
    """Daily from beat: the 2-year advertising-consent notices that are due (sent once per contact and period)."""
    from campaigns.services.reconsent import ads_reconsent_notify as notify

    notify()


@shared_task(name="campaigns.attribute_conversions", ignore_result=True)
def attribute_conversions() -> None:
    """From beat: attribute the goal events stored since the last pass to sends (idempotent, incremental)."""
    from campaigns.services.attribution import conversions_attribute

    conversions_attribute()


@shared_task(name="campaigns.store_run_figures", ignore_result=True)
def store_run_figures() -> None:
    """Hourly from beat: the report figures of settled runs, counted once and stored (refreshed daily for 30 days)."""
    from campaigns.services.run_figures import runs_store_figures

    runs_store_figures()


@shared_task(name="campaigns.rebuild_conversions", ignore_result=True)
def rebuild_conversions(campaign_id: int) -> None:
    """After a campaign's goal, window or basis changed: its conversions counted again by the new rule."""
    from campaigns.models import Campaign
    from campaigns.services.attribution import conversions_rebuild

    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is not None:
        conversions_rebuild(campaign=campaign)


@shared_task(name="campaigns.deliver_notifications", ignore_result=True)
def deliver_notifications(notification_ids: list[int]) -> None:
    """Deliver due team notifications (Slack, webhooks); claims each, so a duplicate task sends nothing twice."""
    from campaigns.services.notifications import notifications_deliver

    notifications_deliver(notification_ids=notification_ids)
