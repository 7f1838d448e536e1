"""Loop CRM settings: one module, every value read from the environment (12-factor).

Defaults are safe for a laptop: SQLite and a broker that needs no server, both under ``var/``. In production
(``LOOP_ENV=production``) the process refuses to start with the development ``SECRET_KEY``, with ``DEBUG`` on, or
without ``ALLOWED_HOSTS``. Every variable is listed with its default in docs/guide/operator.md ("Every setting"; a
test fails when one read here is missing there).
"""

from __future__ import annotations

from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from config.logging import build_logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_flag(name: str, *, default: bool) -> bool:
    """A boolean variable; anything but 1/0, true/false, yes/no, on/off is refused (``DEBUG=maybe`` must not
    silently mean off)."""
    raw = env.str(name, default=None)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}.")


# A `.env` file next to manage.py is read if present; real environment variables win over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Environment -----------------------------------------------------------------------------------------------
LOOP_ENVIRONMENTS = ("development", "production")
LOOP_ENV = env.str("LOOP_ENV", default="development")
if LOOP_ENV not in LOOP_ENVIRONMENTS:
    raise ImproperlyConfigured(f"LOOP_ENV must be one of {', '.join(LOOP_ENVIRONMENTS)}; got {LOOP_ENV!r}.")
IS_PRODUCTION = LOOP_ENV == "production"

VAR_DIR = Path(env.str("LOOP_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEV_SECRET_KEY = "django-insecure-loop-development-key-do-not-use-in-production"  # noqa: S105 (refused in production)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
DEBUG = env_flag("DEBUG", default=not IS_PRODUCTION)

_default_hosts = [] if IS_PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=_default_hosts)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

if IS_PRODUCTION:
    problems = []
    if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 32:
        problems.append("SECRET_KEY must be set to a random value of at least 32 characters")
    if DEBUG:
        problems.append("DEBUG must be off")
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must name the host names this CRM is served under")
    if problems:
        raise ImproperlyConfigured("Refusing to start with LOOP_ENV=production: " + "; ".join(problems) + ".")

# --- Applications ----------------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "config.apps.LoopAdminConfig",  # django.contrib.admin with the product's own AdminSite
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "import_export",
    "anymail",
    "crm",
    "campaigns",
    "journeys",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "crm.audit.AuditActorMiddleware",
    "crm.preferences.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # config is not an app: its template tag libraries are named here.
            "libraries": {"loop_reports": "config.templatetags.loop_reports"},
        },
    },
]

# --- Database --------------------------------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'loop.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web, worker and beat processes read while one of them writes; IMMEDIATE transactions take the
    # write lock up front so concurrent writers wait (up to `timeout` seconds) instead of failing mid-transaction.
    _db.setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # A file (not :memory:) so that worker and beat processes started by the end-to-end tests see the test data.
    _db.setdefault("TEST", {})["NAME"] = str(VAR_DIR / "test-loop.sqlite3")
