"""JSON request parsing with size limits and gzip bodies (RudderStack's SDK gzips by default).

The JSON must be strict (RFC 8259: no ``NaN`` or ``Infinity``) and nested at most as deep as Python's parser allows.
A NUL character (``\\u0000``) or a lone surrogate (``\\ud800`` without its pair) in a string or key is replaced by
U+FFFD: PostgreSQL can store them neither in text nor in ``jsonb``, and refusing the whole batch for one would lose
the other messages.
"""

from __future__ import annotations

import json
import re
import zlib

from django.utils.translation import gettext as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from crm.ingest.messages import MAX_BATCH_BYTES

READ_CHUNK = 64 * 1024


class TooLarge(ParseError):
    default_code = "too_large"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


#: What neither PostgreSQL (text, jsonb) nor UTF-8 can hold: NUL, and a surrogate not part of a pair (a pair written
#: as two escapes is one character after parsing).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: A NUL or a surrogate can only be written as an escape (JSON forbids raw control characters in strings, and the
#: body must be valid UTF-8): bodies without one need no cleaning.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _storable(value):
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def parse_json(body: bytes):
    """Strict JSON from ``body``, with NUL characters replaced; ParseError when it is not valid JSON."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(_("The body is not valid JSON: %(error)s") % {"error": str(exc)[:200]}) from None
    except RecursionError:
        raise ParseError(_("The body is not valid JSON: it is nested too deeply.")) from None
    return _storable(data) if _UNSTORABLE_ESCAPE.search(body) else data


def read_limited(stream, limit: int, encoding: str) -> bytes:
    """Read the body, decompressing gzip/deflate, and refuse more than ``limit`` bytes of JSON."""
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        out = bytearray()
        try:
            while chunk := stream.read(READ_CHUNK):
                out += inflater.decompress(chunk, limit + 1 - len(out))
                if len(out) > limit or inflater.unconsumed_tail:
                    raise TooLarge(_("The body is larger than %(n)d KB uncompressed.") % {"n": limit // 1024})
            out += inflater.flush()
        except zlib.error:
            raise ParseError(_("The body is not valid %(encoding)s data.") % {"encoding": encoding}) from None
        if len(out) > limit:
            raise TooLarge(_("The body is larger than %(n)d KB uncompressed.") % {"n": limit // 1024})
        return bytes(out)
    if encoding not in ("", "identity"):
        raise ParseError(_("Unsupported Content-Encoding '%(encoding)s'.") % {"encoding": encoding[:20]})
    body = stream.read(limit + 1) if stream is not None else b""
    if len(body) > limit:
        raise TooLarge(_("The body is larger than %(n)d KB.") % {"n": limit // 1024})
    return body


class TrackingJSONParser(parsers.JSONParser):
    """application/json, possibly gzip-compressed, at most the view's ``max_body_bytes`` (default 500 KB)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        view = parser_context.get("view")
        request = parser_context.get("request")
        limit = getattr(view, "max_body_bytes", MAX_BATCH_BYTES)
        encoding = (request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else "").strip().lower()
        body = read_limited(stream, limit, encoding)
        if not body:
            raise ParseError(_("The body is empty; a JSON object was expected."))
        return parse_json(body)


class TrackingTextParser(TrackingJSONParser):
    """Browsers post JSON as text/plain to avoid a CORS preflight (analytics.js does); parse it as JSON."""

    media_type = "text/plain"
