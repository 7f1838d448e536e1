"""Reading a contacts file: its format and text encoding are detected from its bytes, then rows are streamed.

Formats: XLSX (a ZIP with ``xl/workbook.xml``) and delimited text (CSV; comma, tab or semicolon). Old ``.xls`` files
and other binaries are refused with a message that says what to do.

Encodings as they arrive in Korea, in this order:

1. a byte order mark: UTF-8 with BOM (Excel's "CSV UTF-8"), UTF-16 (Excel's "Unicode text");
2. UTF-8, verified over the whole file (a valid UTF-8 file is never anything else in practice);
3. CP949, the superset of EUC-KR that Excel on Korean Windows writes for "CSV": detected with charset-normalizer
   (restricted to CP949, so that short Korean files are not mistaken for UTF-16 or Latin text, and Latin text is
   not decoded into Hangul garbage), then verified over the whole file.

Anything else is refused with :class:`ImportFileError` naming the problem (the first byte that cannot be decoded
and its line), and nothing is imported.

Rows keep the numbers a marketer sees in Excel: the header is usually row 1, blank rows count but are skipped.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import IO, Any

import charset_normalizer
from django.utils.translation import gettext as _

CSV = "csv"
XLSX = "xlsx"
UTF8 = "utf-8"
UTF8_BOM = "utf-8-sig"
UTF16 = "utf-16"
CP949 = "cp949"
ENCODING_LABELS = {UTF8: "UTF-8", UTF8_BOM: "UTF-8 (BOM)", UTF16: "UTF-16", CP949: "CP949/EUC-KR"}

CHUNK_BYTES = 1 << 20
#: charset-normalizer looks at this much of a file; the whole file is then verified with the codec it chose.
DETECTION_SAMPLE_BYTES = 2 << 20
#: Above this mess ratio the CP949 reading is rejected (Latin-1 text read as CP949 scores far higher).
MAX_CHAOS = 0.2
DELIMITERS = (",", "\t", ";")
csv.field_size_limit(16 * 1024 * 1024)

Opener = Callable[[], AbstractContextManager[IO[bytes]]]


class ImportFileError(Exception):
    """The file cannot be read at all (format, encoding, no header). ``message`` is for the marketer."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