# Persistent connections (also on SQLite, where closing the last connection after every request costs a WAL
# checkpoint and an fsync), checked for health before reuse.
_db.setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
_db["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (shared by web and worker processes: throttling, rate limits) ----------------------------------------
CACHES = {"default": env.cache_url("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}")}

# --- Auth and security -------------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the admin's JavaScript reads it for the language switch and rule builder
SESSION_COOKIE_SECURE = env_flag("SESSION_COOKIE_SECURE", default=IS_PRODUCTION)
CSRF_COOKIE_SECURE = env_flag("CSRF_COOKIE_SECURE", default=IS_PRODUCTION)
SECURE_SSL_REDIRECT = env_flag("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Addresses of the reverse proxies in front of the web process: a request from one of them is attributed (audit trail,
# rate limits by address) to the client address its X-Forwarded-For names, not to the proxy.
LOOP_TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
if env_flag("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Internationalisation and time ---------------------------------------------------------------------------------
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="ko")
LANGUAGES = [("ko", _("Korean")), ("en", _("English"))]
if LANGUAGE_CODE not in dict(LANGUAGES):
    raise ImproperlyConfigured(f"LANGUAGE_CODE must be one of {', '.join(dict(LANGUAGES))}; got {LANGUAGE_CODE!r}.")
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="Asia/Seoul")
USE_I18N = True
USE_TZ = True

# --- Static files ------------------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if IS_PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

# --- Celery ------------------------------------------------------------------------------------------------------
# The default broker is kombu's filesystem transport: message files under var/broker/, shared by the web, worker and
# beat processes on one machine with no server. Set CELERY_BROKER_URL to redis://... or amqp://... in production.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("queue", "control", "processed"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A message not acknowledged within this many seconds is delivered again. Every countdown/ETA the product uses
    # is far shorter (long waits are database rows picked up by beat), see LOOP_MAX_TASK_COUNTDOWN.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=4.0)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
# At-least-once delivery: a task is acknowledged after it ran, and redelivered if its worker died. Every task is
# written to be idempotent (a state check before acting), so a redelivery never repeats an effect.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"


def task_routes(routes: dict[str, str]) -> dict[str, dict[str, str]]:
    """``CELERY_TASK_ROUTES=crm.events_*=events,campaigns.send_chunk=sends``: tasks whose name matches a pattern
    (``*`` any characters) go to that queue instead of the default queue ``celery``; a worker started with
    ``-Q events`` serves only that queue (see docs/guide/operator.md, "Scaling workers")."""
    result = {}
    for pattern, queue in routes.items():
        pattern, queue = pattern.strip(), str(queue).strip()
        if not pattern or not queue or not all(c.isalnum() or c in "._-*" for c in pattern + queue):
            raise ImproperlyConfigured(
                "CELERY_TASK_ROUTES must be task-name-pattern=queue pairs separated by commas, e.g. "
                f"crm.events_*=events,campaigns.send_chunk=sends; got {pattern!r}={queue!r}."
            )
        result[pattern] = {"queue": queue}
    return result


CELERY_TASK_ROUTES = task_routes(env.dict("CELERY_TASK_ROUTES", default={}))
# The product's own periodic tasks. DatabaseScheduler copies these entries into its PeriodicTask table when beat
# starts (an operator can see, pause or reschedule them in the admin: Settings → Periodic tasks). Crontab times are in
# CELERY_TIMEZONE, the workspace time zone.
CELERY_BEAT_SCHEDULE = {
    # Apply stored events whose processing task was lost (the API queues one after storing); warn on an old backlog.
    # A sweep not started within its interval is dropped, so a stopped worker does not find a pile of them.
    "crm.events_sweep": {"task": "crm.events_sweep", "schedule": 5.0, "options": {"expires": 5.0}},
    "segment-sizes-daily": {
        "task": "crm.segment_sizes_record",
        "schedule": crontab(hour=0, minute=10),
    },
    # Proves beat and a worker are alive (admin: Settings → Heartbeats).
    "heartbeat": {
        "task": "crm.record_heartbeat",
        "schedule": 60.0,
        "kwargs": {"name": "beat"},
        "options": {"expires": 60.0},
    },
}
# Longest countdown any product code may give a task; longer waits are rows with a due time.
LOOP_MAX_TASK_COUNTDOWN = 15 * 60

# --- REST framework and OpenAPI -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "crm.api.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
# Requests per API key and time window ("1000/s", "60000/min"); over it the API answers 429 with Retry-After.
LOOP_API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="2000/s")
SPECTACULAR_SETTINGS = {
    "TITLE": "Loop CRM API",
    "DESCRIPTION": "Contacts, events and commerce state for Loop CRM. Segment-compatible tracking endpoints.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs UI is served from drf-spectacular-sidecar's static files: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Email (django-anymail; any ESP it supports, or SMTP) ---------------------------------------------------------
# The Django email backend that delivers campaign email when CHANNEL_BACKENDS has email=anymail, e.g.
# anymail.backends.mailgun.EmailBackend, anymail.backends.sendgrid.EmailBackend, or
# django.core.mail.backends.smtp.EmailBackend (SMTP: EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD,
# EMAIL_USE_TLS / EMAIL_USE_SSL, EMAIL_TIMEOUT). See docs/channels.md.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Loop CRM <no-reply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env_flag("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env_flag("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)


def anymail_settings(environ: dict[str, str]) -> dict[str, object]:
    """Every ``ANYMAIL_<NAME>`` variable becomes ``ANYMAIL["<NAME>"]`` (``ANYMAIL_MAILGUN_API_KEY``,
    ``ANYMAIL_WEBHOOK_SECRET``, ``ANYMAIL_SENDGRID_API_KEY``…), so every ESP anymail supports is configured from the
    environment without code; ``true``/``false`` become booleans."""
    result: dict[str, object] = {}
    for name, value in environ.items():
        if name.startswith("ANYMAIL_") and len(name) > len("ANYMAIL_"):
            word = value.strip().lower()
            result[name.removeprefix("ANYMAIL_")] = (word == "true") if word in ("true", "false") else value
    return result


ANYMAIL = anymail_settings(dict(env.ENVIRON))

# --- Logging: one line per event, secrets redacted ----------------------------------------------------------------
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in LOG_LEVELS:
    raise ImproperlyConfigured(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}; got {LOG_LEVEL!r}.")
LOG_FORMATS = ("console", "json")
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if IS_PRODUCTION else "console")
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}; got {LOG_FORMAT!r}.")
LOGGING = build_logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT)

