"""Reading contact files: format and encoding detected from the bytes, rows with Excel's row numbers."""

import io
from datetime import datetime

import pytest
from django.utils import translation

from crm.importing.reader import CP949, CSV, UTF8, UTF8_BOM, UTF16, XLSX, ImportFileError, open_table
from crm.tests.import_helpers import DATA, csv_bytes, data_file


@pytest.fixture(autouse=True)
def english():
    """Messages are asserted in English (the msgids); the Korean translations live in locale/ko."""
    with translation.override("en"):
        yield


def table_of(content: bytes):
    return open_table(lambda: io.BytesIO(content))


@pytest.mark.parametrize(
    ("name", "fmt", "encoding", "delimiter"),
    [
        ("contacts_utf8.csv", CSV, UTF8, ","),
        ("contacts_utf8_bom.csv", CSV, UTF8_BOM, ","),
        ("contacts_cp949.csv", CSV, CP949, ","),
        ("contacts_utf16.txt", CSV, UTF16, "\t"),
        ("contacts.xlsx", XLSX, "", ","),
    ],
)
def test_format_and_encoding_are_detected_from_the_bytes_not_the_name(name, fmt, encoding, delimiter):
    # The name says nothing: every file is read as "upload.csv".
    table = open_table(lambda: (DATA / name).open("rb"))
    assert (table.format, table.encoding, table.delimiter) == (fmt, encoding, delimiter)
    assert table.headers[:4] == ["회원ID", "이름", "이메일", "휴대폰"]
    assert table.header_row == 1


@pytest.mark.parametrize("name", ["contacts_utf8_bom.csv", "contacts_cp949.csv", "contacts_utf16.txt"])
def test_every_encoding_yields_the_same_rows_as_utf8(name):
    expected = list(table_of(data_file("contacts_utf8.csv")).rows())
    assert list(table_of(data_file(name)).rows()) == expected
    # Excel's row numbers: header is row 1, the blank row 6 is skipped but counted.
    assert [number for number, _cells in expected] == [2, 3, 4, 5, 7, 8]
    assert expected[0][1][:4] == ["m001", "김민준", "MinJun.Kim@Example.COM", "010-1234-5678"]


def test_xlsx_cells_keep_their_types():
    rows = dict(table_of(data_file("contacts.xlsx")).rows())
    assert sorted(rows) == [2, 3, 4, 5, 7, 8]
    assert rows[2][5] == datetime(1990, 3, 5)
    assert rows[2][9] == 12000
    assert rows[2][11] is True
    assert rows[3][3] == 1023456789  # a phone typed as a number lost its leading zero
    assert rows[5][2] == ""  # an empty cell


def test_undecodable_file_is_refused_with_the_encoding_problem_named():
    with pytest.raises(ImportFileError) as exc:
        table_of(data_file("undecodable.csv"))
    assert exc.value.code == "encoding"
    message = exc.value.message
    assert "UTF-8" in message
    assert "CP949" in message
    assert "line 3" in message
    assert "0x" in message
    assert "Nothing was imported" in message


def test_latin1_text_is_not_mistaken_for_korean():
    latin = "name,city\nJosé,München\nRenée,Zürich\n".encode("cp1252")
    with pytest.raises(ImportFileError) as exc:
        table_of(latin)
    assert exc.value.code == "encoding"


def test_short_cp949_file_is_detected():
    table = table_of("이름\n김\n".encode("cp949"))
    assert table.encoding == CP949
    assert list(table.rows()) == [(2, ["김"])]


def test_old_excel_and_binary_files_are_refused():
    with pytest.raises(ImportFileError) as exc:
        table_of(data_file("legacy.xls"))
    assert exc.value.code == "xls"
    assert ".xlsx" in exc.value.message
    with pytest.raises(ImportFileError) as exc:
        table_of(b"%PDF-1.4 ...")
    assert exc.value.code == "binary"


def test_empty_file_and_a_file_of_blank_lines_have_no_header():
    for content in (b"", b"\n\n , ,\n"):
        with pytest.raises(ImportFileError) as exc:
            table_of(content)
        assert exc.value.code == "empty"


def test_cells_are_stripped_and_excel_text_formulas_unwrapped():
    table = table_of(csv_bytes("휴대폰,이름", '"=""01012345678""",  김민준\u200b '))
    assert list(table.rows()) == [(2, ["01012345678", "김민준"])]


def test_header_after_blank_lines_and_semicolons():
    table = table_of(csv_bytes("", "이름;이메일", "김민준;a@example.com"))
    assert (table.header_row, table.delimiter, table.headers) == (2, ";", ["이름", "이메일"])
    assert list(table.rows()) == [(3, ["김민준", "a@example.com"])]
