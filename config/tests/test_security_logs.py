"""Secrets never reach a log line: API calls with keys (Basic, Bearer, ``writeKey`` in the body, unknown and revoked
keys), ESP webhooks with their basic-auth secret and signing key (right and wrong), provider calls with API keys and
secret URLs (Mailgun, journey webhooks, Slack, the summary model) that fail. Everything is logged at DEBUG, rendered
by the project's own formatter (JSON and key=value), and the output and the process's stdout/stderr are scanned for
every raw secret."""

from __future__ import annotations

import base64
import io
import json
import logging
import logging.config

import pytest
import requests
import responses
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client

from campaigns.channels import backend_for
from campaigns.tests.factories import SendFactory
from campaigns.tests.test_email_backend import message_for
from campaigns.tests.test_email_receipts import MAILGUN_URL as MAILGUN_WEBHOOK
from campaigns.tests.test_email_receipts import mailgun_event
from config.logging import REDACTED, build_logging_config, redact_text
from crm.models import ApiKey, Source
from crm.services.apikeys import api_key_create, api_key_revoke
from journeys.actions import ActionError, call_webhook, notify
from journeys.services.digest import model_summary

pytestmark = pytest.mark.django_db

MAILGUN_API_KEY = "key-mailgun-api-secret-0001"
WEBHOOK_PASSWORD = "webhook-basic-secret-0002"
SIGNING_KEY = "mailgun-signing-secret-0003"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/slack-path-secret-0004"
SUMMARY_KEY = "sk-summary-secret-0005"
JOURNEY_SECRET = "journey-hmac-secret-0006"


@pytest.fixture(params=["json", "console"])
def log_output(request):
    """Logging configured as in production at DEBUG, its one handler writing to a buffer."""
    buffer = io.StringIO()
    logging.config.dictConfig(build_logging_config(level="DEBUG", fmt=request.param))
    for handler in logging.getLogger().handlers:
        handler.setStream(buffer)
    yield buffer
    logging.config.dictConfig(django_settings.LOGGING)


