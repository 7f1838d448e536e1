"""Contact import: read a CSV or Excel file as it arrives in Korea, map its columns, plan, then apply the plan.

- ``reader``: format and encoding detection (never guessed from the file name), row streaming.
- ``mapping``: header aliases (our field names, Korean headers, Shopify and Mailchimp exports), value parsers, type
  inference for columns that become attributes.
- ``plan``: the preview. An exact plan of what each row will do (new, update, unchanged, skipped, error), stored as a
  file next to the upload so that confirming applies exactly what was previewed.
- ``apply``: verifies the plan against the locked contacts and writes it in bulk, batch by batch, in one transaction.
- ``bulk``: the writers (set-based statements on PostgreSQL, bulk ORM statements on SQLite).
- ``errors``: the rows that were not imported, as a CSV with the original columns and an error column.

The services in ``crm.services.imports`` are the only entry points; the admin views, the ``import_contacts``
command and the Celery tasks call them.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

#: Rows per batch when planning and applying: one lookup of the matching contacts and one set of writes per batch
#: (the whole apply is one transaction).
BATCH_SIZE = 5_000

#: Files with more data rows than this are previewed and applied by a Celery task, not in the web request.
#: Setting: ``LOOP_IMPORT_ASYNC_ROWS``.
DEFAULT_ASYNC_ROWS = 5_000

#: Largest accepted upload. Setting: ``LOOP_IMPORT_MAX_BYTES``.
DEFAULT_MAX_BYTES = 200 * 1024 * 1024


def async_rows_threshold() -> int:
    return int(getattr(settings, "LOOP_IMPORT_ASYNC_ROWS", DEFAULT_ASYNC_ROWS))


def max_upload_bytes() -> int:
    return int(getattr(settings, "LOOP_IMPORT_MAX_BYTES", DEFAULT_MAX_BYTES))


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector around a bulk loop.

    Planning and applying create millions of short-lived dicts and strings but no reference cycles; with the
    collector running, its repeated scans of the long-lived structures (seen keys, memoised values) cost as much as
    the work itself. Memory is still freed by reference counting."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
