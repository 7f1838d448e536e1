from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CrmConfig(AppConfig):
    """Contacts, consent, devices, events, commerce state, segments, API keys and the ingest API.

    Knows nothing of campaigns or journeys: stored events are announced through ``crm.signals.events_recorded``.
    """

    name = "crm"
    verbose_name = _("Contacts")
