"""config/settings.py, loaded the way a process loads it: in a fresh interpreter, from a clean environment.

Each case runs ``python -c "import django; django.setup()"`` with ``DJANGO_SETTINGS_MODULE=config.settings`` and
only the variables the case names (nothing from the developer's or CI's environment leaks in).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as test_settings

BASE_DIR = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 20 + "-production-grade-random-value-9f3a"
PRODUCTION = {"LOOP_ENV": "production", "SECRET_KEY": GOOD_KEY, "DEBUG": "0", "ALLOWED_HOSTS": "crm.example.com"}

SETUP = "import django; django.setup()"
DUMP = """
import json, django
django.setup()
from django.conf import settings as s
db = s.DATABASES["default"]
print(json.dumps({
    "DEBUG": s.DEBUG, "LOOP_ENV": s.LOOP_ENV, "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "db_engine": db["ENGINE"], "db_name": str(db["NAME"]), "db_test_name": db.get("TEST", {}).get("NAME"),
    "db_conn_health_checks": db.get("CONN_HEALTH_CHECKS", False),
    "CELERY_BROKER_URL": s.CELERY_BROKER_URL, "CELERY_BROKER_TRANSPORT_OPTIONS": s.CELERY_BROKER_TRANSPORT_OPTIONS,
    "CELERY_BEAT_SCHEDULER": s.CELERY_BEAT_SCHEDULER, "CELERY_TIMEZONE": s.CELERY_TIMEZONE,
    "CELERY_TASK_ALWAYS_EAGER": getattr(s, "CELERY_TASK_ALWAYS_EAGER", False),
    "cache_backend": s.CACHES["default"]["BACKEND"], "cache_location": str(s.CACHES["default"].get("LOCATION")),
    "TIME_ZONE": s.TIME_ZONE, "USE_TZ": s.USE_TZ, "LANGUAGE_CODE": s.LANGUAGE_CODE,
    "LOG_LEVEL": s.LOG_LEVEL, "LOG_FORMAT": s.LOG_FORMAT,
    "SESSION_COOKIE_SECURE": s.SESSION_COOKIE_SECURE, "CSRF_COOKIE_SECURE": s.CSRF_COOKIE_SECURE,
    "VAR_DIR": str(s.VAR_DIR),
}))
"""


def load_settings(tmp_path: Path, code: str = SETUP, **variables: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOOP_VAR_DIR": str(tmp_path / "var"),
        "PYTHONDONTWRITEBYTECODE": "1",
        **variables,
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def refusal(result: subprocess.CompletedProcess) -> str:
    """The last line of the traceback: the error a operator reads."""
    assert result.returncode != 0, f"expected the process to refuse to start:\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines, "no error message"
    return lines[-1]


def dump(tmp_path: Path, **variables: str) -> dict:
    result = load_settings(tmp_path, DUMP, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Production refusal -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named", "not_named"),
    [
        pytest.param({"SECRET_KEY": None}, "SECRET_KEY", ("DEBUG", "ALLOWED_HOSTS"), id="default-secret-key"),
        pytest.param(
            {"SECRET_KEY": "django-insecure-loop-development-key-do-not-use-in-production"},
            "SECRET_KEY",
            ("DEBUG", "ALLOWED_HOSTS"),
            id="development-secret-key-set-explicitly",
        ),
        pytest.param({"SECRET_KEY": "short-Key-123"}, "SECRET_KEY", ("DEBUG", "ALLOWED_HOSTS"), id="short-secret-key"),
        pytest.param({"DEBUG": "1"}, "DEBUG", ("SECRET_KEY", "ALLOWED_HOSTS"), id="debug-on"),
        pytest.param({"DEBUG": "true"}, "DEBUG", ("SECRET_KEY", "ALLOWED_HOSTS"), id="debug-true"),
        pytest.param({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS", ("SECRET_KEY", "DEBUG"), id="no-allowed-hosts"),
        pytest.param({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS", ("SECRET_KEY", "DEBUG"), id="empty-allowed-hosts"),
    ],
)
def test_production_refuses_to_start(tmp_path, overrides, named, not_named):
    variables = {**PRODUCTION, **overrides}
    variables = {name: value for name, value in variables.items() if value is not None}

    message = refusal(load_settings(tmp_path, **variables))

    assert "ImproperlyConfigured" in message
    assert "LOOP_ENV=production" in message
    assert named in message
    for other in not_named:
        assert other not in message, f"only {named} is wrong, but the message blames {other}: {message}"
    if overrides.get("SECRET_KEY"):
        assert overrides["SECRET_KEY"] not in message, "the refused key itself must not be printed"


def test_production_lists_every_problem_at_once(tmp_path):
    message = refusal(load_settings(tmp_path, LOOP_ENV="production", DEBUG="1"))

    for name in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"):
        assert name in message


def test_production_starts_with_a_proper_configuration(tmp_path):
    values = dump(tmp_path, **PRODUCTION)

    assert values["LOOP_ENV"] == "production"
    assert values["DEBUG"] is False
    assert values["ALLOWED_HOSTS"] == ["crm.example.com"]
    assert values["LOG_FORMAT"] == "json"
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True


# --- Invalid values fail loudly -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOOP_ENV", "staging"),
        ("LANGUAGE_CODE", "fr"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("DEBUG", "maybe"),
        ("SESSION_COOKIE_SECURE", "si"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_error(tmp_path, name, value):
    message = refusal(load_settings(tmp_path, **{name: value}))

    assert "ImproperlyConfigured" in message
    assert name in message
    assert repr(value) in message or repr(value.upper()) in message


# --- Defaults -------------------------------------------------------------------------------------------------------


def test_defaults_need_no_server(tmp_path):
    var = tmp_path / "var"

    values = dump(tmp_path)

    assert values["VAR_DIR"] == str(var)
    assert values["LOOP_ENV"] == "development"
    assert values["DEBUG"] is True
    # SQLite under var/, with the test database a file beside it (worker/beat subprocesses of the e2e tests see it).
    assert values["db_engine"] == "django.db.backends.sqlite3"
    assert values["db_name"] == str(var / "loop.sqlite3")
    assert values["db_test_name"] == str(var / "test-loop.sqlite3")
    # The embedded broker: folders under var/broker/, created on start.
    assert values["CELERY_BROKER_URL"] == "filesystem://"
    options = values["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert options["data_folder_in"] == options["data_folder_out"] == str(var / "broker" / "queue")
    for folder in ("queue", "control", "processed"):
        assert (var / "broker" / folder).is_dir()
    assert values["CELERY_BEAT_SCHEDULER"] == "django_celery_beat.schedulers:DatabaseScheduler"
    assert values["CELERY_TASK_ALWAYS_EAGER"] is False
    assert values["cache_backend"] == "django.core.cache.backends.filebased.FileBasedCache"
    assert values["cache_location"] == str(var / "cache")
    # Korean shop, Korean time.
    assert values["TIME_ZONE"] == "Asia/Seoul"
    assert values["CELERY_TIMEZONE"] == "Asia/Seoul"
    assert values["USE_TZ"] is True
    assert values["LANGUAGE_CODE"] == "ko"
    assert values["LOG_LEVEL"] == "INFO"
    assert values["LOG_FORMAT"] == "console"
    assert values["SESSION_COOKIE_SECURE"] is False


def test_servers_are_chosen_by_url(tmp_path):
    values = dump(
        tmp_path,
        DATABASE_URL="postgres://loop:pw@db.internal:5432/loop",
        CELERY_BROKER_URL="redis://redis.internal:6379/0",
        CACHE_URL="redis://redis.internal:6379/1",
        LANGUAGE_CODE="en",
    )

    assert values["db_engine"] == "django.db.backends.postgresql"
    assert values["db_name"] == "loop"
    assert values["db_conn_health_checks"] is True
    assert values["CELERY_BROKER_URL"] == "redis://redis.internal:6379/0"
    assert values["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"visibility_timeout": 3600}
    assert values["cache_backend"] == "django.core.cache.backends.redis.RedisCache"
    assert values["LANGUAGE_CODE"] == "en"
    assert not (tmp_path / "var" / "broker").exists(), "no broker folders when a real broker is configured"


def test_the_test_process_runs_on_the_workspace_time_and_language():
    assert test_settings.TIME_ZONE == "Asia/Seoul"
    assert test_settings.USE_TZ is True
    assert test_settings.LANGUAGE_CODE == "ko"


EMAIL_DUMP = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "EMAIL_BACKEND": s.EMAIL_BACKEND, "ANYMAIL": s.ANYMAIL, "DEFAULT_FROM_EMAIL": s.DEFAULT_FROM_EMAIL,
    "LOOP_PUBLIC_URL": s.LOOP_PUBLIC_URL, "LOOP_UNSUBSCRIBE_MAILTO": s.LOOP_UNSUBSCRIBE_MAILTO,
    "EMAIL_HOST": s.EMAIL_HOST, "EMAIL_PORT": s.EMAIL_PORT, "EMAIL_USE_TLS": s.EMAIL_USE_TLS,
}))
"""