# --- Product settings ------------------------------------------------------------------------------------------
# Contact imports: files with more rows than this are previewed and applied by a Celery worker (progress bar in
# the admin); smaller ones right in the request. Uploads larger than LOOP_IMPORT_MAX_BYTES are refused.
LOOP_IMPORT_ASYNC_ROWS = env.int("IMPORT_ASYNC_ROWS", default=5000)
LOOP_IMPORT_MAX_BYTES = env.int("IMPORT_MAX_BYTES", default=100 * 1024 * 1024)
# Where `make run` writes the generated admin password (development only).
LOOP_ADMIN_CREDENTIALS_FILE = VAR_DIR / "admin-credentials.txt"

# --- Campaigns and the send pipeline ------------------------------------------------------------------------------
# Backend per channel ("email=outbox,sms=outbox"); every channel not named uses the outbox (stores messages, viewable
# in the admin). CHANNEL_DRY_RUN=1 routes every channel to the outbox (staging).
LOOP_CHANNEL_BACKENDS = env.dict("CHANNEL_BACKENDS", default={})
LOOP_CHANNEL_DRY_RUN = env_flag("CHANNEL_DRY_RUN", default=False)
# Frequency cap: at most this many marketing messages per contact in any 24 hours / 7 days, across campaigns
# (0 = no limit). Campaigns marked exempt neither count nor are limited.
LOOP_FREQUENCY_CAP_DAY = env.int("FREQUENCY_CAP_DAY", default=2)
LOOP_FREQUENCY_CAP_WEEK = env.int("FREQUENCY_CAP_WEEK", default=5)
# Safety rails on launch: above LAUNCH_CONFIRM_THRESHOLD recipients the admin asks for confirmation with the audience
# size and a preview; above LAUNCH_APPROVAL_LIMIT a person without the "approve launches" permission (a Marketer)
# cannot launch: the launch waits for an Admin's approval.
LOOP_LAUNCH_CONFIRM_THRESHOLD = env.int("LAUNCH_CONFIRM_THRESHOLD", default=1000)
LOOP_LAUNCH_APPROVAL_LIMIT = env.int("LAUNCH_APPROVAL_LIMIT", default=50_000)
# Sends per Celery task, and how long a claimed send may stay unanswered before the beat tick recovers it.
LOOP_SEND_CHUNK_SIZE = env.int("SEND_CHUNK_SIZE", default=1000)
LOOP_SEND_CLAIM_LEASE = env.int("SEND_CLAIM_LEASE_SECONDS", default=600)
LOOP_SEND_MAX_ATTEMPTS = env.int("SEND_MAX_ATTEMPTS", default=5)
# The Korean advertising form: "(광고)" first, the sender's name and contact, and a free opt-out line.
LOOP_SENDER_NAME = env.str("SENDER_NAME", default="Loop Shop")
LOOP_SENDER_CONTACT = env.str("SENDER_CONTACT", default="")
LOOP_OPTOUT_PHONE = env.str("OPTOUT_PHONE", default="080-000-0000")
# The sender's postal address, shown in the footer of every email (optional).
LOOP_SENDER_ADDRESS = env.str("SENDER_ADDRESS", default="")
# The address contacts reach this CRM at (https://crm.example.com): unsubscribe links in email and their
# List-Unsubscribe header, preference-center links in messages, survey links, provider receipt callbacks and MMS
# media URLs are built on it.
LOOP_PUBLIC_URL = env.str("PUBLIC_URL", default="" if IS_PRODUCTION else "http://localhost:8000").rstrip("/")
if IS_PRODUCTION and LOOP_CHANNEL_BACKENDS.get("email") == "anymail" and not LOOP_PUBLIC_URL:
    raise ImproperlyConfigured(
        "Refusing to start with LOOP_ENV=production: PUBLIC_URL must be set (e.g. https://crm.example.com) when email "
        "is delivered (CHANNEL_BACKENDS email=anymail): every email carries an unsubscribe link built on it."
    )
