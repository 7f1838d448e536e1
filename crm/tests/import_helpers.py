"""Helpers shared by the contact import/export tests (files under ``data/``, running an import)."""

from __future__ import annotations

import io
from pathlib import Path

from crm.models import ContactImport
from crm.services.imports import contact_import_apply, contact_import_preview

DATA = Path(__file__).resolve().parent / "data"


def data_file(name: str) -> bytes:
    return (DATA / name).read_bytes()


def preview(name_or_bytes: str | bytes, *, file_name: str | None = None, user=None, **options) -> ContactImport:
    """Preview a file from ``data/`` (by name) or given bytes."""
    if isinstance(name_or_bytes, str):
        content, file_name = data_file(name_or_bytes), file_name or name_or_bytes
    else:
        content, file_name = name_or_bytes, file_name or "contacts.csv"
    return contact_import_preview(file=io.BytesIO(content), file_name=file_name, options=options, user=user)


def run_import(name_or_bytes: str | bytes, *, file_name: str | None = None, user=None, **options) -> ContactImport:
    """Preview, then apply: what confirming in the admin does for a small file."""
    contact_import = preview(name_or_bytes, file_name=file_name, user=user, **options)
    assert contact_import.status == ContactImport.Status.PREVIEWED, contact_import.failure
    return contact_import_apply(contact_import=contact_import)


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\n".join(lines) + "\n").encode(encoding)
