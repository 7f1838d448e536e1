"""The root conftest's policy for tests that need real servers, checked by running pytest on small test files.

Without LOOP_INTEGRATION=1 integration tests are deselected and counted; with it they run, an unreachable server
fails them with a message naming the server and its URL, and a skip of one is a failure.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from django.db import connection

pytest_plugins = ["pytester"]

BASE_DIR = Path(__file__).resolve().parents[2]

TESTS = """
import pytest

def test_plain():
    pass

@pytest.mark.integration
def test_needs_redis(redis_url):
    assert redis_url.startswith("redis://")

@pytest.mark.integration
def test_needs_rabbitmq(rabbitmq_url):
    assert rabbitmq_url.startswith("amqp://")

@pytest.mark.integration
def test_skips_itself():
    pytest.skip("no server today")

@pytest.mark.integration
@pytest.mark.skipif(True, reason="skipped by a marker")
def test_skipped_by_marker():
    pass

def test_fixture_without_marker(redis_url):
    pass
"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    pytester.makeconftest((BASE_DIR / "conftest.py").read_text())
    pytester.makeini(
        """
        [pytest]
        addopts = -p no:django -p no:cacheprovider -ra
        markers =
            integration: needs real servers
        """
    )
    pytester.makepyfile(test_servers=TESTS)
    monkeypatch.setenv("PYTHONPATH", str(BASE_DIR))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # only the conftest under test (and a faster start)
    port = closed_port()
    monkeypatch.setenv("LOOP_TEST_REDIS_URL", f"redis://:redis-pw-1@127.0.0.1:{port}/15")
    monkeypatch.setenv("LOOP_TEST_RABBITMQ_URL", f"amqp://guest:amqp-pw-2@127.0.0.1:{port}//")
    monkeypatch.delenv("LOOP_INTEGRATION", raising=False)
    return pytester


def test_without_loop_integration_they_are_deselected_and_counted(project):
    result = project.runpytest_subprocess("--strict-markers")

    # The one error: a test that asks for a server fixture without the integration marker.
    result.assert_outcomes(passed=1, errors=1, deselected=4)
    result.stdout.fnmatch_lines(
        [
            "*needs a real server: mark the test @pytest.mark.integration*",
            "*4 integration test(s) deselected*LOOP_INTEGRATION=1*pytest -m integration*bash .ci/run*",
        ]
    )
    assert "skipped" not in result.stdout.str().lower().split("short test summary")[-1]


def test_with_loop_integration_an_unreachable_server_fails_and_nothing_skips(project, monkeypatch):
    monkeypatch.setenv("LOOP_INTEGRATION", "1")

    result = project.runpytest_subprocess("--strict-markers")

    # Fixture failures and a skipif are reported in setup (errors), pytest.skip() in the call (a failure).
    result.assert_outcomes(passed=1, failed=1, errors=4, skipped=0, deselected=0)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*Redis is not reachable at redis://:[[]redacted]@127.0.0.1:*/15*LOOP_TEST_REDIS_URL*",
            "*RabbitMQ is not reachable at amqp://guest:[[]redacted]@127.0.0.1:*LOOP_TEST_RABBITMQ_URL*",
            "*integration test skipped under LOOP_INTEGRATION=1*skipped by a marker*",
            "*integration test skipped under LOOP_INTEGRATION=1*no server today*",
            "LOOP_INTEGRATION=1: 4 integration test(s) selected*",
        ]
    )
    assert "redis-pw-1" not in output
    assert "amqp-pw-2" not in output


@pytest.mark.integration
def test_with_loop_integration_reachable_servers_pass(redis_url, rabbitmq_url, project, monkeypatch):
    monkeypatch.setenv("LOOP_INTEGRATION", "1")
    monkeypatch.setenv("LOOP_TEST_REDIS_URL", redis_url)
    monkeypatch.setenv("LOOP_TEST_RABBITMQ_URL", rabbitmq_url)

    result = project.runpytest_subprocess("-k", "needs or plain")

    result.assert_outcomes(passed=3, deselected=3)


def test_an_unknown_loop_integration_value_is_refused(project, monkeypatch):
    monkeypatch.setenv("LOOP_INTEGRATION", "yes")

    result = project.runpytest_subprocess()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*LOOP_INTEGRATION must be 1*got 'yes'*"])


@pytest.mark.integration
@pytest.mark.django_db
def test_the_integration_pass_runs_on_postgresql_15_or_later(postgresql):
    assert connection.vendor == "postgresql"
    assert connection.pg_version >= 150000, f"PostgreSQL {connection.pg_version}: the product needs 15 or later"
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        (name,) = cursor.fetchone()
    assert name.startswith("test_"), f"the tests must run on pytest-django's test database, not {name!r}"
