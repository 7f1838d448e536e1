"""/healthz: database and broker reachability as JSON, 200 or 503, read from settings at call time, no secrets."""

from __future__ import annotations

import socket
import time
from unittest import mock

import pytest
from django.db import OperationalError, connections
from django.test import override_settings

SECRET = "s3cret-Pa55word"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound then released: the kernel will not reuse it at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_healthz(client):
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    return response, response.json()


@pytest.mark.django_db
def test_healthz_ok_on_defaults(client, settings):
    response, body = get_healthz(client)

    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["latency_ms"] >= 0
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["broker"]["transport"] == settings.CELERY_BROKER_URL.split("://", 1)[0]


@pytest.mark.django_db
def test_healthz_ok_on_the_embedded_broker(client, tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    with override_settings(
        CELERY_BROKER_URL="filesystem://", CELERY_BROKER_TRANSPORT_OPTIONS={"data_folder_in": str(folder)}
    ):
        response, body = get_healthz(client)

    assert response.status_code == 200, body
    assert body["checks"]["broker"] == {"ok": True, "transport": "filesystem", "latency_ms": mock.ANY}


@pytest.mark.django_db
def test_healthz_503_when_the_embedded_broker_folder_is_missing(client, tmp_path):
    with override_settings(
        CELERY_BROKER_URL="filesystem://", CELERY_BROKER_TRANSPORT_OPTIONS={"data_folder_in": str(tmp_path / "gone")}
    ):
        response, body = get_healthz(client)

    assert response.status_code == 503, body
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_healthz_503_when_the_broker_is_unreachable_and_never_shows_its_url(client, caplog):
    port = closed_port()
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    started = time.monotonic()
    with override_settings(CELERY_BROKER_URL=url, CELERY_BROKER_CONNECTION_TIMEOUT=1.0):
        response, body = get_healthz(client)
    elapsed = time.monotonic() - started

    assert response.status_code == 503, body
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    broker = body["checks"]["broker"]
    assert broker["ok"] is False
    assert broker["transport"] == "redis"
    assert broker["error"]
    assert elapsed < 3, f"one bounded attempt, no retries; took {elapsed:.1f}s"
    text = response.content.decode()
    assert SECRET not in text
    assert str(port) not in text
    assert "redis://" not in text
    assert SECRET not in caplog.text


@pytest.mark.django_db
def test_healthz_never_shows_a_url_without_a_scheme(client):
    with override_settings(CELERY_BROKER_URL=f"user:{SECRET}@127.0.0.1:1", CELERY_BROKER_CONNECTION_TIMEOUT=0.5):
        response, body = get_healthz(client)

    assert response.status_code == 503
    assert body["checks"]["broker"]["transport"] == "unknown"
    assert SECRET not in response.content.decode()


@pytest.mark.django_db
def test_healthz_503_when_the_database_errors(client):
    connection = connections["default"]
    error = OperationalError(f"could not connect: password={SECRET}")
    with mock.patch.object(connection, "cursor", side_effect=error) as cursor:
        response, body = get_healthz(client)

    assert cursor.called
    assert response.status_code == 503, body
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    assert body["checks"]["broker"]["ok"] is True
    assert SECRET not in response.content.decode()


@pytest.mark.django_db
def test_healthz_answers_only_get(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.integration
@pytest.mark.django_db
def test_healthz_ok_against_real_redis(client, redis_url):
    with override_settings(CELERY_BROKER_URL=redis_url):
        response, body = get_healthz(client)

    assert response.status_code == 200, body
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["broker"]["transport"] == "redis"
    assert redis_url not in response.content.decode()


@pytest.mark.integration
@pytest.mark.django_db
def test_healthz_ok_against_real_rabbitmq(client, rabbitmq_url):
    with override_settings(CELERY_BROKER_URL=rabbitmq_url):
        response, body = get_healthz(client)

    assert response.status_code == 200, body
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["broker"]["transport"] == "amqp"
    text = response.content.decode()
    assert rabbitmq_url not in text
    assert "guest" not in text


@pytest.mark.integration
@pytest.mark.django_db
def test_healthz_503_against_rabbitmq_with_a_wrong_password(client, rabbitmq_url):
    scheme, rest = rabbitmq_url.split("://", 1)
    host = rest.rsplit("@", 1)[-1]
    with override_settings(CELERY_BROKER_URL=f"{scheme}://guest:{SECRET}@{host}", CELERY_BROKER_CONNECTION_TIMEOUT=2):
        response, body = get_healthz(client)

    assert response.status_code == 503, body
    assert body["checks"]["broker"] == {"ok": False, "transport": "amqp", "error": "AccessRefused"}
    assert SECRET not in response.content.decode()
