"""Typed tests on values inside JSON documents (contact attributes, event and wishlist properties).

Django's JSON lookups behave differently on PostgreSQL and SQLite when the stored type is not the one compared (a
number against text, ``true`` against 1, a missing key), and a segment must have the same members on both. So these
predicates are written out for each database: they test the JSON type first, then the value, and are never NULL, so
``NOT`` of one is exactly its complement.

- text: string values only; ``contains``/``starts_with`` ignore case (ASCII), ``eq``/``in`` are exact.
- number: JSON numbers only (a number sent as text, ``"30"``, is text).
- date: strings starting with ``YYYY-MM-DD`` (dates, or ISO datetimes as imports store them in the workspace time
  zone), compared by that calendar date.
- boolean: JSON ``true``/``false``.
- set: present, not null, and not the empty string.

A path step may be a list (``products[].category``): the test then holds when it holds for any item of the list.
On PostgreSQL, text equality (``eq``, ``in``) and booleans compile to containment (``@>``), also through a list
(``properties @> '{"products": [{"category": "가방"}]}'``): exactly the same matches, no function per list item, and
the GIN index on ``crm_contact.attributes`` serves it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import NotSupportedError
from django.db.models import BooleanField, Expression, F

#: Positive operators this module compiles (negative ones are NOT of these, done by the caller).
JSON_OPS = {
    "text": ("eq", "in", "contains", "starts_with"),
    "number": ("eq", "gt", "gte", "lt", "lte", "between"),
    "date": ("eq", "gt", "gte", "lt", "lte", "between"),
    "boolean": ("is_true", "is_false"),
    "set": ("is_set",),
}
_COMPARE = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True)
class JsonTest:
    """What to test: the value at ``path`` (``array_at``: index of the step that is a list, whose items are tested
    with the rest of the path), compared as ``kind`` with the positive operator ``op`` and its ``values``."""

    path: tuple[str, ...]
    kind: str
    op: str
    values: tuple = ()
    array_at: int | None = None

    def __post_init__(self) -> None:
        if self.op not in JSON_OPS.get(self.kind, ()):
            raise ValueError(f"{self.kind} values have no operator {self.op!r}")


class JsonMatch(Expression):
    """A boolean SQL expression: ``test`` holds for the JSON document in ``source`` (a field name or expression)."""

    conditional = True

    def __init__(self, source: Any, test: JsonTest):
        super().__init__(output_field=BooleanField())
        self.source = F(source) if isinstance(source, str) else source
        self.test = test

    def __repr__(self) -> str:
        return f"JsonMatch({self.source!r}, {self.test!r})"

    def get_source_expressions(self):
        return [self.source]

    def set_source_expressions(self, exprs):
        (self.source,) = exprs

    def as_sql(self, compiler, connection):
        doc_sql, doc_params = compiler.compile(self.source)
        doc = _Sql(doc_sql, tuple(doc_params))
        if connection.vendor == "postgresql":
            sql = _Postgres().match(doc, self.test)
        elif connection.vendor == "sqlite":
            sql = _Sqlite().match(doc, self.test)
        else:  # pragma: no cover
            raise NotSupportedError("segment conditions on JSON values need PostgreSQL or SQLite")
        if sql.never_null:
            return f"({sql.text})", list(sql.params)
        return f"COALESCE(({sql.text}), FALSE)", list(sql.params)


@dataclass(frozen=True)
class _Sql:
    text: str
    params: tuple = ()
    never_null: bool = False  # true or false, never NULL (no COALESCE needed, which would hide it from indexes)


_TOKEN = re.compile(r"\{(\w+)\}|%s")


def _render(template: str, parts: dict[str, _Sql], values: list[Any] | tuple = ()) -> _Sql:
    """Fill ``{name}`` with SQL fragments and ``%s`` with values, keeping the parameters in order."""
    params: list[Any] = []
    values = list(values)
    out: list[str] = []
    position = 0
    for match in _TOKEN.finditer(template):
        out.append(template[position : match.start()])
        if match.group(1):
            part = parts[match.group(1)]
            out.append(part.text)
            params.extend(part.params)
        else:
            out.append("%s")
            params.append(values.pop(0))
        position = match.end()
    out.append(template[position:])
    if values:  # pragma: no cover (a template bug)
        raise ValueError("more values than placeholders")
    return _Sql("".join(out), tuple(params))


def _like_pattern(text: str, *, prefix: bool) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%" if prefix else f"%{escaped}%"


@dataclass(frozen=True)
class _Access:
    """How to read one value: its JSON type name (``t``) and its scalar SQL value (``s``)."""

    t: _Sql
    s: _Sql


class _Dialect:
    STRING = NUMBER = BOOLEAN = NULL = ""

    def match(self, doc: _Sql, test: JsonTest) -> _Sql:
        if test.array_at is None:
            return self.predicate(self.access(doc, test.path), test)
        return self.any_item(doc, test.path[: test.array_at + 1], test.path[test.array_at + 1 :], test)

    def predicate(self, acc: _Access, test: JsonTest) -> _Sql:
        parts = {"t": acc.t, "s": acc.s}
        kind, op, values = test.kind, test.op, list(test.values)
        if kind == "set":
            return _render(
                f"{{t}} IS NOT NULL AND {{t}} <> 'null' AND NOT ({self.is_string('{t}')} AND {{s}} = '')", parts
            )
        if kind == "boolean":
            return self.boolean(acc, op == "is_true")
        if kind == "text":
            string = self.is_string("{t}")
            if op == "eq":
                return self.text_eq(acc, values[0])
            if op == "in":
                return _render(f"{string} AND {{s}} IN ({', '.join(['%s'] * len(values))})", parts, values)
            pattern = _like_pattern(values[0], prefix=op == "starts_with")
            return _render(f"{string} AND LOWER({{s}}) LIKE %s ESCAPE '\\'", parts, [pattern])
        value = self.number(acc) if kind == "number" else self.date(acc)
        values = [self.number_param(v) for v in values] if kind == "number" else values
        if op == "between":
            return _render("{v} >= %s AND {v} <= %s", {"v": value}, values)
        return _render(f"{{v}} {_COMPARE[op]} %s", {"v": value}, values)

    def text_eq(self, acc: _Access, value: str) -> _Sql:
        return _render(f"{self.is_string('{t}')} AND {{s}} = %s", {"t": acc.t, "s": acc.s}, [value])

    def is_string(self, t: str) -> str:
        return f"{t} = '{self.STRING}'"

    # Implemented by each dialect: access, any_item, boolean, number, date, number_param.


class _Postgres(_Dialect):
    def access(self, doc: _Sql, path: tuple[str, ...]) -> _Access:
        if not path:
            value = doc
            text = _render("({d} #>> '{}')", {"d": doc})
        else:
            arrows = " -> ".join(["%s"] * len(path))
            value = _render(f"({{d}} -> {arrows})", {"d": doc}, path)
            head = " -> ".join(["%s"] * (len(path) - 1))
            text = _render(f"({{d}} -> {head} ->> %s)" if head else "({d} ->> %s)", {"d": doc}, path)
        return _Access(t=_render("jsonb_typeof({v})", {"v": value}), s=text)

    def is_string(self, t: str) -> str:
        return f"{t} = 'string'"

    #: Up to this many values, ``in`` is an OR of containments (each served by a GIN index); beyond, a plain IN.
    MAX_CONTAINED = 100

    @staticmethod
    def _nest(path: tuple[str, ...], value: Any, *, list_path: tuple[str, ...] | None = None) -> Any:
        """``{"a": {"b": value}}``; with ``list_path`` the value sits in an item of the list there:
        ``{"products": [{"category": value}]}`` (containment then means: some item has it)."""
        nested = value
        for key in reversed(path):
            nested = {key: nested}
        if list_path is not None:
            nested = [nested]
            for key in reversed(list_path):
                nested = {key: nested}
        return nested

    def _containment(self, doc: _Sql, shapes: list[Any]) -> _Sql:
        """``doc @> shape`` (OR of several): exact equality of strings and booleans, any item of a list included."""
        parts = " OR ".join(["{d} @> %s::jsonb"] * len(shapes))
        sql = _render(f"({parts})", {"d": doc}, [json.dumps(shape, ensure_ascii=False) for shape in shapes])
        # The documents (attributes, properties) are NOT NULL columns, so containment is never NULL.
        return _Sql(sql.text, sql.params, never_null=True)

    def _contained_values(self, test: JsonTest) -> list[Any] | None:
        """The values a test is equivalent to containing (text eq/in, booleans), or None if it is not."""
        if test.kind == "text" and test.op == "eq":
            return [test.values[0]]
        if test.kind == "text" and test.op == "in" and len(test.values) <= self.MAX_CONTAINED:
            return list(test.values)
        if test.kind == "boolean":
            return [test.op == "is_true"]
        return None

    def match(self, doc: _Sql, test: JsonTest) -> _Sql:
        values = self._contained_values(test)
        if values is not None:
            if test.array_at is None:
                return self._containment(doc, [self._nest(test.path, v) for v in values])
            list_path, rest = test.path[: test.array_at + 1], test.path[test.array_at + 1 :]
            return self._containment(doc, [self._nest(rest, v, list_path=list_path) for v in values])
        return super().match(doc, test)

    def any_item(self, doc: _Sql, list_path: tuple[str, ...], rest: tuple[str, ...], test: JsonTest) -> _Sql:
        items = self.access(doc, list_path)
        listed = _render("({d} #> %s::text[])", {"d": doc}, [list(list_path)])
        inner = self.predicate(self.access(_Sql("_item.value"), rest), test)
        return _render(
            "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN {t} = 'array' THEN {l} END) AS _item(value)"
            " WHERE {p})",
            {"t": items.t, "l": listed, "p": inner},
        )

    def boolean(self, acc: _Access, truth: bool) -> _Sql:
        return _render("{t} = 'boolean' AND {s} = %s", {"t": acc.t, "s": acc.s}, ["true" if truth else "false"])

    def number(self, acc: _Access) -> _Sql:
        return _render("(CASE WHEN {t} = 'number' THEN ({s})::numeric END)", {"t": acc.t, "s": acc.s})

    def date(self, acc: _Access) -> _Sql:
        return _render(
            "(CASE WHEN {t} = 'string' AND {s} ~ '^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'"
            " THEN substr({s}, 1, 10) END)",
            {"t": acc.t, "s": acc.s},
        )

    def number_param(self, value: Any) -> Decimal:
        return Decimal(str(value))


def _sqlite_path(keys: tuple[str, ...]) -> str:
    """A JSON path for SQLite's json_extract/json_type. Keys are written as Django's JSONField stores them on SQLite
    (``json.dumps``: non-ASCII as ``\\uXXXX`` escapes): SQLite before 3.45 compares a path's label with the stored key's
    text as written, so ``$."등급"`` would never find the stored ``"\\ub4f1\\uae09"``; newer versions accept both."""
    return "$" + "".join("." + json.dumps(key) for key in keys)


class _Sqlite(_Dialect):
    def access(self, doc: _Sql, path: tuple[str, ...], *, item: bool = False) -> _Access:
        json_path = _sqlite_path(path)
        if item and not path:  # an item of json_each: its own columns
            return _Access(t=_Sql("_item.type"), s=_Sql("_item.atom"))
        if item:  # a key inside an item: only objects have keys (a text item is not JSON text)
            return _Access(
                t=_render("(CASE WHEN _item.type = 'object' THEN json_type(_item.value, %s) END)", {}, [json_path]),
                s=_render("(CASE WHEN _item.type = 'object' THEN json_extract(_item.value, %s) END)", {}, [json_path]),
            )
        return _Access(
            t=_render("json_type({d}, %s)", {"d": doc}, [json_path]),
            s=_render("json_extract({d}, %s)", {"d": doc}, [json_path]),
        )

    def is_string(self, t: str) -> str:
        return f"{t} = 'text'"

    def any_item(self, doc: _Sql, list_path: tuple[str, ...], rest: tuple[str, ...], test: JsonTest) -> _Sql:
        json_path = _sqlite_path(list_path)
        inner = self.predicate(self.access(doc, rest, item=True), test)
        return _render(
            "json_type({d}, %s) = 'array' AND EXISTS (SELECT 1 FROM json_each({d}, %s) AS _item WHERE {p})",
            {"d": doc, "p": inner},
            [json_path, json_path],
        )

    def boolean(self, acc: _Access, truth: bool) -> _Sql:
        return _render("{t} = %s", {"t": acc.t}, ["true" if truth else "false"])

    def number(self, acc: _Access) -> _Sql:
        return _render("(CASE WHEN {t} IN ('integer', 'real') THEN {s} END)", {"t": acc.t, "s": acc.s})

    def date(self, acc: _Access) -> _Sql:
        return _render(
            "(CASE WHEN {t} = 'text' AND {s} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"
            " THEN substr({s}, 1, 10) END)",
            {"t": acc.t, "s": acc.s},
        )

    def number_param(self, value: Any) -> int | float:
        # Django sends Decimals to SQLite as text, and a number never equals text there.
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
