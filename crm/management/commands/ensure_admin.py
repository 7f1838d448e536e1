"""``python manage.py ensure_admin``: make sure a development superuser exists and print how to log in.

Development only (``make run`` calls it); with ``LOOP_ENV=production`` it refuses: create real accounts with
``createsuperuser``. The user name is ``LOOP_ADMIN_USERNAME`` (default ``admin``); the password is
``LOOP_ADMIN_PASSWORD`` when set, otherwise generated once and kept in ``settings.LOOP_ADMIN_CREDENTIALS_FILE``
(mode 0600), so every run prints the same login.

- Running it again changes nothing and prints the same login.
- A password changed in the admin (it no longer matches the stored one) is never reset: the command says so and how
  to reset it (``python manage.py changepassword <user>``).
- ``LOOP_ADMIN_PASSWORD`` that differs from the user's password is applied: the operator asked for it.
- An existing user of that name who is not an active superuser is left alone, with a note.

The password goes to stdout only, never through logging.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

DEFAULT_USERNAME = "admin"


def admin_url() -> str:
    """Where ``make run`` serves the admin (``LOOP_WEB_PORT``, as in Procfile.dev)."""
    return f"http://127.0.0.1:{os.environ.get('LOOP_WEB_PORT') or '8000'}/admin/"


PASSWORD_BYTES = 12  # secrets.token_urlsafe(12): 16 characters, 96 bits


def read_credentials(path: Path) -> tuple[str, str] | None:
    """The (user name, password) stored in ``path``, or None when there is no readable file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    if values.get("username") and values.get("password"):
        return values["username"], values["password"]
    return None


def write_credentials(path: Path, username: str, password: str) -> None:
    """Write the login to ``path`` readable by its owner only (0600), replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # O_CREAT's mode does not apply to a file that already existed
        handle.write(
            "# Loop CRM development admin login, written by `python manage.py ensure_admin`.\n"
            f"username={username}\npassword={password}\n"
        )
    os.replace(tmp, path)


class Command(BaseCommand):
    help = "Development: ensure a superuser exists and print its login (refused with LOOP_ENV=production)."

    def handle(self, *args, **options) -> None:
        if settings.IS_PRODUCTION:
            raise CommandError(
                "ensure_admin is for development only and refuses to run with LOOP_ENV=production. "
                "Create administrators with `python manage.py createsuperuser` instead."
            )
        username = os.environ.get("LOOP_ADMIN_USERNAME", "").strip() or DEFAULT_USERNAME
        env_password = os.environ.get("LOOP_ADMIN_PASSWORD") or None
        path = Path(settings.LOOP_ADMIN_CREDENTIALS_FILE)
        stored = read_credentials(path)
        stored_password = stored[1] if stored and stored[0] == username else None

        User = get_user_model()
        with transaction.atomic():
            user = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
            if user is None:
                password = env_password or stored_password or secrets.token_urlsafe(PASSWORD_BYTES)
                User._default_manager.create_superuser(
                    **{User.USERNAME_FIELD: username}, email=f"{username}@example.com", password=password
                )
                write_credentials(path, username, password)
                self.login(username, password, path, note="Created the development superuser.")
                return

            if not (user.is_active and user.is_staff and user.is_superuser):
                self.stdout.write(
                    self.style.WARNING(
                        f"User {username!r} exists but is not an active superuser; ensure_admin leaves it as it is. "
                        "Choose another LOOP_ADMIN_USERNAME or create one with `python manage.py createsuperuser`."
                    )
                )
                return

            if env_password is not None:
                if not user.check_password(env_password):
                    user.set_password(env_password)
                    user.save(update_fields=["password"])
                    note = "Set the password from LOOP_ADMIN_PASSWORD."
                else:
                    note = "The password is LOOP_ADMIN_PASSWORD."
                if stored_password != env_password:
                    write_credentials(path, username, env_password)
                self.login(username, env_password, path, note=note)
                return

        if stored_password is not None and user.check_password(stored_password):
            self.login(username, stored_password, path, note="The development superuser exists.")
            return
        reason = (
            "its password was changed since ensure_admin set it"
            if stored_password is not None
            else f"its password was not set by ensure_admin (no login for it in {path})"
        )
        self.stdout.write(
            self.frame(
                [
                    f"Admin login: {admin_url()}  user: {username}",
                    f"User {username!r} exists and {reason}; it is left unchanged.",
                    f"Forgot it? Reset it with: python manage.py changepassword {username}",
                ]
            )
        )

    def login(self, username: str, password: str, path: Path, *, note: str) -> None:
        self.stdout.write(
            self.frame(
                [
                    f"Admin login: {admin_url()}  user: {username}  password: {password}",
                    f"{note} The login is kept in {path} (readable by you only).",
                ]
            )
        )

    @staticmethod
    def frame(lines: list[str]) -> str:
        width = max(len(line) for line in lines)
        rule = "+" + "-" * (width + 4) + "+"
        return "\n".join([rule, *(f"|  {line.ljust(width)}  |" for line in lines), rule])
