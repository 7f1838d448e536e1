"""Receivers of the campaigns app (connected in AppConfig.ready())."""

from __future__ import annotations

from anymail.signals import inbound, tracking
from django.db.models.signals import post_delete
from django.dispatch import receiver

from campaigns.models import Campaign
from campaigns.services.erasure import contact_messages_erase
from crm.signals import contact_erased, contacts_merging


@receiver(post_delete, sender=Campaign, dispatch_uid="campaigns.campaign_schedule_remove")
def remove_schedule_of_deleted_campaign(sender, instance: Campaign, **kwargs) -> None:
    """However a campaign is deleted (admin bulk delete, cascade, shell), its PeriodicTask goes with it."""
    from campaigns.services.schedules import campaign_schedule_remove

    campaign_schedule_remove(campaign_id=instance.pk)


@receiver(tracking, dispatch_uid="campaigns.email_receipts")
def apply_email_receipt(sender, event, esp_name: str, **kwargs) -> None:
    """anymail's normalized tracking webhook event (any ESP): update the send, suppress on bounce/complaint."""
    from campaigns.services.receipts import receipt_apply

    receipt_apply(event=event, esp_name=esp_name)


@receiver(inbound, dispatch_uid="campaigns.email_unsubscribe_mailto")
def apply_mailto_unsubscribe(sender, event, esp_name: str, **kwargs) -> None:
    """An email to ``UNSUBSCRIBE_MAILTO`` (List-Unsubscribe's mailto: form) with the signed token in its subject."""
    from campaigns.services.suppressions import unsubscribe_by_mail

    unsubscribe_by_mail(subject=event.message.subject or "", esp_name=esp_name)


@receiver(contact_erased, dispatch_uid="campaigns.contact_erased")
def on_contact_erased(sender, contact_id: int, **kwargs) -> None:
    """Anonymize the contact's sends, outbox messages, receipts and suppressions (in the erasure's transaction)."""
    contact_messages_erase(contact_id=contact_id)


@receiver(contacts_merging, dispatch_uid="campaigns.contacts_merging")
def move_sends_of_merged_contact(sender, from_contact_id: int, into_contact_id: int, **kwargs) -> None:
    """Two profiles of one person merge: what the merged one received stays on record for the survivor."""
    from campaigns.services.contacts import campaign_rows_merge

    campaign_rows_merge(from_contact_id=from_contact_id, into_contact_id=into_contact_id)
