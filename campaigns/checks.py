"""System checks (``manage.py check``, run at every start): a provider chosen in ``CHANNEL_BACKENDS`` has its
credentials, and its receipts can reach us. Errors here stop the process before a campaign fails at send time."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register

#: Backend name → (settings it needs, the environment variables that set them).
REQUIRED = {
    "solapi": (("LOOP_SOLAPI_API_KEY", "LOOP_SOLAPI_API_SECRET"), "SOLAPI_API_KEY, SOLAPI_API_SECRET"),
    "solapi_kakao": (("LOOP_SOLAPI_API_KEY", "LOOP_SOLAPI_API_SECRET"), "SOLAPI_API_KEY, SOLAPI_API_SECRET"),
    "twilio": (("LOOP_TWILIO_ACCOUNT_SID", "LOOP_TWILIO_AUTH_TOKEN"), "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN"),
}


@register()
def provider_settings(app_configs=None, **kwargs) -> list:
    problems = []
    if getattr(settings, "LOOP_CHANNEL_DRY_RUN", False):
        return problems
    chosen = set(getattr(settings, "LOOP_CHANNEL_BACKENDS", {}).values())
    for backend in sorted(chosen & set(REQUIRED)):
        names, variables = REQUIRED[backend]
        if not all(getattr(settings, name, "") for name in names):
            problems.append(
                Error(f"CHANNEL_BACKENDS uses {backend!r} but {variables} are not set.", id="campaigns.E001")
            )
    if chosen & {"solapi", "solapi_kakao"} and not getattr(settings, "LOOP_SOLAPI_WEBHOOK_SECRET", ""):
        problems.append(
            Warning(
                "SOLAPI_WEBHOOK_SECRET is not set: Solapi delivery reports are refused, sends stay 'sent'.",
                id="campaigns.W001",
            )
        )
    if chosen & {"twilio"} and settings.LOOP_PUBLIC_URL.startswith("http://localhost"):
        problems.append(
            Warning("PUBLIC_URL is localhost: Twilio cannot deliver status callbacks.", id="campaigns.W002")
        )
    return problems
