"""Progress of a running preview or apply, for the admin's progress bar and the command line.

An import is applied in one transaction, so its ``processed_rows`` only becomes visible when it commits; progress is
therefore also kept in the cache (shared by web and worker processes: the file cache on one machine, Redis in
production). ``processed_rows`` is the durable record.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache

TIMEOUT = 6 * 3600


def _key(import_id: int) -> str:
    return f"crm:contact-import:{import_id}:progress"


def progress_set(import_id: int, *, phase: str, done: int, total: int) -> None:
    cache.set(_key(import_id), {"phase": phase, "done": done, "total": total}, TIMEOUT)


def progress_get(import_id: int) -> dict[str, Any] | None:
    return cache.get(_key(import_id))


def progress_clear(import_id: int) -> None:
    cache.delete(_key(import_id))
