"""Receivers of the campaigns app (connected in AppConfig.ready())."""

from __future__ import annotations

from django.db.models.signals import post_delete
from django.dispatch import receiver

from campaigns.models import Campaign


@receiver(post_delete, sender=Campaign, dispatch_uid="campaigns.campaign_schedule_remove")
def remove_schedule_of_deleted_campaign(sender, instance: Campaign, **kwargs) -> None:
    """However a campaign is deleted (admin bulk delete, cascade, shell), its PeriodicTask goes with it."""
    from campaigns.services.schedules import campaign_schedule_remove

    campaign_schedule_remove(campaign_id=instance.pk)