def sniff_format(head: bytes, stream: IO[bytes] | None = None) -> str:
    """``xlsx`` or ``csv`` from the first bytes; raises ImportFileError for other binaries."""
    if head.startswith(b"PK\x03\x04"):
        if stream is not None:
            stream.seek(0)
            try:
                names = set(zipfile.ZipFile(stream).namelist())
            except zipfile.BadZipFile:
                names = set()
            finally:
                stream.seek(0)
            if "xl/workbook.xml" not in names:
                raise ImportFileError(
                    _("This is a ZIP archive, not an Excel workbook. Upload a .xlsx or .csv file."), code="zip"
                )
        return XLSX
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise ImportFileError(
            _(
                "This is an old Excel 97-2003 (.xls) file, which cannot be read. In Excel choose "
                "'Save As' → 'Excel Workbook (.xlsx)' or 'CSV UTF-8', and upload that file."
            ),
            code="xls",
        )
    if head.startswith((b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8")):
        raise ImportFileError(_("This is not a spreadsheet. Upload a .xlsx or .csv file."), code="binary")
    return CSV


def _first_invalid(stream: IO[bytes], encoding: str) -> int | None:
    """Offset of the first byte that does not decode, or None when the whole stream decodes."""
    stream.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    position = 0
    while True:
        chunk = stream.read(CHUNK_BYTES)
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            return max(position - pending + exc.start, 0)
        if not chunk:
            return None
        position += len(chunk)


def _line_of(stream: IO[bytes], offset: int) -> int:
    stream.seek(0)
    return stream.read(offset).count(b"\n") + 1


def detect_encoding(stream: IO[bytes]) -> str:
    """The text encoding of a delimited file (see the module docstring), or ImportFileError."""
    stream.seek(0)
    head = stream.read(4)
    if head.startswith(codecs.BOM_UTF8):
        encoding = UTF8_BOM
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = UTF16
    else:
        encoding = ""
    if encoding:
        bad = _first_invalid(stream, encoding)
        if bad is None:
            return encoding
        raise ImportFileError(
            _(
                "The file starts as %(encoding)s text, but the byte at line %(line)d cannot be read as "
                "%(encoding)s: the file is damaged or mixes encodings. Nothing was imported."
            )
            % {"encoding": ENCODING_LABELS[encoding], "line": _line_of(stream, bad)},
            code="encoding",
        )
    utf8_bad = _first_invalid(stream, UTF8)
    if utf8_bad is None:
        stream.seek(0)
        sample = stream.read(CHUNK_BYTES)
        if b"\x00" in sample:
            raise ImportFileError(_("This is not a text file. Upload a .xlsx or .csv file."), code="binary")
        return UTF8
    stream.seek(0)
    sample = stream.read(DETECTION_SAMPLE_BYTES)
    best = charset_normalizer.from_bytes(sample, cp_isolation=[CP949], preemptive_behaviour=False).best()
    if best is not None and best.chaos <= MAX_CHAOS and b"\x00" not in sample and _first_invalid(stream, CP949) is None:
        return CP949
    stream.seek(utf8_bad)
    byte = stream.read(1)
    raise ImportFileError(
        _(
            "The file's text encoding could not be recognised: it is neither UTF-8 nor CP949/EUC-KR (Korean "
            "Excel's CSV). The byte 0x%(byte)s on line %(line)d cannot be read in either. In Excel choose "
            "'Save As' → 'CSV UTF-8 (Comma delimited)' and upload that file. Nothing was imported."
        )
        % {"byte": byte.hex().upper(), "line": _line_of(stream, utf8_bad)},
        code="encoding",
    )


_EXCEL_TEXT = re.compile(r'^="(.*)"$', re.DOTALL)


def clean_text(value: str) -> str:
    """Strip a cell's whitespace (also no-break and zero-width spaces) and Excel's ``="0101234"`` text trick."""
    text = value.strip().strip("\u200b\ufeff").strip()
    match = _EXCEL_TEXT.match(text)
    return match.group(1).strip() if match else text


def clean_cell(value: Any) -> Any:
    """A cell as the parsers take it: text stripped; numbers, booleans, dates and times from Excel as they are."""
    if value is None:
        return ""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    if isinstance(value, bool | int | float | datetime | date | time):
        return value
    return clean_text(str(value))


def cell_text(value: Any) -> str:
    """A cell as text, for the error CSV and messages."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def is_blank(cells: list[Any]) -> bool:
    return all(c == "" or c is None for c in cells)


@dataclass
class Table:
    """A contacts file opened for reading: format, encoding, header; ``rows()`` streams it again on each call."""

    opener: Opener
    format: str
    encoding: str = ""
    delimiter: str = ","
    headers: list[str] | None = None
    header_row: int = 0

    def raw_rows(self) -> Iterator[tuple[int, list[Any]]]:
        """Every row with its number as Excel shows it (1-based), header and blank rows included."""
        if self.format == XLSX:
            yield from self._xlsx_rows()
            return
        with self.opener() as stream:
            text = io.TextIOWrapper(stream, encoding=self.encoding, errors="strict", newline="")
            try:
                yield from enumerate(csv.reader(text, delimiter=self.delimiter), start=1)
            finally:
                text.detach()

    def _xlsx_rows(self) -> Iterator[tuple[int, list[Any]]]:
        from openpyxl import load_workbook

        with self.opener() as stream:
            try:
                workbook = load_workbook(stream, read_only=True, data_only=True)
            except Exception as exc:  # openpyxl raises many kinds for damaged files
                raise ImportFileError(
                    _("The Excel file could not be opened (%(error)s). Save it again in Excel and upload it.")
                    % {"error": type(exc).__name__},
                    code="xlsx",
                ) from exc
            try:
                sheet = workbook.worksheets[0]
                for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
                    yield number, list(row)
            finally:
                workbook.close()

    def rows(self, *, clean: bool = True) -> Iterator[tuple[int, list[Any]]]:
        """Data rows after the header, cleaned, without blank rows: ``(row number, cells)``. ``clean=False``: the
        cells as read (only blank rows are left out), for a caller that cleans the few cells it needs."""
        text_cells = self.format == CSV
        for number, cells in self.raw_rows():
            if number <= self.header_row:
                continue
            if not clean:
                if text_cells:
                    if "".join(cells).strip():
                        yield number, cells
                elif not is_blank([clean_cell(c) for c in cells]):
                    yield number, cells
                continue
            if text_cells:  # the common case, kept fast: strip, and look closer only when a cell needs it
                cleaned = [c.strip() for c in cells]
                joined = "".join(cleaned)
                if not joined:
                    continue
                if '="' in joined or "\u200b" in joined or "\ufeff" in joined:
                    cleaned = [clean_text(c) for c in cleaned]
            else:
                cleaned = [clean_cell(c) for c in cells]
            if is_blank(cleaned):
                continue
            yield number, cleaned

    def original_rows(self) -> Iterator[tuple[int, list[str]]]:
        """Data rows as text, exactly as in the file (for the error CSV)."""
        for number, cells in self.raw_rows():
            if number > self.header_row:
                yield number, [cell_text(c) for c in cells]


def _sniff_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def open_table(opener: Opener) -> Table:
    """Detect format, encoding and delimiter, find the header row. Raises ImportFileError."""
    with opener() as stream:
        head = stream.read(8)
        stream.seek(0)
        fmt = sniff_format(head, stream)
        encoding = detect_encoding(stream) if fmt == CSV else ""
        delimiter = ","
        if fmt == CSV:
            stream.seek(0)
            text = io.TextIOWrapper(stream, encoding=encoding, newline="")
            try:
                for line in text:
                    if line.strip():
                        delimiter = _sniff_delimiter(line)
                        break
            finally:
                text.detach()
    table = Table(opener=opener, format=fmt, encoding=encoding, delimiter=delimiter)
    for number, cells in table.raw_rows():
        cleaned = [clean_cell(c) for c in cells]
        if is_blank(cleaned):
            continue
        while cleaned and cleaned[-1] == "":
            cleaned.pop()
        table.headers = [cell_text(c) for c in cleaned]
        table.header_row = number
        break
    if not table.headers:
        raise ImportFileError(_("The file is empty: it has no header row."), code="empty")
    return table
