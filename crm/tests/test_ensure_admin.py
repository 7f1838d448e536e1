"""``manage.py ensure_admin``: the development login `make run` prints, and its refusal in production."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from crm.management.commands.ensure_admin import read_credentials

pytestmark = pytest.mark.django_db
User = get_user_model()
LOGIN = re.compile(r"Admin login: http://127\.0\.0\.1:8000/admin/  user: (\S+)  password: (\S+)")


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path, monkeypatch):
    settings.LOOP_ADMIN_CREDENTIALS_FILE = tmp_path / "admin-credentials.txt"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; the logic is the same
    monkeypatch.delenv("LOOP_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("LOOP_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("LOOP_WEB_PORT", raising=False)


def ensure_admin() -> str:
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    return out.getvalue()


def printed_login(output: str) -> tuple[str, str]:
    match = LOGIN.search(output)
    assert match, output
    return match.group(1), match.group(2)


def test_creates_a_superuser_and_prints_its_login(settings):
    output = ensure_admin()

    username, password = printed_login(output)
    assert username == "admin"
    assert len(password) >= 16
    user = User.objects.get(username="admin")
    assert (user.is_superuser, user.is_staff, user.is_active) == (True, True, True)
    assert user.check_password(password)
    path = settings.LOOP_ADMIN_CREDENTIALS_FILE
    assert read_credentials(path) == ("admin", password)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert output.startswith("+---")
    assert output.rstrip().endswith("-+")


def test_running_it_again_prints_the_same_login_and_changes_nothing(settings):
    _user, password = printed_login(ensure_admin())
    hashed = User.objects.get(username="admin").password
    stored = settings.LOOP_ADMIN_CREDENTIALS_FILE.read_text()

    assert printed_login(ensure_admin()) == ("admin", password)
    assert User.objects.get(username="admin").password == hashed
    assert settings.LOOP_ADMIN_CREDENTIALS_FILE.read_text() == stored
    assert User.objects.count() == 1


def test_a_new_database_gets_the_stored_password_again(settings):
    _user, password = printed_login(ensure_admin())
    User.objects.all().delete()

    assert printed_login(ensure_admin()) == ("admin", password)
    assert User.objects.get(username="admin").check_password(password)


def test_user_name_and_password_from_the_environment(monkeypatch, settings):
    monkeypatch.setenv("LOOP_ADMIN_USERNAME", "marketer")
    monkeypatch.setenv("LOOP_ADMIN_PASSWORD", "correct-horse-battery")

    assert printed_login(ensure_admin()) == ("marketer", "correct-horse-battery")
    assert User.objects.get(username="marketer").check_password("correct-horse-battery")
    assert not User.objects.filter(username="admin").exists()


def test_a_different_password_in_the_environment_is_applied(monkeypatch, settings):
    ensure_admin()
    monkeypatch.setenv("LOOP_ADMIN_PASSWORD", "the-operator-chose-this")

    output = ensure_admin()

    assert printed_login(output) == ("admin", "the-operator-chose-this")
    assert "Set the password from LOOP_ADMIN_PASSWORD" in output
    assert User.objects.get(username="admin").check_password("the-operator-chose-this")
    assert read_credentials(settings.LOOP_ADMIN_CREDENTIALS_FILE) == ("admin", "the-operator-chose-this")


def test_a_password_the_user_changed_is_not_reset(settings):
    _user, generated = printed_login(ensure_admin())
    user = User.objects.get(username="admin")
    user.set_password("my-own-secret-password")
    user.save()

    output = ensure_admin()

    assert not LOGIN.search(output)
    assert generated not in output
    assert "password was changed" in output
    assert "python manage.py changepassword admin" in output
    assert User.objects.get(username="admin").check_password("my-own-secret-password")


def test_an_existing_user_not_made_by_ensure_admin_is_left_alone():
    User.objects.create_superuser("admin", "admin@example.com", "chosen-by-hand-123")

    output = ensure_admin()

    assert "changepassword admin" in output
    assert User.objects.get(username="admin").check_password("chosen-by-hand-123")


def test_an_existing_user_that_is_not_a_superuser_is_not_promoted(monkeypatch):
    User.objects.create_user("staffer", "staffer@example.com", "whatever-123", is_staff=True)
    monkeypatch.setenv("LOOP_ADMIN_USERNAME", "staffer")

    output = ensure_admin()

    assert "not an active superuser" in output
    assert not User.objects.get(username="staffer").is_superuser


def test_the_password_never_reaches_the_logs(caplog):
    with caplog.at_level(logging.DEBUG):
        _user, password = printed_login(ensure_admin())
        ensure_admin()
    assert password not in caplog.text
    assert all(password not in str(record.__dict__) for record in caplog.records)


def test_refused_in_production(settings):
    settings.IS_PRODUCTION = True

    with pytest.raises(CommandError, match="createsuperuser"):
        ensure_admin()

    assert not User.objects.exists()
    assert not settings.LOOP_ADMIN_CREDENTIALS_FILE.exists()


def test_refused_in_production_with_a_non_zero_exit(tmp_path):
    env = {
        **os.environ,
        "LOOP_ENV": "production",
        "SECRET_KEY": "a-production-secret-key-that-is-long-enough-0123456789",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "crm.example.com",
        "LOOP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "ensure_admin"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "createsuperuser" in result.stderr
    assert "password" not in result.stdout
    assert not (tmp_path / "admin-credentials.txt").exists()


def test_the_login_points_at_the_port_make_run_serves_on(monkeypatch):
    monkeypatch.setenv("LOOP_WEB_PORT", "8765")
    assert "Admin login: http://127.0.0.1:8765/admin/  user: admin" in ensure_admin()
