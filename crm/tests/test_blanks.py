"""What the API calls a blank (``crm.blanks``) is what the OpenAPI schema's patterns say, in every regex reading."""

from __future__ import annotations

import re

import jsonschema_rs  # the validator schemathesis judges responses and requests with

from crm.blanks import BLANKS, NON_BLANK_PATTERN, TRIMMED_ID_PATTERN, strip_blanks

BMP = [chr(i) for i in range(0x10000) if not 0xD800 <= i < 0xE000]
#: Python's str.strip() counts these as whitespace; JSON Schema's (ECMA-262's) \s does not, and neither does the API.
NOT_BLANKS = "\x1c\x1d\x1e\x1f\x85"


def ecma(pattern: str):
    return jsonschema_rs.validator_for({"type": "string", "pattern": pattern}).is_valid


def test_blanks_are_what_json_schema_means_by_whitespace():
    assert [c for c in BMP if ecma(r"^\s$")(c)] == sorted(BLANKS)
    assert "\ufeff" in BLANKS
    assert not set(NOT_BLANKS) & set(BLANKS)


def test_the_non_blank_pattern_reads_the_same_in_ecma_and_python():
    in_ecma, in_python = ecma(NON_BLANK_PATTERN), re.compile(NON_BLANK_PATTERN).search
    for c in BMP:
        assert in_ecma(c) == bool(in_python(c)) == (c not in BLANKS), hex(ord(c))


def test_strip_blanks_trims_only_blanks():
    assert strip_blanks("\u3000\ufeff u1\t\n\u00a0") == "u1"
    assert strip_blanks(f"{NOT_BLANKS}u1{NOT_BLANKS}") == f"{NOT_BLANKS}u1{NOT_BLANKS}"
    assert strip_blanks(BLANKS) == ""


EDGE_IDS = [
    value for c in BLANKS + NOT_BLANKS + "\x00" for value in (c, c + "O", "O" + c, "O" + c + "O", "OO" + c, c * 2)
] + ["O", "O\nO", "한글", "x" * 255, "O\n"]


def test_the_trimmed_id_pattern_is_the_apis_rule():
    in_ecma = ecma(TRIMMED_ID_PATTERN)
    in_python = re.compile(TRIMMED_ID_PATTERN.removesuffix("$") + r"\Z").search
    for value in EDGE_IDS:
        expected = bool(value) and "\x00" not in value and strip_blanks(value) == value
        assert in_ecma(value) == bool(in_python(value)) == expected, ascii(value)
