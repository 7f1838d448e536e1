"""The rows of an import that were not imported, as a CSV to fix and import again.

The original columns come from the stored upload (exactly as in the file, in its order), followed by an
"Import error" column that explains every problem of the row. That column is ignored when the file is imported
again, so the fixed file can be uploaded as it is. UTF-8 with a BOM, so that Excel opens Korean text correctly.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.utils.translation import gettext as _

from crm.importing.mapping import FIELD_LABELS, IGNORE
from crm.importing.reader import Table, open_table
from crm.models import ContactImport

FLUSH_ROWS = 500


def error_messages_by_row(errors: list[dict[str, Any]]) -> dict[int, list[str]]:
    by_row: dict[int, list[str]] = defaultdict(list)
    for error in errors:
        text = error["message"]
        if error.get("column"):
            text = f"{error['column']}: {text}"
        by_row[error["row"]].append(text)
    return by_row


def format_error(error: dict[str, Any]) -> str:
    """``row 17, 휴대폰: '010-12' is not a valid phone number.``"""
    if error.get("column"):
        return _("row %(row)d, %(column)s: %(message)s") % error
    return _("row %(row)d: %(message)s") % error


def _table(contact_import: ContactImport) -> Table:
    file_field = contact_import.file
    return open_table(lambda: file_field.storage.open(file_field.name, "rb"))


def error_rows_csv(contact_import: ContactImport) -> Iterator[bytes]:
    """Stream the error rows of an import as CSV bytes (BOM first)."""
    by_row = error_messages_by_row(contact_import.errors)
    yield codecs.BOM_UTF8
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    table = _table(contact_import)
    headers = list(table.headers or [])
    error_header = str(FIELD_LABELS[IGNORE])
    error_index = next((i for i, h in enumerate(headers) if h == error_header), None)
    if error_index is None:
        headers.append(error_header)
    writer.writerow(headers)
    pending = 0
    for number, cells in table.original_rows():
        if number not in by_row:
            continue
        message = " / ".join(by_row[number])
        if error_index is None:
            width = len(headers) - 1
            cells = cells + [""] * (width - len(cells))
            # Values beyond the header (a row with too many values) stay, after the error column.
            cells = [*cells[:width], message, *cells[width:]]
        else:
            cells = cells + [""] * (len(headers) - len(cells))
            cells[error_index] = message  # a re-imported error file: replace the old explanation
        writer.writerow(cells)
        pending += 1
        if pending >= FLUSH_ROWS:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode("utf-8")