# Optional mailbox for List-Unsubscribe's mailto: form (e.g. unsubscribe@shop.example); requests arriving there by
# the ESP's inbound webhook are applied like a click on the link.
LOOP_UNSUBSCRIBE_MAILTO = env.str("UNSUBSCRIBE_MAILTO", default="")
# The legally required notice of advertising consent (정보통신망법: every 2 years from the consent): how often, in
# days (730), checked daily by beat.
LOOP_ADS_RECONSENT_DAYS = env.int("ADS_RECONSENT_DAYS", default=730)
# Own tracking (docs/analytics.md): links in messages go through /t/c/<token> (a click per send), email carries an
# open pixel /t/o/<token>.gif. Clicks and opens judged automatic (scanners, link checkers, Apple Mail Privacy
# Protection prefetch) are recorded but excluded from rates unless TRACKING_COUNT_BOTS is set.
LOOP_TRACK_CLICKS = env.bool("TRACK_CLICKS", default=True)
LOOP_TRACK_OPENS = env.bool("TRACK_OPENS", default=True)
LOOP_TRACKING_COUNT_BOTS = env.bool("TRACKING_COUNT_BOTS", default=False)
# A click this many seconds or less after the message was sent/delivered is a security scanner's.
LOOP_TRACKING_BOT_SECONDS = env.int("TRACKING_BOT_SECONDS", default=5)
# Requests recorded per hashed client address and minute; more are redirected but flagged, not counted.
LOOP_TRACKING_RATE_LIMIT = env.int("TRACKING_RATE_LIMIT_PER_MINUTE", default=60)
# Attribution of goal events to sends: beat runs it every ATTRIBUTION_SECONDS over events stored since the last pass.
LOOP_ATTRIBUTION_SECONDS = env.float("ATTRIBUTION_SECONDS", default=300.0)
CELERY_BEAT_SCHEDULE["campaigns-attribute-conversions"] = {
    "task": "campaigns.attribute_conversions",
    "schedule": LOOP_ATTRIBUTION_SECONDS,
    "options": {"expires": LOOP_ATTRIBUTION_SECONDS},
}
# Report figures of settled runs stored once (campaigns.services.run_figures), so reports count only open runs.
CELERY_BEAT_SCHEDULE["campaigns-store-run-figures"] = {
    "task": "campaigns.store_run_figures",
    "schedule": crontab(minute=17),
    "options": {"expires": 3000},
}
# --- SMS and KakaoTalk providers (issue #8; docs/channels.md). Credentials only from the environment. ------------
LOOP_SOLAPI_API_KEY = env.str("SOLAPI_API_KEY", default="")
LOOP_SOLAPI_API_SECRET = env.str("SOLAPI_API_SECRET", default="")
LOOP_SOLAPI_BASE_URL = env.str("SOLAPI_BASE_URL", default="https://api.solapi.com").rstrip("/")
# The secret in the Solapi webhook URL (/webhooks/solapi/<secret>/): Solapi's webhooks carry no signature.
LOOP_SOLAPI_WEBHOOK_SECRET = env.str("SOLAPI_WEBHOOK_SECRET", default="")
LOOP_TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
LOOP_TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
# Optional: send through a Twilio Messaging Service instead of the profile's From number.
LOOP_TWILIO_MESSAGING_SERVICE_SID = env.str("TWILIO_MESSAGING_SERVICE_SID", default="")
LOOP_PROVIDER_HTTP_TIMEOUT = env.float("PROVIDER_HTTP_TIMEOUT", default=15.0)
# Messages per second each provider accepts from this account, shared by every worker ("solapi=100,twilio=10").
LOOP_PROVIDER_RATES = {"solapi": 100.0, "twilio": 10.0} | {
    name: float(rate) for name, rate in env.dict("PROVIDER_RATES", default={}).items()
}
# The longest a worker waits for the rate limit before putting the batch back in the queue (transient failure).
LOOP_PROVIDER_RATE_MAX_WAIT = env.float("PROVIDER_RATE_MAX_WAIT", default=30.0)
# Where the shared token buckets live: this Redis, by default the cache's or the broker's when they are Redis;
# otherwise the database.
_redis_default = next(
    (
        url.replace("rediscache://", "redis://", 1)
        for url in (env.str("CACHE_URL", default=""), CELERY_BROKER_URL)
        if url.startswith(("redis://", "rediss://", "rediscache://"))
    ),
    "",
)
LOOP_RATE_LIMIT_REDIS_URL = env.str("RATE_LIMIT_REDIS_URL", default=_redis_default)
# App push through FCM HTTP v1 (CHANNEL_BACKENDS=push=fcm): the service-account key as a file path or as JSON text,
# the Firebase project (default: the key's project_id), parallel requests per worker and the request timeout.
LOOP_FCM_CREDENTIALS_FILE = env.str("FCM_CREDENTIALS_FILE", default="")
LOOP_FCM_CREDENTIALS_JSON = env.str("FCM_CREDENTIALS_JSON", default="")
LOOP_FCM_PROJECT_ID = env.str("FCM_PROJECT_ID", default="")
LOOP_FCM_CONCURRENCY = env.int("FCM_CONCURRENCY", default=20)
LOOP_FCM_TIMEOUT = env.float("FCM_TIMEOUT_SECONDS", default=10.0)
# Team channels (Slack incoming webhooks, signed webhooks): seconds to wait for the receiver's answer.
LOOP_TEAM_TIMEOUT = env.float("TEAM_TIMEOUT_SECONDS", default=10.0)
# The destination (Settings → Destinations, by name) that receives each campaign run's report; empty: none.
LOOP_CAMPAIGN_REPORT_DESTINATION = env.str("CAMPAIGN_REPORT_DESTINATION", default="")
# The campaigns tick: starts due one-time runs, releases due and held sends, picks A/B winners, recovers stale
# claims. Installed into the database scheduler when beat starts.
_campaigns_tick_seconds = env.float("CAMPAIGNS_TICK_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE["campaigns-tick"] = {
    "task": "campaigns.tick",
    "schedule": _campaigns_tick_seconds,
    # A tick not started by the next one is dropped: busy workers never pile them up (each tick does all that is due).
    "options": {"expires": _campaigns_tick_seconds},
}

