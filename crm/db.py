"""Set-based SQL the ORM does not offer, or offers slowly.

- ``insert_ignore_returning``: multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING. Django's
  ``bulk_create(ignore_conflicts=True)`` does not say which rows were inserted; the ingest path needs exactly that.
  It runs on PostgreSQL and on SQLite ≥ 3.35, which both support ``RETURNING``.
- ``bulk_upsert`` and ``bulk_update_rows``: the event processing worker's writes. On PostgreSQL the rows travel as
  one JSON parameter expanded by ``jsonb_to_recordset``: Django's ``bulk_create``/``bulk_update`` spend most of
  their time preparing and quoting one parameter per value (and ``bulk_update`` builds a ``CASE`` per field), which
  for a few hundred rows costs more than the database's work. Elsewhere they use the ORM's own bulk methods.

Statements are built from the model's field definitions; every value is a parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
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
