"""Domain-signal receivers of the journeys app (connected in AppConfig.ready())."""

from django.dispatch import receiver

from crm.signals import contact_erased, events_recorded
from journeys.services.enrollment import journeys_handle_events
from journeys.services.erasure import contact_journeys_erase


@receiver(events_recorded, dispatch_uid="journeys.events_recorded")
def on_events_recorded(sender, event_ids, **kwargs) -> None:
    """Enter, exit and convert journeys for a batch of stored events (inside the batch's transaction)."""
    journeys_handle_events(event_ids=event_ids)


@receiver(contact_erased, dispatch_uid="journeys.contact_erased")
def on_contact_erased(sender, contact_id: int, **kwargs) -> None:
    """Anonymize the contact's enrollments and their logs (in the erasure's transaction)."""
    contact_journeys_erase(contact_id=contact_id)
