"""API keys: created with a random secret shown once, stored as a SHA-256 hash, revocable, scoped."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from crm.models import ApiKey, Source

KEY_PREFIX = "loop_"
#: How often the "last used" time is written (not on every request: the hot path stays read-only).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_key_create(
    *, source: Source, name: str, scopes: list[str] | None = None, created_by=None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret. The secret is not stored and cannot be shown again."""
    scopes = list(scopes or [ApiKey.Scope.WRITE_EVENTS])
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown:
        raise ValueError(
            f"unknown scope(s): {', '.join(sorted(unknown))}; choose from {', '.join(ApiKey.Scope.values)}"
        )
    prefix = secrets.token_hex(4)
    raw_key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        source=source, name=name, prefix=prefix, key_hash=hash_key(raw_key), scopes=scopes, created_by=created_by
    )
    return key, raw_key


#: An authenticated key is reused by this process for this long without a query (the hot path of every API
#: request). A key revoked elsewhere is refused by every process at the latest this much later.
KEY_CACHE_SECONDS = 10.0
_key_cache: dict[str, tuple[float, ApiKey]] = {}


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The active key with this secret, or None. Looks up by hash: the secret itself is never compared or kept."""
    if not raw_key or not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None
    digest = hash_key(raw_key)
    cached = _key_cache.get(digest)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    key = ApiKey.objects.select_related("source").filter(key_hash=digest, revoked_at__isnull=True).first()
    if key is None:
        _key_cache.pop(digest, None)
    else:
        _key_cache[digest] = (time.monotonic() + KEY_CACHE_SECONDS, key)
    if key is not None:
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
    return key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    _key_cache.pop(key.key_hash, None)
    return key


def api_key_remove_scope(*, key: ApiKey, scope: str) -> bool:
    """Take ``scope`` from the key (e.g. ``write_contacts`` from a key embedded in a web page); False if it had none.
    Like a revocation: at once in this process, within ``KEY_CACHE_SECONDS`` in the others."""
    if scope not in key.scopes:
        return False
    key.scopes = [kept for kept in key.scopes if kept != scope]
    key.save(update_fields=["scopes"])
    _key_cache.pop(key.key_hash, None)
    return True
