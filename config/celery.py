"""The Celery application.

Configuration comes from Django settings under the ``CELERY_`` namespace (see ``config/settings.py``); tasks are
discovered in each installed app's ``tasks.py``.
"""

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("loop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def use_django_logging(**_kwargs) -> None:
    """Keep Celery from installing its own log format: worker and beat log through Django's LOGGING (one line per
    event, secrets redacted), like the web process."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
