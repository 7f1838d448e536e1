from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CrmConfig(AppConfig):
    """Contacts, consent, devices, events, commerce state, segments, API keys and the ingest API.

    Knows nothing of campaigns or journeys: stored events are announced through ``crm.signals.events_recorded``.
    """

    name = "crm"
    verbose_name = _("Contacts")

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_migrate

        from crm import preferences, roles
        from crm.audit import audit_register
        from crm.models import ApiKey, Consent, Segment

        post_migrate.connect(roles.on_post_migrate, dispatch_uid="loop-sync-roles")
        user_logged_in.connect(preferences.on_user_logged_in, dispatch_uid="loop-user-language")
        audit_register(Segment, exclude=("last_count", "last_counted_at"))
        audit_register(Consent)
        audit_register(ApiKey, exclude=("last_used_at",))