@pytest.fixture
def providers(settings):
    settings.LOOP_CHANNEL_BACKENDS = {"email": "anymail"}
    settings.LOOP_PUBLIC_URL = "https://crm.shop.example"
    settings.DEFAULT_FROM_EMAIL = "Loop CRM <news@shop.example>"
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {
        "MAILGUN_API_KEY": MAILGUN_API_KEY,
        "MAILGUN_SENDER_DOMAIN": "mg.shop.example",
        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
        "WEBHOOK_SECRET": f"loop-webhooks:{WEBHOOK_PASSWORD}",
    }
    settings.LOOP_SLACK_WEBHOOK_URL = SLACK_URL
    settings.LOOP_JOURNEY_WEBHOOK_SECRET = JOURNEY_SECRET
    settings.LOOP_SUMMARY_API_URL = "https://llm.example/v1"
    settings.LOOP_SUMMARY_API_KEY = SUMMARY_KEY
    settings.LOOP_SUMMARY_MODEL = "small"
    return settings


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_secret_in_any_log_line(log_output, providers, capfd):
    cache.clear()
    source = Source.objects.create(name="shop")
    scopes = list(ApiKey.Scope.values)
    good = api_key_create(source=source, name="shop", scopes=scopes)[1]
    revoked_key, revoked = api_key_create(source=source, name="old", scopes=scopes)
    api_key_revoke(key=revoked_key)
    unknown = "loop_0badc0de_unknown-key-secret-0007xxxxxxxxxxxx"
    secrets = [good, revoked, unknown, MAILGUN_API_KEY, WEBHOOK_PASSWORD, SIGNING_KEY, SUMMARY_KEY, JOURNEY_SECRET]
    secrets += ["slack-path-secret-0004"]

    # The API, authenticated every way, with good, revoked and unknown keys; valid and invalid bodies.
    api = Client()
    track = {"userId": "u1", "event": "Order Completed", "messageId": "m1"}
    for key in (good, revoked, unknown):
        api.post("/api/v1/track", json.dumps(track), "application/json", HTTP_AUTHORIZATION=basic(key))
        api.post("/api/v1/track", json.dumps(track), "application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
        api.post("/api/v1/track", json.dumps({**track, "writeKey": key}), "application/json")
        api.post("/api/v1/batch", json.dumps({"batch": [{"type": "nope"}], "writeKey": key}), "application/json")
        api.get("/api/v1/contacts/u1", HTTP_AUTHORIZATION=basic(key, "with-a-password"))
    api.post("/api/v1/track", "{not json", "application/json", HTTP_AUTHORIZATION=basic(good))

    # ESP webhooks: the right basic auth and signature, a wrong password, a signature made with a wrong key.
    send = SendFactory(provider_message_id="20261207030000.1.AAAA@mg.shop.example")
    payload = json.dumps(mailgun_event(send, "delivered", key=SIGNING_KEY))
    webhook = f"loop-webhooks:{WEBHOOK_PASSWORD}"
    api.post(MAILGUN_WEBHOOK, payload, "application/json", HTTP_AUTHORIZATION=basic(*webhook.split(":")))
    api.post(MAILGUN_WEBHOOK, payload, "application/json", HTTP_AUTHORIZATION=basic("loop-webhooks", "guess"))
    forged = json.dumps(mailgun_event(send, "delivered", key="not-the-signing-key"))
    api.post(MAILGUN_WEBHOOK, forged, "application/json", HTTP_AUTHORIZATION=basic(*webhook.split(":")))

    # Provider calls that fail: Mailgun refuses the key, the journey webhook and Slack answer 500, the model 401.
    with responses.RequestsMock() as mock:
        mock.post("https://api.mailgun.net/v3/mg.shop.example/messages", json={"message": "Forbidden"}, status=401)
        mock.post("https://hooks.example/loop", body="error", status=500)
        mock.post(SLACK_URL, body="invalid_token", status=500)
        mock.post("https://llm.example/v1/chat/completions", json={"error": "bad key"}, status=401)
        [result] = backend_for("email").send_batch([message_for(send)])
        assert not result.ok
        logging.getLogger("campaigns.test").warning("send failed: %s", result.error)
        with pytest.raises(ActionError):
            call_webhook("https://hooks.example/loop", {"contact": 1}, key="k-1")
        with pytest.raises(ActionError):
            notify("slack", "hello", {})
        assert model_summary(["좋았어요"]) is None
        # Unreachable hosts: requests' exceptions name the URL. A failure logged with its traceback (as Celery logs
        # a task that raises) shows the chained cause too.
        mock.post(SLACK_URL, body=requests.ConnectionError(f"Max retries exceeded with url: {SLACK_URL}"))
        mock.post("https://llm.example/v1/chat/completions", body=requests.ConnectionError("refused"))
        try:
            notify("slack", "hello", {})
        except ActionError:
            logging.getLogger("celery.app.trace").exception("Task journeys.tick raised unexpected")
        assert model_summary(["좋았어요"]) is None

    logged = log_output.getvalue()
    captured = capfd.readouterr()
    assert "api/v1/track" in logged  # the requests were logged (401s, 400s): the scan looks at real output
    assert "webhooks/anymail" in logged
    for secret in secrets:
        assert secret not in logged, secret
        assert secret not in captured.out + captured.err, secret
    encoded = [basic(key).split()[1] for key in (good, revoked, unknown)]
    assert not [value for value in encoded if value in logged]  # nor the Basic header's base64


def test_urllib3_never_logs_request_lines_even_at_debug():
    """urllib3 logs each request's method and full path at DEBUG: a Slack webhook URL or a token in a query string
    would be in it. Its logger stays at INFO whatever LOG_LEVEL says."""
    config = build_logging_config(level="DEBUG", fmt="json")
    assert config["loggers"]["urllib3"]["level"] == "INFO"


def test_every_secret_setting_is_masked_wherever_it_appears(settings):
    """Settings named like secrets (a provider's key added by a later channel, a nested ANYMAIL key, a secret URL's
    path) are masked in free text; ordinary settings are not."""
    settings.LOOP_SMS_API_KEY = "sms-provider-secret-1234"
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "pm-token-secret-5", "SENDGRID_API_KEY": "SG.sendgrid-secret-99"}
    settings.LOOP_SLACK_WEBHOOK_URL = SLACK_URL
    text = redact_text(
        "sms-provider-secret-1234 failed; SG.sendgrid-secret-99 refused; pm-token-secret-5 refused;"
        " url: /services/T000/B000/slack-path-secret-0004 csrftoken sessionid"
    )
    assert text == f"{REDACTED} failed; {REDACTED} refused; {REDACTED} refused; url: {REDACTED} csrftoken sessionid"
