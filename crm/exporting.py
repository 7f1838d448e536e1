"""Exports: contacts (any queryset: all, a changelist's filter, a segment's members) and events, to CSV or XLSX.

Reads only. Rows are streamed in keyset-paginated chunks of ``CHUNK`` (``WHERE id > last ORDER BY id``), with one
query per chunk for consent and one for tags, so memory stays flat however many rows there are.

- CSV: UTF-8 with a BOM (Excel then opens Korean text correctly), CRLF line ends, streamed as bytes.
- XLSX: openpyxl's write-only mode into a temporary file (the whole file must exist before it can be sent); a new
  sheet starts every ``XLSX_SHEET_ROWS`` rows, Excel's limit being 1,048,576.

The contact columns use the import's header labels, so an exported file can be edited and imported again. Times are
in the workspace time zone. Korean phone numbers are written as 010-1234-5678 (Excel would turn +821012345678 into a
number). A text cell that would start a spreadsheet formula (``=``, ``@``, ``+``/``-`` not followed by a number) is
prefixed with an apostrophe.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

import phonenumbers
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.importing.mapping import CONSENT_PREFIX, FIELD_LABELS, READ_ONLY_LABELS
from crm.models import Consent, ConsentPurpose, Contact

CHUNK = 2_000
XLSX_SHEET_ROWS = 1_000_000
CSV_FLUSH_ROWS = 500

CONTACT_FIELDS = ("id", "external_id", "name", "email", "phone", "locale", "time_zone", "attributes", "created_at")
CONTACT_FIELDS += ("order_count", "total_revenue", "last_order_at")


def _contact_headers(attribute_keys: list[str]) -> list[str]:
    fixed = [str(FIELD_LABELS[f]) for f in ("external_id", "name", "email", "phone", "locale", "time_zone", "tags")]
    consents = [str(FIELD_LABELS[f"{CONSENT_PREFIX}{p}"]) for p in ConsentPurpose.values]
    extra = [READ_ONLY_LABELS[f] for f in ("created_at", "order_count", "total_revenue", "last_order_at")]
    return [*fixed, *consents, *map(str, extra), *attribute_keys]


def attribute_keys(queryset: QuerySet) -> list[str]:
    """Every attribute key used by the contacts of ``queryset``, sorted: one query, in the database."""
    sql, params = queryset.order_by().values("attributes").query.sql_with_params()
    if connection.vendor == "postgresql":
        query = f"SELECT DISTINCT jsonb_object_keys(t.attributes) FROM ({sql}) t"  # noqa: S608 (ORM-built SQL)
    elif connection.vendor == "sqlite":
        query = f"SELECT DISTINCT j.key FROM ({sql}) t, json_each(t.attributes) j"  # noqa: S608
    else:  # any other database: read the attributes (slow, but correct)
        keys: set[str] = set()
        for attributes in queryset.values_list("attributes", flat=True).iterator(chunk_size=CHUNK):
            keys.update(attributes or {})
        return sorted(keys)
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return sorted(row[0] for row in cursor.fetchall())


def keyset_chunks(queryset: QuerySet, fields: Iterable[str], size: int | None = None) -> Iterator[list[tuple]]:
    """``values_list(*fields)`` of the queryset in chunks of ``size``, by ascending id (``fields[0]`` must be id)."""
    size = size or CHUNK
    queryset = queryset.order_by("pk")
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        rows = list(page.values_list(*fields)[:size])
        if not rows:
            return
        yield rows
        last = rows[-1][0]
        if len(rows) < size:
            return


def local(value: datetime | None) -> datetime | None:
    return timezone.localtime(value).replace(tzinfo=None) if value else None


def display_phone(value: str) -> str:
    """010-1234-5678 for Korean numbers, +1 613-555-0135 for others (E.164 in the database)."""
    if not value:
        return ""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return value
    if number.country_code == 82:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def contact_rows(queryset: QuerySet, *, keys: list[str] | None = None) -> Iterator[list[Any]]:
    """The header, then one row per contact with typed values (numbers, booleans, naive local datetimes, text).

    Erased contacts are never exported, whatever the selection.
    """
    queryset = queryset.filter(erased_at__isnull=True)
    keys = attribute_keys(queryset) if keys is None else keys
    yield _contact_headers(keys)
    purposes = ConsentPurpose.values
    through = Contact.tags.through
    for chunk in keyset_chunks(queryset, CONTACT_FIELDS):
        ids = [row[0] for row in chunk]
        consents: dict[int, dict[str, bool]] = defaultdict(dict)
        for contact_id, purpose, granted in Consent.objects.filter(contact_id__in=ids).values_list(
            "contact_id", "purpose", "granted"
        ):
            consents[contact_id][purpose] = granted
        tags: dict[int, list[str]] = defaultdict(list)
        for contact_id, name in (
            through.objects.filter(contact_id__in=ids).order_by("tag__name").values_list("contact_id", "tag__name")
        ):
            tags[contact_id].append(name)
        for pk, ext, name, email, phone, locale_, tz, attributes, created, orders, revenue, last_order in chunk:
            mine = consents.get(pk, {})
            attributes = attributes or {}
            yield [
                ext or "",
                name,
                email,
                display_phone(phone),
                locale_,
                tz,
                ", ".join(tags.get(pk, ())),
                *[mine.get(p) for p in purposes],
                local(created),
                orders,
                revenue,
                local(last_order),
                *[attributes.get(k) for k in keys],
            ]


def event_rows(queryset: QuerySet) -> Iterator[list[Any]]:
    """The header, then one row per event (oldest first by id); events of erased contacts are left out."""
    queryset = queryset.filter(contact__erased_at__isnull=True)
    yield [
        str(_("Occurred at")),
        str(_("Event")),
        str(_("Type")),
        str(FIELD_LABELS["external_id"]),
        str(FIELD_LABELS["email"]),
        str(_("Source")),
        str(_("Message ID")),
        str(_("Properties")),
    ]
    fields = (
        "id",
        "occurred_at",
        "name",
        "type",
        "contact__external_id",
        "contact__email",
        "source__name",
        "message_id",
        "properties",
    )
    for chunk in keyset_chunks(queryset, fields):
        for _pk, occurred, name, kind, ext, email, source, message_id, properties in chunk:
            yield [local(occurred), name, kind, ext or "", email, source, message_id, properties or {}]


_FORMULA = re.compile(r"^[=@\t\r]|^[+-](?![\d\s().-]*$)")


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    text = str(value)
    return f"'{text}" if isinstance(value, str) and _FORMULA.match(text) else text


def csv_stream(rows: Iterable[list[Any]]) -> Iterator[bytes]:
    """CSV bytes: the BOM, then the rows in small blocks."""
    yield codecs.BOM_UTF8
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    pending = 0
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
        pending += 1
        if pending >= CSV_FLUSH_ROWS:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode("utf-8")


def xlsx_cell(value: Any) -> Any:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
        return f"'{value}" if _FORMULA.match(value) else value
    return value


def xlsx_write(rows: Iterable[list[Any]], out: IO[bytes], *, sheet_title: str = "") -> int:
    """Write the rows to ``out`` as an XLSX workbook (header repeated on each sheet). Returns the data rows."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    rows = iter(rows)
    header = next(rows)
    title = (sheet_title or "export")[:25]
    sheet = workbook.create_sheet(title)
    sheet.append(header)
    count = in_sheet = 0
    for row in rows:
        if in_sheet >= XLSX_SHEET_ROWS:
            sheet = workbook.create_sheet(f"{title} {count // in_sheet + 1}")
            sheet.append(header)
            in_sheet = 0
        sheet.append([xlsx_cell(v) for v in row])
        count += 1
        in_sheet += 1
    workbook.save(out)
    return count
