"""Admin login brute-force throttling: after ``LOGIN_MAX_FAILURES`` failed attempts for one user name from one
address, that pair is locked for ``LOGIN_LOCKOUT_MINUTES`` (even the right password is refused meanwhile, with 429).

Counted in the shared cache, so every web process sees the same count. Per user name *and* address: an attacker
cannot lock a colleague out from elsewhere, and spreading guesses over many user names still counts per name.
A successful login clears the count.
"""

from __future__ import annotations

import hashlib

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.utils.translation import ngettext

from config.logging import get_logger
from config.ratelimit import client_address

logger = get_logger(__name__)


def _key(kind: str, username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.casefold()}\x00{address}".encode()).hexdigest()[:32]
    return f"login:{kind}:{digest}"


def _lockout_seconds() -> int:
    return settings.LOOP_LOGIN_LOCKOUT_MINUTES * 60


def login_locked(*, username: str, address: str) -> bool:
    return cache.get(_key("locked", username, address)) is not None


def login_failed(*, username: str, address: str) -> bool:
    """Count a failure; True when it locks the pair. The count lives as long as a lockout would."""
    key = _key("failures", username, address)
    if cache.add(key, 1, timeout=_lockout_seconds()):
        failures = 1
    else:
        try:
            failures = cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=_lockout_seconds())
            failures = 1
    if failures >= settings.LOOP_LOGIN_MAX_FAILURES:
        cache.set(_key("locked", username, address), 1, timeout=_lockout_seconds())
        cache.delete(key)
        # The user name may be a mistyped password: log only the address and how long.
        logger.warning("login.locked", address=address, minutes=settings.LOOP_LOGIN_LOCKOUT_MINUTES)
        return True
    return False


def login_succeeded(*, username: str, address: str) -> None:
    cache.delete(_key("failures", username, address))


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin login form, refusing a locked (user name, address) pair before checking the password."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request) if self.request is not None else "-"
        if username and login_locked(username=username, address=address):
            self._locked()
        try:
            cleaned = super().clean()
        except forms.ValidationError as error:
            if username and error.code == "invalid_login" and login_failed(username=username, address=address):
                self._locked()
            raise
        if username:
            login_succeeded(username=username, address=address)
        return cleaned

    def _locked(self):
        if self.request is not None:
            self.request.login_locked = True
        minutes = settings.LOOP_LOGIN_LOCKOUT_MINUTES
        raise forms.ValidationError(
            ngettext(
                "Too many failed login attempts. Try again in %(minutes)d minute.",
                "Too many failed login attempts. Try again in %(minutes)d minutes.",
                minutes,
            )
            % {"minutes": minutes},
            code="locked",
        )
