"""Email addresses: the one normalization rule used by the API, the tracking ingest, imports and search."""

from __future__ import annotations


def email_domain_lowercased(text: str) -> str:
    """``Kim@Example.COM`` → ``Kim@example.com``: blanks trimmed and the domain lower-cased; the local part is kept
    as written (it may be case-sensitive). Text without a local part and ``@`` is returned trimmed, unchanged."""
    text = text.strip()
    local, sep, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}" if sep and local else text
