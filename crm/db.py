"""Set-based SQL the ORM does not offer: multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING.

Django's ``bulk_create(ignore_conflicts=True)`` does not say which rows were inserted. The ingest path needs exactly
that (only new events update commerce state and are announced), so this builds the statement from the model's own
field definitions. It runs on PostgreSQL and on SQLite ≥ 3.35, which both support ``RETURNING``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
