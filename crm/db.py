"""Set-based SQL the ORM does not offer, or offers slowly.

- ``insert_ignore_returning``: multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING. Django's
  ``bulk_create(ignore_conflicts=True)`` does not say which rows were inserted; the ingest path needs exactly that.
  It runs on PostgreSQL and on SQLite ≥ 3.35, which both support ``RETURNING``.
- ``bulk_upsert`` and ``bulk_update_rows``: the event processing worker's writes. On PostgreSQL the rows travel as
  one JSON parameter expanded by ``jsonb_to_recordset``: Django's ``bulk_create``/``bulk_update`` spend most of
  their time preparing and quoting one parameter per value (and ``bulk_update`` builds a ``CASE`` per field), which
  for a few hundred rows costs more than the database's work. Elsewhere they use the ORM's own bulk methods.
- ``StatementQueue``: bulk work (the contact import) queues its statements on a helper thread that shares the
  connection and the transaction, so that PostgreSQL works on one batch while Python prepares the next and both
  cores are used. On SQLite the statements run at once, in order.

Statements are built from the model's field definitions; every value is a parameter.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
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


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_param(value: Any) -> str:
    """JSON text of ``value`` for a ``%s::jsonb`` parameter: orjson (fast) with Decimal as a string; json for what
    orjson refuses (integers beyond 64 bits, which senders may send in event properties)."""
    try:
        return orjson.dumps(value, default=_json_default).decode()
    except TypeError:
        return json.dumps(value, default=_json_default)


def _recordset(model: type[models.Model], names: Sequence[str]) -> tuple[list[models.Field], str]:
    """The fields (by name or attname, e.g. ``contact_id``) and the ``jsonb_to_recordset`` column definitions."""
    fields = [model._meta.get_field(name) for name in names]
    qn = connection.ops.quote_name
    return fields, ", ".join(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)


def _rows_json(fields: Sequence[models.Field], names: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    columns = [f.column for f in fields]
    return json_param([{column: row[name] for column, name in zip(columns, names, strict=True)} for row in rows])


def bulk_upsert(
    model: type[models.Model],
    rows: Sequence[dict[str, Any]],
    *,
    unique_fields: Sequence[str] | None = None,
    update_fields: Sequence[str] = (),
) -> None:
    """Insert ``rows`` (dicts of field name → value, every row with the same keys, every column given); a row that
    conflicts on ``unique_fields`` updates ``update_fields`` instead, or is skipped when there are none. Without
    ``unique_fields`` a plain INSERT."""
    if not rows:
        return
    names = list(rows[0])
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            [model(**row) for row in rows],
            update_conflicts=bool(update_fields),
            ignore_conflicts=bool(unique_fields) and not update_fields,
            unique_fields=unique_fields if update_fields else None,
            update_fields=update_fields or None,
        )
        return
    qn = connection.ops.quote_name
    fields, definition = _recordset(model, names)
    columns = ", ".join(qn(f.column) for f in fields)
    conflict = ", ".join(qn(model._meta.get_field(name).column) for name in unique_fields or ())
    if not unique_fields:
        action = ""
    elif update_fields:
        sets = ", ".join(
            f"{qn(c)} = EXCLUDED.{qn(c)}" for c in (model._meta.get_field(name).column for name in update_fields)
        )
        action = f"ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
    else:
        action = f"ON CONFLICT ({conflict}) DO NOTHING"
    sql = (
        f"INSERT INTO {qn(model._meta.db_table)} ({columns}) SELECT {columns} "  # noqa: S608 (identifiers from meta)
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({definition}) {action}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_rows_json(fields, names, rows)])


def bulk_update_rows(model: type[models.Model], rows: Sequence[dict[str, Any]], *, key: str = "id") -> None:
    """Set the fields of each row (dicts with ``key`` and the same other field names) on the row with that key."""
    if not rows:
        return
    names = list(rows[0])
    if connection.vendor != "postgresql":
        update_fields = [name for name in names if name != key]
        objs = [model(**row) for row in rows]
        model.objects.bulk_update(objs, update_fields)
        return
    qn = connection.ops.quote_name
    fields, definition = _recordset(model, names)
    key_column = qn(model._meta.get_field(key).column)
    sets = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in fields if f.name != key)
    sql = (
        f"UPDATE {qn(model._meta.db_table)} t SET {sets} "  # noqa: S608 (identifiers from meta)
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({definition}) WHERE t.{key_column} = v.{key_column}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_rows_json(fields, names, rows)])


def int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers, for ``= ANY(%s::bigint[])``: one string to quote, not one value each."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"
