r"""What the API calls a blank: the characters trimmed around ids and names, and the schema patterns that say so.

A blank is a character that ``\s`` matches in ECMA-262 regular expressions, the dialect of JSON Schema's
``pattern``: tab, line feed, vertical tab, form feed, carriage return, the space separators (U+0020, U+00A0, U+1680,
U+2000–U+200A, U+202F, U+205F, U+3000), U+2028, U+2029 and U+FEFF. These are exactly what JavaScript's
``String.prototype.trim()`` removes. Python's ``str.strip()`` disagrees: it also removes U+001C–U+001F (ASCII
information separators) and U+0085, and keeps U+FEFF, so the API never trims with it.

The patterns spell the characters out rather than writing ``\s``, because regex engines read ``\s`` differently
(Python's ``re`` as ``str.strip()`` does, Rust's ``regex`` as Unicode's White_Space): a pattern in the schema must
mean the same to every validator. (``$`` is ECMA-262's end of the string: a Python ``re`` reading must take it as
``\Z``, since ``re``'s ``$`` also matches before a final newline; schemathesis does so.)
"""

from __future__ import annotations

BLANKS = (
    "\t\n\x0b\x0c\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
#: The blanks as the inside of a regex character class, understood alike by ECMA-262, Python and Rust.
_CLASS = r"\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"

#: A string with at least one character that is not a blank.
NON_BLANK_PATTERN = f"[^{_CLASS}]"
#: A path id: not empty, neither starting nor ending with a blank, without NUL.
TRIMMED_ID_PATTERN = rf"^[^\x00{_CLASS}](?:[^\x00]*[^\x00{_CLASS}])?$"


def strip_blanks(text: str) -> str:
    """``text`` without the blanks around it (and nothing else: not U+001C–U+001F, which ``str.strip()`` removes)."""
    return text.strip(BLANKS)
