"""The preview: an exact plan of what every row of a contacts file will do.

Pass 1 reads the file to infer the type of each attribute column (a column's type depends on all its values).
Pass 2 parses each row (:func:`parse_row`), matches it to a contact and decides (:func:`decide`) in batches of
``BATCH_SIZE`` rows with one query for the matching contacts, one for their consent and one for their tags. On
PostgreSQL those queries run on a ``crm.db.StatementQueue`` thread while the next batch is parsed.

Matching: by external ID, then email, then phone (lowest contact id first when several share an email or phone). A
row whose email or phone belongs to a contact with a different external ID is an error, never a silent merge.

Decisions: ``new``, ``update`` (with the exact field, attribute, consent and tag changes), ``unchanged``,
``skip`` (a duplicate of an earlier row in the file: same external ID, email or phone, or the same contact) and
``error`` (with a message per problem). Duplicates are decided on the rows that import, so a row that fixes an
earlier invalid one is not a duplicate.

The plan is written as gzip'ed JSON lines: the parsed row, its decision and a digest of the decision. Applying
recomputes each importing row's decision with the same ``decide`` against the locked contacts and writes only when
every one is unchanged (see ``apply``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import orjson
from django.db import connection
from django.utils.translation import gettext as _

from crm.db import StatementQueue
from crm.importing import BATCH_SIZE
from crm.importing.mapping import (
    ATTRIBUTE,
    BIRTH_DATE,
    CONSENT,
    CONSENT_FIELDS,
    EMAIL,
    EXTERNAL_ID,
    FIELD_LABELS,
    FIRST_NAME,
    GENDER,
    GENERAL_CONSENT_PURPOSES,
    LAST_NAME,
    LOCALE,
    NAME,
    PHONE,
    PROFILE_FIELDS,
    TAGS,
    TIME_ZONE,
    UNSUBSCRIBED_AT,
    CellError,
    Column,
    TypeSniffer,
    as_text,
    convert_attribute,
    date_json,
    map_columns,
    parse_bool,
    parse_date,
    parse_email,
    parse_external_id,
    parse_gender,
    parse_locale,
    parse_phone,
    parse_tags,
    parse_text,
    parse_time_zone,
)
from crm.importing.reader import Table, clean_cell
from crm.models import Consent, ConsentPurpose, Contact, Tag

NEW = "new"
UPDATE = "update"
UNCHANGED = "unchanged"
SKIP = "skip"
ERROR = "error"
ACTIONS = (NEW, UPDATE, UNCHANGED, SKIP, ERROR)
IMPORTED = (NEW, UPDATE, UNCHANGED)
#: Rows of the plan shown in the preview.
SAMPLE_SIZE = 20
PLAN_VERSION = 1
KEYS = (("ext", EXTERNAL_ID), ("email", EMAIL), ("phone", PHONE))
#: The keys a row is matched by, in order.
ID_KEYS = ("ext", "email", "phone")
UNSUBSCRIBED = "!unsubscribed"

Progress = Callable[[int, int], None]
_stdlib_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def dumps(value: Any) -> bytes:
    """Compact JSON (UTF-8): orjson, or the standard library for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:
        return _stdlib_dumps(value).encode()


