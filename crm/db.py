"""Database helpers the ORM does not offer.

- ``insert_ignore_returning``: multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``. Django's
  ``bulk_create(ignore_conflicts=True)`` does not say which rows were inserted. The ingest path needs exactly that
  (only new events update commerce state and are announced), so this builds the statement from the model's own field
  definitions. It runs on PostgreSQL and on SQLite ≥ 3.35, which both support ``RETURNING``.
- ``StatementQueue``: bulk work (the contact import) queues its statements on a helper thread that shares the
  connection and the transaction, so that PostgreSQL works on one batch while Python prepares the next and both
  cores are used. On SQLite the statements run at once, in order.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.db import connection, models

#: Rows per statement: keeps the parameter count far below SQLite's and PostgreSQL's limits.
INSERT_CHUNK = 500


def insert_ignore_returning(
    model: type[models.Model],
    rows: Sequence[dict[str, Any]],
    *,
    conflict_fields: Iterable[str],
    returning: Sequence[str] = ("id",),
) -> list[tuple]:
    """Insert ``rows`` (dicts of field name → Python value), skip those that violate the unique constraint on
    ``conflict_fields``, and return the ``returning`` columns of the rows actually inserted."""
    if not rows:
        return []
    meta = model._meta
    field_names = list(rows[0].keys())
    fields = [meta.get_field(name) for name in field_names]
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)
    conflict = ", ".join(qn(meta.get_field(name).column) for name in conflict_fields)
    returning_sql = ", ".join(qn(meta.get_field(name).column) for name in returning)
    placeholders_one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    result: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            params: list[Any] = []
            for row in chunk:
                for f, name in zip(fields, field_names, strict=True):
                    params.append(f.get_db_prep_save(row[name], connection))
            # Identifiers come from the model's meta and are quoted; every value is a parameter.
            values = ", ".join([placeholders_one] * len(chunk))
            sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES {values} "  # noqa: S608
            sql += f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {returning_sql}"
            cursor.execute(sql, params)
            result.extend(cursor.fetchall())
    return result


#: How often (seconds) a thread that wants the GIL gets it from a busy one while a StatementQueue runs. Python's
#: default, 5 ms, would make the queue's thread wait up to 5 ms at each step of each statement (sending, reading the
#: result) while the caller's thread computes: ~25 steps per batch. A short interval lets PostgreSQL get its next
#: statement at once; the cost for the computing thread is a few more switches.
QUEUE_SWITCH_INTERVAL = 0.0005
_switch_lock = threading.Lock()
_switch_users = 0
_switch_default = sys.getswitchinterval()


def _short_gil_switch(delta: int) -> None:
    """Count the running queues; the process uses the short switch interval while there is at least one."""
    global _switch_users, _switch_default
    with _switch_lock:
        if _switch_users == 0 and delta > 0:
            _switch_default = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_default, QUEUE_SWITCH_INTERVAL))
        _switch_users += delta
        if _switch_users == 0:
            sys.setswitchinterval(_switch_default)


class StatementQueue:
    """Database work run on a helper thread, in the order it was submitted, on the caller's connection and inside its
    transaction, so that PostgreSQL executes one batch's statements while Python prepares the next one.

    ``submit(job)`` returns a ``Future``; ``job(cursor)`` gets a psycopg cursor of the shared connection (psycopg
    serialises the threads' use of a connection). After a job fails, the jobs behind it are not run: their futures
    carry the same exception, so whichever result the caller waits for next raises it. Leaving the ``with`` block
    waits for the running job and drops the pending ones, before the caller's transaction ends, so nothing can run
    after a rollback.

    On other databases than PostgreSQL (SQLite: one writer, no benefit, and its connections belong to one thread)
    jobs run at once in the caller's thread with a Django cursor. Jobs must not use the ORM: Django's connection
    object belongs to the caller's thread."""

    def __init__(self) -> None:
        self.threaded = connection.vendor == "postgresql"
        self._executor = None
        self._failure: BaseException | None = None

    def __enter__(self) -> StatementQueue:
        if self.threaded:
            connection.ensure_connection()
            self._raw = connection.connection
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loop-sql")
            _short_gil_switch(+1)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
            _short_gil_switch(-1)

    def _run(self, job):
        if self._failure is not None:
            raise self._failure
        try:
            if self.threaded:
                with self._raw.cursor() as cursor:
                    return job(cursor)
            with connection.cursor() as cursor:
                return job(cursor)
        except BaseException as exc:
            self._failure = exc
            raise

    def submit(self, job) -> Future:
        """Queue ``job(cursor)``; returns a ``concurrent.futures.Future`` of its result."""
        if self._executor is not None:
            return self._executor.submit(self._run, job)
        future: Future = Future()
        try:
            future.set_result(self._run(job))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def run(self, job):
        """Run ``job(cursor)`` after the queued work and return its result (raises what the job raised)."""
        return self.submit(job).result()

    def drain(self) -> None:
        """Wait until every submitted job has run; raise the first failure."""
        self.run(lambda cursor: None)
