"""Admin login brute force: after LOGIN_MAX_FAILURES failures for one user name from one address, that pair is
locked for LOGIN_LOCKOUT_MINUTES (429, even with the right password); other addresses and user names are not."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from crm.tests.factories import user_with_role

PASSWORD = "pw-Loop-2026!"
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_fresh_cache")]


@pytest.fixture
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def marketer():
    return user_with_role("Marketer", username="jiwoo", password=PASSWORD)


def login(username: str, password: str, address: str = "203.0.113.5"):
    client = Client(REMOTE_ADDR=address, HTTP_ACCEPT_LANGUAGE="en")
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return response, client


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


@override_settings(LOOP_LOGIN_MAX_FAILURES=3, LOOP_LOGIN_LOCKOUT_MINUTES=15)
def test_failures_lock_the_user_name_from_that_address(marketer):
    for _attempt in range(2):
        response, _client = login("jiwoo", "wrong")
        assert response.status_code == 200
    response, _client = login("jiwoo", "wrong")  # the third failure locks
    assert response.status_code == 429
    assert "Too many failed login attempts. Try again in 15 minutes." in response.content.decode()

    response, client = login("jiwoo", PASSWORD)
    assert response.status_code == 429  # the right password is refused while locked
    assert "_auth_user_id" not in client.session
    response, _client = login("JIWOO", PASSWORD)
    assert response.status_code == 429  # the user name's case does not open a new bucket

    assert logged_in(login("jiwoo", PASSWORD, address="198.51.100.9")[0])  # the colleague elsewhere is not locked
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        assert logged_in(login("jiwoo", PASSWORD)[0])


@override_settings(LOOP_LOGIN_MAX_FAILURES=3)
def test_a_successful_login_clears_the_count(marketer):
    for _attempt in range(2):
        login("jiwoo", "wrong")
    assert logged_in(login("jiwoo", PASSWORD)[0])
    for _attempt in range(2):
        assert login("jiwoo", "wrong")[0].status_code == 200  # counting starts again


@override_settings(LOOP_LOGIN_MAX_FAILURES=3)
def test_unknown_user_names_are_counted_too(db):
    statuses = [login("nobody", f"guess-{i}")[0].status_code for i in range(4)]
    assert statuses == [200, 200, 429, 429]


def test_the_defaults_are_five_failures_and_fifteen_minutes(marketer, settings):
    assert (settings.LOOP_LOGIN_MAX_FAILURES, settings.LOOP_LOGIN_LOCKOUT_MINUTES) == (5, 15)
    statuses = [login("jiwoo", "wrong")[0].status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
