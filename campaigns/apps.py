from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CampaignsConfig(AppConfig):
    """Campaigns, runs, variants, sends, channels and the send pipeline."""

    name = "campaigns"
    verbose_name = _("Campaigns")

    def ready(self) -> None:
        from campaigns import checks, receivers  # noqa: F401  (system checks; domain-signal receivers)
        from campaigns.models import Destination, KakaoTemplate, SenderProfile, Variant
        from crm.audit import audit_register

        audit_register(Variant)
        # Who changed a caller number, a KakaoTalk channel or an approved template, and when.
        audit_register(SenderProfile)
        audit_register(KakaoTemplate)
        # Channel settings: who changed a destination and what, never its URL (Slack's holds a secret) or secret.
        audit_register(Destination, exclude=("url", "secret", "updated_at"))