def test_email_is_configured_from_the_environment(tmp_path):
    """Every ANYMAIL_<NAME> variable configures anymail (any ESP, the webhook secret); SMTP uses Django's names."""
    result = load_settings(
        tmp_path,
        EMAIL_DUMP,
        EMAIL_BACKEND="anymail.backends.mailgun.EmailBackend",
        ANYMAIL_MAILGUN_API_KEY="key-123",
        ANYMAIL_MAILGUN_SENDER_DOMAIN="mg.shop.example",
        ANYMAIL_WEBHOOK_SECRET="hooks:secret",
        ANYMAIL_IGNORE_UNSUPPORTED_FEATURES="true",
        DEFAULT_FROM_EMAIL="Loop Shop <news@shop.example>",
        PUBLIC_URL="https://crm.shop.example/",
        UNSUBSCRIBE_MAILTO="unsubscribe@shop.example",
        EMAIL_HOST="smtp.shop.example",
        EMAIL_PORT="587",
        EMAIL_USE_TLS="1",
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])

    assert values["ANYMAIL"] == {
        "MAILGUN_API_KEY": "key-123",
        "MAILGUN_SENDER_DOMAIN": "mg.shop.example",
        "WEBHOOK_SECRET": "hooks:secret",
        "IGNORE_UNSUPPORTED_FEATURES": True,
    }
    assert values["EMAIL_BACKEND"] == "anymail.backends.mailgun.EmailBackend"
    assert values["LOOP_PUBLIC_URL"] == "https://crm.shop.example"
    assert values["LOOP_UNSUBSCRIBE_MAILTO"] == "unsubscribe@shop.example"
    assert (values["EMAIL_HOST"], values["EMAIL_PORT"], values["EMAIL_USE_TLS"]) == ("smtp.shop.example", 587, True)


