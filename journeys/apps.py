from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JourneysConfig(AppConfig):
    """Journeys, steps, enrollments, the tick that advances them, and playbooks."""

    name = "journeys"
    verbose_name = _("Journeys")

    def ready(self) -> None:
        from crm.audit import audit_register
        from journeys import receivers  # noqa: F401  (connects domain-signal receivers)
        from journeys.models import Journey, LeadForm, Step

        # Who changed a journey, its steps or a lead form, and what (lifecycle changes are saves of the status).
        audit_register(Journey, exclude=("updated_at",))
        audit_register(Step)
        audit_register(LeadForm, exclude=("typeform_secret",))
