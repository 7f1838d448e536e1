from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JourneysConfig(AppConfig):
    """Journeys, steps, enrollments, the tick that advances them, and playbooks."""

    name = "journeys"
    verbose_name = _("Journeys")

    def ready(self) -> None:
        from journeys import receivers  # noqa: F401  (connects domain-signal receivers)