def to_json(value: Any) -> str:
    return dumps(value).decode()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: datetime) -> int:
    """Microseconds since the epoch: how consent times are compared (exact, and cheap to fetch in bulk)."""
    return (value - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PlanOptions:
    overwrite_empty: bool = False
    tag: str = ""
    list_name: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanOptions:
        return cls(
            overwrite_empty=bool(data.get("overwrite_empty")),
            tag=str(data.get("tag") or "").strip(),
            list_name=str(data.get("list") or "").strip(),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"overwrite_empty": self.overwrite_empty, "tag": self.tag, "list": self.list_name}


# --- Pass 1: columns -----------------------------------------------------------------------------------------------


def infer_columns(table: Table, progress: Progress | None = None, total: int = 0) -> tuple[list[Column], int]:
    """Map the headers and infer each attribute column's type from all of its values. Returns (columns, rows)."""
    columns = map_columns(table.headers or [])
    sniffers = [(c.index, TypeSniffer()) for c in columns if c.field == ATTRIBUTE]
    rows = 0
    for _number, cells in table.rows(clean=False):
        rows += 1
        width = len(cells)
        for index, sniffer in sniffers:
            if index < width:
                value = clean_cell(cells[index])
                if value != "":
                    sniffer.feed(value)
        if progress and rows % BATCH_SIZE == 0:
            progress(rows, total)
    kinds = dict(sniffers)
    for column in columns:
        if column.field == ATTRIBUTE:
            column.type = kinds[column.index].type
    return columns, rows


# --- Pass 2: rows ----------------------------------------------------------------------------------------------------


def _error(column: Column | None, value: Any, code: str, message: str) -> dict[str, Any]:
    return {
        "column": column.label if column else "",
        "value": as_text(value)[:200] if value not in (None, "") else "",
        "code": code,
        "message": message,
    }


#: Distinct values remembered per column (consent, gender, dates, grades repeat; identities are never memoised).
MEMO_SIZE = 20_000
_MISS = object()


def _value_parser(column: Column):
    """The pure function that turns a non-empty cell of this column into its value (or raises CellError)."""
    kind = column.field
    if kind == EXTERNAL_ID:
        return parse_external_id
    if kind == EMAIL:
        return parse_email
    if kind == PHONE:
        return parse_phone
    if kind in (NAME, FIRST_NAME, LAST_NAME):
        return lambda v: parse_text(v, limit=200, code="name")
    if kind == LOCALE:
        return parse_locale
    if kind == TIME_ZONE:
        return parse_time_zone
    if kind == BIRTH_DATE:
        return lambda v: date_json(parse_date(v, compact=True, birthday=True))
    if kind == GENDER:
        return parse_gender
    if kind == TAGS:
        return lambda v: tuple(parse_tags(v))
    if kind == CONSENT or kind in CONSENT_FIELDS:
        return parse_bool
    if kind == ATTRIBUTE:
        kind_of_value = column.type
        return lambda v: convert_attribute(v, kind_of_value)
    return lambda v: None  # IGNORE, UNSUBSCRIBED_AT: only "is it empty" matters


class RowParser:
    """Parses the rows of one file (its columns are known): ``parser(number, cells)`` → the row as plain JSON-able
    values (``ext``, ``email``, ``phone``, ``name``, ``attrs``, ``consents``, ``tags``, ``empty``: the mapped
    columns left empty, ``errors``). Results of columns whose values repeat are remembered."""

    def __init__(self, columns: list[Column]):
        self.columns = columns
        identity = (EXTERNAL_ID, EMAIL, PHONE, NAME, FIRST_NAME, LAST_NAME)
        self.handlers = [
            (column, _value_parser(column), None if column.field in identity else {}) for column in columns
        ]
        self.has_name = any(c.field in (NAME, FIRST_NAME, LAST_NAME) for c in columns)

    def __call__(self, number: int, cells: list[Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"r": number}
        errors: list[dict[str, Any]] = []
        attrs: dict[str, Any] = {}
        general: dict[str, bool] = {}
        specific: dict[str, bool] = {}
        empty: list[str] = []
        name_parts: dict[str, str] = {}
        ncolumns = len(self.columns)
        width = len(cells)
        if width > ncolumns:
            extra = [c for c in cells[ncolumns:] if c != ""]
            if extra:
                errors.append(
                    _error(
                        None,
                        "",
                        "columns",
                        _(
                            "The row has %(cells)d values but the header has %(columns)d columns (a comma inside a "
                            "value that is not in quotes?)."
                        )
                        % {"cells": ncolumns + len(extra), "columns": ncolumns},
                    )
                )
        for column, parse, memo in self.handlers:
            index = column.index
            value = cells[index] if index < width else ""
            kind = column.field
            if value == "":
                if kind in PROFILE_FIELDS:
                    empty.append(kind)
                elif kind == ATTRIBUTE:
                    empty.append(f"attr:{column.key}")
                elif kind in (BIRTH_DATE, GENDER):
                    empty.append(f"attr:{kind}")
                continue
            if memo is None:
                try:
                    parsed = parse(value)
                except CellError as exc:
                    errors.append(_error(column, value, exc.code, exc.message))
                    continue
            else:
                parsed = memo.get(value, _MISS)
                if parsed is _MISS:
                    try:
                        parsed = parse(value)
                    except CellError as exc:
                        parsed = exc
                    if len(memo) < MEMO_SIZE:
                        memo[value] = parsed
                if isinstance(parsed, CellError):
                    errors.append(_error(column, value, parsed.code, parsed.message))
                    continue
            if kind == ATTRIBUTE:
                attrs[column.key] = parsed
            elif kind in (EMAIL, PHONE, LOCALE, TIME_ZONE):
                row[kind] = parsed
            elif kind == EXTERNAL_ID:
                if parsed:
                    row["ext"] = parsed
            elif kind in CONSENT_FIELDS:
                specific[CONSENT_FIELDS[kind]] = parsed
            elif kind == CONSENT:
                for purpose in GENERAL_CONSENT_PURPOSES:
                    general[purpose] = parsed
            elif kind in (NAME, FIRST_NAME, LAST_NAME):
                name_parts[kind] = parsed
            elif kind == BIRTH_DATE:
                attrs[BIRTH_DATE] = parsed
            elif kind == GENDER:
                if parsed is None:
                    empty.append(f"attr:{GENDER}")
                else:
                    attrs[GENDER] = parsed
            elif kind == TAGS:
                row["tags"] = list(parsed)
            elif kind == UNSUBSCRIBED_AT:
                specific[UNSUBSCRIBED] = False
        if name_parts:
            name = compose_name(name_parts)
            if name:
                row["name"] = name
        elif self.has_name:
            empty.append(NAME)
        if specific or general:
            consents = {**general, **{k: v for k, v in specific.items() if k != UNSUBSCRIBED}}
            if UNSUBSCRIBED in specific:  # unsubscribed: withdrawn whatever else the row says
                consents[ConsentPurpose.EMAIL.value] = False
            if consents:
                row["consents"] = consents
        if attrs:
            row["attrs"] = attrs
        if empty:
            row["empty"] = empty
        if errors:
            row["errors"] = errors
        elif "ext" not in row and "email" not in row and "phone" not in row:
            row["errors"] = [
                _error(
                    None,
                    "",
                    "no_identifier",
                    _("The row has no member ID, email or phone: a contact needs at least one of them."),
                )
            ]
        return row


def parse_row(number: int, cells: list[Any], columns: list[Column]) -> dict[str, Any]:
    """One row (see ``RowParser``; build one parser per file to parse many rows)."""
    return RowParser(columns)(number, cells)


def _has_hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


def compose_name(parts: dict[str, str]) -> str:
    """The full name from a name column, or from given and family names (홍 + 길동 → 홍길동; Jane + Doe → Jane Doe)."""
    if parts.get(NAME):
        return parts[NAME]
    first, last = parts.get(FIRST_NAME, ""), parts.get(LAST_NAME, "")
    if _has_hangul(first + last):
        return f"{last}{first}"[:200]
    return " ".join(p for p in (first, last) if p)[:200]


# --- Matching --------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    id: int
    external_id: str | None
    email: str
    phone: str
    name: str
    locale: str
    time_zone: str
    attributes: dict[str, Any]
    consents: dict[str, tuple[bool, int]] = field(default_factory=dict)  # purpose → (granted, micros)
    tags: set[str] = field(default_factory=set)

    def label(self) -> str:
        return self.name or self.email or self.phone or self.external_id or f"#{self.id}"


TARGET_FIELDS = ("id", "external_id", "email", "phone", "name", "locale", "time_zone", "attributes")


@dataclass(slots=True)
class Targets:
    by_id: dict[int, Target] = field(default_factory=dict)
    by_ext: dict[str, Target] = field(default_factory=dict)
    by_email: dict[str, Target] = field(default_factory=dict)
    by_phone: dict[str, Target] = field(default_factory=dict)
    by_key: dict[str, dict[str, Target]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_key = {"ext": self.by_ext, "email": self.by_email, "phone": self.by_phone}


@dataclass(frozen=True, slots=True)
class TargetKeys:
    """What a batch of rows can match: its distinct external IDs, emails and phones, and whether tags matter."""

    exts: list[str]
    emails: list[str]
    phones: list[str]
    tags: bool

    @classmethod
    def of(cls, rows: Iterable[dict[str, Any]]) -> TargetKeys:
        rows = list(rows)
        return cls(
            exts=list({r["ext"] for r in rows if "ext" in r}),
            emails=list({r["email"] for r in rows if r.get("email")}),
            phones=list({r["phone"] for r in rows if r.get("phone")}),
            tags=any(r.get("tags") for r in rows),
        )

    def __bool__(self) -> bool:
        return bool(self.exts or self.emails or self.phones)


def _index(found: Iterable[Target]) -> Targets:
    targets = Targets()
    for target in found:
        targets.by_id[target.id] = target
        if target.external_id:
            targets.by_ext.setdefault(target.external_id, target)
        if target.email:
            targets.by_email.setdefault(target.email, target)
        if target.phone:
            targets.by_phone.setdefault(target.phone, target)
    return targets


def load_targets(rows: Iterable[dict[str, Any]], *, lock: bool = False) -> Targets:
    """The contacts the rows may match (locked with ``lock``), with their consent and, when the rows carry tags,
    their tags. Matching uses the external ID, email and phone indexes (never one OR, which PostgreSQL would scan)."""
    return _load(TargetKeys.of(rows), lock=lock)


def submit_targets(queue: StatementQueue, rows: Iterable[dict[str, Any]], *, lock: bool) -> Callable[[], Targets]:
    """``load_targets`` with its queries queued on ``queue`` (on PostgreSQL they run while the caller goes on).
    Returns the function that waits for them and builds the targets."""
    keys = TargetKeys.of(rows)
    if not keys:
        return Targets
    if not queue.threaded:
        targets = _load(keys, lock=lock)
        return lambda: targets
    future = queue.submit(fetch_targets_job(keys, lock=lock))
    return lambda: _build_targets(*future.result())


def _load(keys: TargetKeys, *, lock: bool) -> Targets:
    if not keys:
        return Targets()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            return _build_targets(*fetch_targets_job(keys, lock=lock)(cursor.cursor))
    targets = _index(Target(*values) for values in _contacts_orm(keys.exts, keys.emails, keys.phones, lock))
    if not targets.by_id:
        return targets
    ids = list(targets.by_id)
    for contact_id, purpose, granted, changed_at in Consent.objects.filter(contact_id__in=ids).values_list(
        "contact_id", "purpose", "granted", "changed_at"
    ):
        targets.by_id[contact_id].consents[purpose] = (granted, micros(changed_at))
    if keys.tags:
        through = Contact.tags.through
        for contact_id, tag_name in through.objects.filter(contact_id__in=ids).values_list("contact_id", "tag__name"):
            targets.by_id[contact_id].tags.add(tag_name)
    return targets


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def pg_array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal (``'{"a","b"}'``): one text parameter, much cheaper to send than a list."""
    return "{" + ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def fetch_targets_job(keys: TargetKeys, *, lock: bool) -> Callable[[Any], tuple[list, list, list]]:
    """PostgreSQL: the job (``job(psycopg cursor)``) that fetches the contacts matching ``keys`` (locked with
    ``lock``), their consent and, when ``keys.tags``, their tags' names, as plain rows."""
    table = _q(Contact._meta.db_table)
    columns = ", ".join(_q(c) for c in TARGET_FIELDS[:-1])
    sql = (
        f"SELECT {columns}, attributes::text FROM {table} WHERE id = ANY(ARRAY("  # noqa: S608 (names from meta)
        f"SELECT id FROM {table} WHERE external_id = ANY(%s::text[]) UNION SELECT id FROM {table} "
        f"WHERE email = ANY(%s::text[]) UNION SELECT id FROM {table} WHERE phone = ANY(%s::text[]))) ORDER BY id"
    )
    if lock:
        sql += " FOR UPDATE"
    params = [pg_array(keys.exts), pg_array(keys.emails), pg_array(keys.phones)]
    consent_sql = (
        "SELECT contact_id, purpose, granted, (extract(epoch FROM changed_at) * 1000000)::bigint "  # noqa: S608
        f"FROM {_q(Consent._meta.db_table)} WHERE contact_id = ANY(%s::bigint[])"
    )
    through = Contact.tags.through
    tag_sql = (
        f"SELECT l.contact_id, t.name FROM {_q(through._meta.db_table)} l "  # noqa: S608
        f"JOIN {_q(Tag._meta.db_table)} t ON t.id = l.tag_id WHERE l.contact_id = ANY(%s::bigint[])"
    )
    with_tags = keys.tags

    def job(cursor) -> tuple[list, list, list]:
        cursor.execute(sql, params)
        contacts = cursor.fetchall()
        if not contacts:
            return contacts, [], []
        ids = "{" + ",".join(str(row[0]) for row in contacts) + "}"
        cursor.execute(consent_sql, [ids])
        consents = cursor.fetchall()
        tags = []
        if with_tags:
            cursor.execute(tag_sql, [ids])
            tags = cursor.fetchall()
        return contacts, consents, tags

    return job


#: 19 digits in a row: maybe an integer beyond 64 bits, which orjson would read as a float.
_LONG_DIGITS = re.compile(r"\d{19}")


def json_loads(text: str) -> Any:
    """JSON from the database, exactly: orjson, or the standard library when the text may hold a big integer."""
    return json.loads(text) if _LONG_DIGITS.search(text) else orjson.loads(text)


def _build_targets(contacts: list, consents: list, tags: list) -> Targets:
    targets = _index(Target(*row[:-1], json_loads(row[-1])) for row in contacts)
    by_id = targets.by_id
    for contact_id, purpose, granted, changed_at in consents:
        by_id[contact_id].consents[purpose] = (granted, changed_at)
    for contact_id, name in tags:
        by_id[contact_id].tags.add(name)
    return targets


def _contacts_orm(exts: list[str], emails: list[str], phones: list[str], lock: bool) -> list[tuple]:
    found: dict[int, tuple] = {}
    for name, values in (("external_id", exts), ("email", emails), ("phone", phones)):
        if not values:
            continue
        contacts = Contact.objects.filter(**{f"{name}__in": values})
        if lock:
            contacts = contacts.select_for_update()
        for row in contacts.values_list(*TARGET_FIELDS):
            found[row[0]] = row
    return [found[k] for k in sorted(found)]


@dataclass(slots=True)
class Seen:
    """What earlier rows of the file already claimed: their keys and their contacts (for in-file duplicates)."""

    #: key kind ("ext", "email", "phone") → value → the first row that imports it
    keys: dict[str, dict[str, int]] = field(default_factory=lambda: {key: {} for key in ID_KEYS})
    contacts: dict[int, int] = field(default_factory=dict)

    def register(self, row: dict[str, Any], action: str, contact_id: int | None) -> None:
        if action not in IMPORTED:
            return
        number = row["r"]
        keys = self.keys
        if "ext" in row:
            keys["ext"].setdefault(row["ext"], number)
        if "email" in row:
            keys["email"].setdefault(row["email"], number)
        if "phone" in row:
            keys["phone"].setdefault(row["phone"], number)
        if contact_id is not None:
            self.contacts.setdefault(contact_id, number)


def _key_label(key: str) -> str:
    return str(FIELD_LABELS[dict(KEYS)[key]])


def decide(
    row: dict[str, Any],
    targets: Targets,
    seen: Seen,
    *,
    overwrite_empty: bool,
    consent_at: int,
    with_old: bool = False,
) -> dict[str, Any]:
    """What importing ``row`` does, given the matching contacts and the rows before it. Pure: writes nothing.

    ``consent_at``: the time of the import's consent records, in microseconds (see ``micros``)."""
    if "errors" in row:
        return {"a": ERROR, "c": None, "errors": row["errors"]}
    seen_keys = seen.keys
    present = [(key, row[key]) for key in ID_KEYS if key in row]
    for key, value in present:
        first = seen_keys[key].get(value)
        if first is not None:
            return {
                "a": SKIP,
                "c": None,
                "dup": first,
                "errors": [
                    _error(
                        None,
                        value,
                        "duplicate",
                        _("Duplicate of row %(row)d (same %(field)s '%(value)s'): skipped.")
                        % {"row": first, "field": _key_label(key), "value": value},
                    )
                ],
            }
    target = None
    matched_by = ""
    indexes = targets.by_key
    for key, value in present:
        target = indexes[key].get(value)
        if target is not None:
            matched_by = key
            break
    ext = row.get("ext")
    if target is not None and matched_by != "ext" and ext and target.external_id and target.external_id != ext:
        return {
            "a": ERROR,
            "c": None,
            "errors": [
                _error(
                    None,
                    row[matched_by],
                    "conflict",
                    _(
                        "The %(field)s '%(value)s' belongs to another contact (member ID '%(other)s', not "
                        "'%(ext)s'): not imported, to avoid merging two people. Correct the row or the contact."
                    )
                    % {
                        "field": _key_label(matched_by),
                        "value": row[matched_by],
                        "other": target.external_id,
                        "ext": ext,
                    },
                )
            ],
        }
    if target is not None and target.id in seen.contacts:
        first = seen.contacts[target.id]
        return {
            "a": SKIP,
            "c": target.id,
            "dup": first,
            "errors": [
                _error(
                    None,
                    row[matched_by],
                    "duplicate",
                    _("Row %(row)d already imports this contact (%(contact)s): skipped as a duplicate.")
                    % {"row": first, "contact": target.label()},
                )
            ],
        }
    tags = row.get("tags") or []
    consents = row.get("consents") or {}
    if target is None:
        values = {f: row[f] for f in PROFILE_FIELDS if row.get(f)}
        if ext:
            values[EXTERNAL_ID] = ext
        return {
            "a": NEW,
            "c": None,
            "set": values,
            "attrs": dict(row.get("attrs") or {}),
            "consents": dict(consents),
            "tags": list(tags),
        }
    changes: dict[str, Any] = {}
    old: dict[str, Any] = {}  # what each change overwrites
    empty = set(row["empty"]) if overwrite_empty and "empty" in row else _NOTHING
    for name in PROFILE_FIELDS:
        current = getattr(target, name)
        new = row.get(name)
        if new:
            if new != current:
                changes[name] = new
                old[name] = current
        elif name in empty and current:
            changes[name] = ""
            old[name] = current
    if ext and not target.external_id:
        changes[EXTERNAL_ID] = ext
        old[EXTERNAL_ID] = None
    attrs = {}
    for key, value in (row.get("attrs") or {}).items():
        current = target.attributes.get(key, _MISSING)
        if current is _MISSING or current != value or type(current) is not type(value):
            attrs[key] = value
            old[f"attr:{key}"] = None if current is _MISSING else current
    unset = []
    if empty:
        current_attrs = target.attributes
        unset = sorted(e[5:] for e in empty if e.startswith("attr:") and e[5:] in current_attrs and e[5:] not in attrs)
        for key in unset:
            old[f"attr:{key}"] = current_attrs[key]
    consent_changes = {}
    for purpose, granted in consents.items():
        state = target.consents.get(purpose)
        # The rule of consent_record_many: a change takes effect when it differs and is not older than the state.
        if state is None or (state[0] != granted and consent_at >= state[1]):
            consent_changes[purpose] = granted
            old[f"consent:{purpose}"] = None if state is None else list(state)
    new_tags = [t for t in tags if t not in target.tags]
    changed = bool(changes or attrs or unset or consent_changes or new_tags)
    decision = {
        "a": UPDATE if changed else UNCHANGED,
        "c": target.id,
        "set": changes,
        "attrs": attrs,
        "unset": unset,
        "consents": consent_changes,
        "tags": new_tags,
    }
    if changed:
        decision["old"] = old  # what the row overwrites: part of the digest, so a concurrent edit is noticed
    if with_old:
        decision["label"] = target.label()
    return decision


_MISSING = object()
_NOTHING: frozenset[str] = frozenset()


def digest(decision: dict[str, Any]) -> str:
    """A fingerprint of what a decision writes. Only updates need one: a new row writes its own values and an
    unchanged row writes nothing, so for them the action and the contact say everything.

    Decisions are built by the same code, in the same order, from the same row: their JSON is canonical."""
    if decision["a"] != UPDATE:
        return ""
    payload = (
        decision["c"],
        decision["set"],
        decision["attrs"],
        decision["unset"],
        decision["consents"],
        decision["tags"],
        decision.get("old"),
    )
    return hashlib.blake2b(dumps(payload), digest_size=12).hexdigest()


def same_decision(entry: dict[str, Any], decision: dict[str, Any]) -> bool:
    """Whether a recomputed decision is the one the preview stored."""
    return entry["a"] == decision["a"] and entry["c"] == decision.get("c") and entry["h"] == digest(decision)


# --- The plan file -------------------------------------------------------------------------------------------------


@dataclass
class PlanSummary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    errors: list[dict[str, Any]] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0

    def add(self, row: dict[str, Any], decision: dict[str, Any]) -> None:
        self.rows += 1
        action = decision["a"]
        self.counts[action] += 1
        if action in (SKIP, ERROR):
            kind = "skipped" if action == SKIP else "error"
            self.errors.extend({"row": row["r"], "kind": kind, **e} for e in decision.get("errors", ()))


def sample_entry(row: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """A row of the preview's sample: what it is and, for an update, each change as [what, before, after]."""
    changes: list[list[Any]] = []
    old = decision.get("old", {})
    for name, value in (decision.get("set") or {}).items():
        changes.append([str(FIELD_LABELS.get(name, name)), old.get(name), value])
    for key, value in (decision.get("attrs") or {}).items():
        changes.append([key, old.get(f"attr:{key}"), value])
    for key in decision.get("unset") or ():
        changes.append([key, old.get(f"attr:{key}"), None])
    for purpose, granted in (decision.get("consents") or {}).items():
        before = old.get(f"consent:{purpose}")
        changes.append([str(ConsentPurpose(purpose).label), before[0] if before else None, granted])
    if decision.get("tags"):
        changes.append([str(FIELD_LABELS[TAGS]), None, ", ".join(decision["tags"])])
    label = decision.get("label") or row.get("name") or row.get("email") or row.get("phone") or row.get("ext") or ""
    return {
        "row": row["r"],
        "action": decision["a"],
        "contact_id": decision.get("c"),
        "label": label,
        "changes": changes if decision["a"] in (NEW, UPDATE) else [],
        "messages": [e["message"] for e in decision.get("errors", ())],
    }


def iter_batches(items: Iterable[Any], size: int | None = None) -> Iterator[list[Any]]:
    size = size or BATCH_SIZE
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_plan(
    table: Table,
    columns: list[Column],
    *,
    options: PlanOptions,
    consent_time: datetime,
    out: IO[bytes],
    total: int = 0,
    progress: Progress | None = None,
) -> PlanSummary:
    """Parse, match and decide every row; write the plan to ``out`` (gzip'ed JSON lines)."""
    summary = PlanSummary()
    seen = Seen()
    consent_at = micros(consent_time)
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as gz:
        header = {"version": PLAN_VERSION, "columns": [c.as_dict() for c in columns], "options": options.as_dict()}
        gz.write(dumps(header) + b"\n")
        parser = RowParser(columns)
        rows = (parser(number, cells) for number, cells in table.rows())

        def decide_batch(batch: list[dict[str, Any]], loading: Callable[[], Targets]) -> None:
            targets = loading()
            lines = []
            for row in batch:
                with_old = len(summary.sample) < SAMPLE_SIZE
                decision = decide(
                    row,
                    targets,
                    seen,
                    overwrite_empty=options.overwrite_empty,
                    consent_at=consent_at,
                    with_old=with_old,
                )
                seen.register(row, decision["a"], decision.get("c"))
                summary.add(row, decision)
                if with_old:
                    summary.sample.append(sample_entry(row, decision))
                lines.append(dumps({"row": row, "a": decision["a"], "c": decision.get("c"), "h": digest(decision)}))
            lines.append(b"")
            gz.write(b"\n".join(lines))
            if progress:
                progress(summary.rows, total)

        # The contacts of a batch are fetched (on PostgreSQL, by the queue's thread) while the next batch is parsed.
        with StatementQueue() as queue:
            pending = None
            for batch in iter_batches(rows):
                loading = submit_targets(queue, (r for r in batch if not r.get("errors")), lock=False)
                if pending is not None:
                    decide_batch(*pending)
                pending = (batch, loading)
            if pending is not None:
                decide_batch(*pending)
    return summary


def read_plan(stream: IO[bytes]) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The plan's header and an iterator over its entries (the plan holds the file's values only: orjson reads
    them exactly)."""
    gz = gzip.GzipFile(fileobj=stream, mode="rb")
    header = orjson.loads(gz.readline())
    if header.get("version") != PLAN_VERSION:
        raise ValueError(f"unsupported plan version {header.get('version')!r}")

    def entries() -> Iterator[dict[str, Any]]:
        for line in gz:
            yield orjson.loads(line)

    return header, entries()