# --- Journeys -----------------------------------------------------------------------------------------------------
# The journeys tick: enrolls segment-entry and date triggers, then claims due enrollments in batches and advances
# them. Every JOURNEYS_TICK_SECONDS (15-30 s keeps a "+30 minutes" step within a minute of its due time).
LOOP_JOURNEY_TICK_SECONDS = env.float("JOURNEYS_TICK_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE["journeys-tick"] = {
    "task": "journeys.tick",
    "schedule": LOOP_JOURNEY_TICK_SECONDS,
    "options": {"expires": LOOP_JOURNEY_TICK_SECONDS},
}
# Enrollments claimed per transaction; a claim older than the lease (its worker died) is claimed again.
LOOP_JOURNEY_BATCH_SIZE = env.int("JOURNEY_BATCH_SIZE", default=1000)
LOOP_JOURNEY_CLAIM_LEASE = env.int("JOURNEY_CLAIM_LEASE_SECONDS", default=120)
# A failing step is retried with backoff (1, 2, 4 … minutes) this many times, then the enrollment is failed.
LOOP_JOURNEY_MAX_ATTEMPTS = env.int("JOURNEY_MAX_ATTEMPTS", default=5)
# Action steps: Slack incoming webhook of the "slack" notifier; the HMAC key of webhook signatures (default: derived
# from SECRET_KEY).
LOOP_SLACK_WEBHOOK_URL = env.str("SLACK_WEBHOOK_URL", default="")
LOOP_JOURNEY_WEBHOOK_SECRET = env.str("JOURNEY_WEBHOOK_SECRET", default="")
# LOOP_PUBLIC_URL (above) builds the links in messages: survey pages too.
# Weekly digest of journey survey answers to the team (Mondays 09:00). Its comments are summarized by a built-in
# extractive summarizer, or by an OpenAI-compatible chat completions API when all three are set (optional).
LOOP_SUMMARY_API_URL = env.str("SUMMARY_API_URL", default="")
LOOP_SUMMARY_API_KEY = env.str("SUMMARY_API_KEY", default="")
LOOP_SUMMARY_MODEL = env.str("SUMMARY_MODEL", default="")
CELERY_BEAT_SCHEDULE["journeys-survey-digest"] = {
    "task": "journeys.survey_digest",
    "schedule": crontab(hour=9, minute=0, day_of_week=1),
}
# Submissions accepted per visitor address and lead form ("20/min"); more are answered 429.
LOOP_LEAD_FORM_RATE_LIMIT = env.str("LEAD_FORM_RATE_LIMIT", default="20/min")
# Signed public links (unsubscribe, survey, preference center): requests per link, and forged or malformed tokens
# per visitor address, before 429 (config/ratelimit.py, docs/security.md).
LOOP_SIGNED_LINK_RATE_LIMIT = env.str("SIGNED_LINK_RATE_LIMIT", default="30/min")
LOOP_BAD_LINK_RATE_LIMIT = env.str("BAD_LINK_RATE_LIMIT", default="20/min")
# Admin login: after this many failed attempts for one user name from one address, that pair is locked out for
# LOGIN_LOCKOUT_MINUTES (config/login_throttle.py).
LOOP_LOGIN_MAX_FAILURES = env.int("LOGIN_MAX_FAILURES", default=5)
LOOP_LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
# Daily at 10:00 workspace time: the 2-year advertising-consent notices that are due (정보통신망법 제50조 ⑧).
CELERY_BEAT_SCHEDULE["campaigns-ads-reconsent-daily"] = {
    "task": "campaigns.ads_reconsent_notify",
    "schedule": crontab(hour=10, minute=0),
}

# --- Reports (issue #10) ------------------------------------------------------------------------------------------
# The dashboard's seed metrics: a lead converts with a first order, and a win-back recipient comes back with an order,
# within this many days.
LOOP_LEAD_CONVERSION_DAYS = env.int("LEAD_CONVERSION_DAYS", default=30)
# How long report figures (dashboard, runs chart, journey funnel) are reused before they are computed again.
LOOP_REPORT_CACHE_SECONDS = env.int("REPORT_CACHE_SECONDS", default=60)