def test_links_in_messages_need_a_public_url_in_production(tmp_path):
    result = load_settings(tmp_path, EMAIL_DUMP, **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["LOOP_PUBLIC_URL"] == ""


def test_production_email_needs_a_public_url(tmp_path):
    result = load_settings(tmp_path, **PRODUCTION, CHANNEL_BACKENDS="email=anymail")
    assert "PUBLIC_URL must be set" in refusal(result)

    result = load_settings(
        tmp_path, **PRODUCTION, CHANNEL_BACKENDS="email=anymail", PUBLIC_URL="https://crm.shop.example"
    )
    assert result.returncode == 0, result.stderr


def test_tasks_can_be_routed_to_queues(tmp_path):
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "from config.celery import app; "
        "print(json.dumps([s.CELERY_TASK_ROUTES, app.amqp.router.route({}, 'crm.events_process')['queue'].name, "
        "app.amqp.router.route({}, 'campaigns.send_chunk')['queue'].name, "
        "app.amqp.router.route({}, 'journeys.tick')['queue'].name]))"
    )
    result = load_settings(tmp_path, code, CELERY_TASK_ROUTES="crm.events_*=events, campaigns.send_chunk=sends")
    assert result.returncode == 0, result.stderr
    routes, events, sends, default = json.loads(result.stdout.strip().splitlines()[-1])
    assert routes == {"crm.events_*": {"queue": "events"}, "campaigns.send_chunk": {"queue": "sends"}}
    assert (events, sends, default) == ("events", "sends", "celery")

    result = load_settings(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [{}, "celery", "celery", "celery"]

    result = load_settings(tmp_path, SETUP, CELERY_TASK_ROUTES="crm.events_*=")
    assert result.returncode != 0
    assert "CELERY_TASK_ROUTES must be task-name-pattern=queue pairs" in result.stderr
