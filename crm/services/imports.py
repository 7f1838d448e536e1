"""Contact imports: upload, preview, confirm, apply, cancel. The only writers of ``ContactImport``.

The flow (admin, ``import_contacts`` command, Celery tasks, benchmark all go through here):

1. ``contact_import_create`` stores the upload and reads its format, encoding and header. Files of at most
   ``LOOP_IMPORT_ASYNC_ROWS`` data rows are previewed at once; larger ones by the ``crm.contact_import_preview``
   task. An unreadable file (format, encoding) is recorded as ``failed`` with the reason; nothing is imported.
2. ``contact_import_plan`` computes the preview: an exact plan per row, stored with the import
   (``crm.importing.plan``).
3. ``contact_import_confirm`` applies it at once, or queues ``crm.contact_import_apply`` for large files.
4. ``contact_import_apply`` writes the plan in one transaction, checking every row against the locked contacts first
   (``crm.importing.apply``). If anything the plan depends on changed since the preview (a contact edited, a contact
   with the same email created meanwhile, consent withdrawn ...), nothing is applied: the preview is recomputed with
   a notice and the marketer confirms again. So what is applied is always exactly what the last preview showed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

from django.core.files import File
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from crm.importing import async_rows_threshold, gc_paused, max_upload_bytes
from crm.importing.apply import PlanChanged, PlanIntegrityError, apply_plan, file_sha256
from crm.importing.errors import error_rows_csv
from crm.importing.mapping import map_columns
from crm.importing.plan import ACTIONS, PlanOptions, build_plan, infer_columns
from crm.importing.progress import progress_clear, progress_set
from crm.importing.reader import CSV, ImportFileError, Table, open_table
from crm.models import ContactImport

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Status = ContactImport.Status
COUNT_FIELDS = ("new_count", "updated_count", "unchanged_count", "skipped_count", "error_count")


class ImportStateError(Exception):
    """The import is not in a state that allows this step (e.g. confirming an import that already ran)."""


def _opener(contact_import: ContactImport):
    file_field = contact_import.file
    return lambda: file_field.storage.open(file_field.name, "rb")


def _count_rows(table: Table) -> int:
    """Data rows, cheaply: CSV rows are counted; for XLSX the sheet's dimension is read (an estimate)."""
    if table.format == CSV:
        return sum(1 for _n, cells in table.raw_rows() if _n > table.header_row and any(c.strip() for c in cells))
    from openpyxl import load_workbook

    with table.opener() as stream:
        workbook = load_workbook(stream, read_only=True, data_only=True)
        try:
            return max((workbook.worksheets[0].max_row or 0) - table.header_row, 0)
        finally:
            workbook.close()


def _fail(contact_import: ContactImport, message: str) -> ContactImport:
    """Record why the import failed (never over a completed or cancelled one)."""
    if contact_import.pk is None:
        contact_import.status = Status.FAILED
        contact_import.failure = message
        contact_import.finished_at = timezone.now()
        contact_import.save()
        return contact_import
    ContactImport.objects.filter(pk=contact_import.pk).exclude(status__in=(Status.COMPLETED, Status.CANCELLED)).update(
        status=Status.FAILED, failure=message, finished_at=timezone.now()
    )
    contact_import.refresh_from_db()
    return contact_import


def _progress_saver(contact_import: ContactImport, progress: Progress | None) -> Progress:
    def report(done: int, total: int) -> None:
        ContactImport.objects.filter(pk=contact_import.pk).update(processed_rows=done)
        progress_set(contact_import.pk, phase="preview", done=done, total=total)
        if progress:
            progress(done, total)

    return report


def contact_import_upload(
    *, file: IO[bytes], file_name: str, options: dict[str, Any] | None = None, user=None, count_rows: bool = True
) -> ContactImport:
    """Store the upload and read its format, encoding, header and (unless ``count_rows`` is false: the caller plans
    it at once, and planning counts) its row count. Status ``pending`` (or ``failed``)."""
    plan_options = PlanOptions.from_dict(options or {})
    name = os.path.basename(file_name or "contacts.csv")[:255] or "contacts.csv"
    contact_import = ContactImport(
        created_by=user if user is not None and user.is_authenticated else None,
        file_name=name,
        options=plan_options.as_dict(),
        status=Status.PENDING,
    )
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(0)
    if size > max_upload_bytes():
        return _fail(
            contact_import,
            _("The file is %(size)d MB; at most %(max)d MB can be imported at once. Split it into smaller files.")
            % {"size": size // (1024 * 1024), "max": max_upload_bytes() // (1024 * 1024)},
        )
    if size == 0:
        return _fail(contact_import, _("The file is empty."))
    contact_import.file.save(name, File(file, name=name), save=False)
    contact_import.file_sha256 = file_sha256(contact_import.file)
    contact_import.save()
    try:
        table = open_table(_opener(contact_import))
        contact_import.file_format = table.format
        contact_import.encoding = table.encoding
        if count_rows:
            contact_import.total_rows = _count_rows(table)
        contact_import.column_mapping = {
            "header_row": table.header_row,
            "delimiter": table.delimiter,
            "columns": [c.as_dict() for c in map_columns(table.headers or [])],
        }
    except ImportFileError as exc:
        return _fail(contact_import, exc.message)
    contact_import.save()
    return contact_import


def contact_import_plan(
    *, contact_import: ContactImport, progress: Progress | None = None, notice: str = ""
) -> ContactImport:
    """Compute the preview (the plan) of an uploaded import. Idempotent: only a pending, previewing (a redelivered
    task) or previewed (recomputed) import is planned."""
    claimed = ContactImport.objects.filter(
        pk=contact_import.pk, status__in=(Status.PENDING, Status.PREVIEWING, Status.PREVIEWED)
    ).update(status=Status.PREVIEWING, processed_rows=0)
    contact_import.refresh_from_db()
    if not claimed:
        return contact_import
    try:
        if file_sha256(contact_import.file) != contact_import.file_sha256:
            raise ImportFileError(_("The stored file changed after it was uploaded; upload it again."), code="changed")
        table = open_table(_opener(contact_import))
        columns, rows = infer_columns(table)
        report = _progress_saver(contact_import, progress)
        with tempfile.TemporaryFile() as out, gc_paused():
            summary = build_plan(
                table,
                columns,
                options=PlanOptions.from_dict(contact_import.options),
                consent_time=contact_import.created_at,
                out=out,
                total=rows,
                progress=report,
            )
            out.seek(0)
            sha = hashlib.sha256()
            for chunk in iter(lambda: out.read(1 << 20), b""):
                sha.update(chunk)
            out.seek(0)
            old_plan = contact_import.plan_file.name if contact_import.plan_file else ""
            contact_import.plan_file.save(f"{contact_import.pk}-plan.jsonl.gz", File(out), save=False)
            if old_plan:
                contact_import.plan_file.storage.delete(old_plan)
    except ImportFileError as exc:
        return _fail(contact_import, exc.message)
    finally:
        progress_clear(contact_import.pk)
    contact_import.plan_sha256 = sha.hexdigest()
    contact_import.file_format = table.format
    contact_import.encoding = table.encoding
    contact_import.column_mapping = {
        "header_row": table.header_row,
        "delimiter": table.delimiter,
        "columns": [c.as_dict() for c in columns],
    }
    contact_import.total_rows = summary.rows
    contact_import.processed_rows = summary.rows
    for action, field in zip(ACTIONS, COUNT_FIELDS, strict=True):
        setattr(contact_import, field, summary.counts[action])
    contact_import.errors = summary.errors
    contact_import.preview = {"counts": summary.counts, "sample": summary.sample, "notice": notice}
    contact_import.previewed_at = timezone.now()
    contact_import.status = Status.PREVIEWED
    contact_import.save()
    return contact_import


def contact_import_preview(
    *, file: IO[bytes], file_name: str, options: dict[str, Any] | None = None, user=None, progress=None
) -> ContactImport:
    """Upload and preview at once, whatever the size (the command line, tests, the benchmark)."""
    contact_import = contact_import_upload(file=file, file_name=file_name, options=options, user=user, count_rows=False)
    if contact_import.status == Status.FAILED:
        return contact_import
    return contact_import_plan(contact_import=contact_import, progress=progress)


def contact_import_create(
    *, file: IO[bytes], file_name: str, options: dict[str, Any] | None = None, user=None
) -> ContactImport:
    """Upload; preview at once when small, else queue the preview task (the admin's upload)."""
    contact_import = contact_import_upload(file=file, file_name=file_name, options=options, user=user)
    if contact_import.status == Status.FAILED:
        return contact_import
    if contact_import.total_rows <= async_rows_threshold():
        return contact_import_plan(contact_import=contact_import)
    from crm.tasks import contact_import_preview_task

    import_id = contact_import.pk
    transaction.on_commit(lambda: contact_import_preview_task.delay(import_id))
    return contact_import


def contact_import_confirm(*, contact_import: ContactImport) -> ContactImport:
    """Apply a previewed import: at once when small, else queue the apply task (status ``queued``)."""
    contact_import.refresh_from_db()
    if contact_import.status != Status.PREVIEWED:
        raise ImportStateError(
            _("This import is %(status)s; only a previewed import can be confirmed.")
            % {"status": contact_import.get_status_display()}
        )
    if contact_import.total_rows <= async_rows_threshold():
        return contact_import_apply(contact_import=contact_import)
    from crm.tasks import contact_import_apply_task

    if ContactImport.objects.filter(pk=contact_import.pk, status=Status.PREVIEWED).update(status=Status.QUEUED):
        import_id = contact_import.pk
        transaction.on_commit(lambda: contact_import_apply_task.delay(import_id))
    contact_import.refresh_from_db()
    return contact_import


def contact_import_apply(*, contact_import: ContactImport, progress: Progress | None = None) -> ContactImport:
    """Apply the stored plan in one transaction (see the module docstring). Idempotent: a completed, cancelled or
    failed import is left alone; a ``running`` one (a redelivered task: its transaction was rolled back when the
    worker died) is applied again from the start."""
    ContactImport.objects.filter(pk=contact_import.pk, status__in=(Status.PREVIEWED, Status.QUEUED)).update(
        status=Status.RUNNING, started_at=timezone.now(), processed_rows=0
    )
    contact_import.refresh_from_db()
    if contact_import.status != Status.RUNNING:
        return contact_import
    total = contact_import.total_rows

    def report(done: int, _total: int) -> None:
        progress_set(contact_import.pk, phase="apply", done=done, total=total)
        if progress:
            progress(done, total)

    try:
        with gc_paused():
            apply_plan(contact_import, progress=report)
    except PlanChanged as exc:
        if not ContactImport.objects.filter(pk=contact_import.pk, status=Status.RUNNING).update(
            status=Status.PREVIEWED
        ):
            contact_import.refresh_from_db()
            return contact_import
        shown = ", ".join(str(n) for n in exc.rows[:10]) + ("…" if exc.count > 10 else "")
        notice = ngettext(
            "Nothing was imported: %(count)d row would now do something else than the preview showed (row "
            "%(rows)s), because contacts changed since the preview. The preview below is up to date: check it and "
            "confirm again.",
            "Nothing was imported: %(count)d rows would now do something else than the preview showed (rows "
            "%(rows)s), because contacts changed since the preview. The preview below is up to date: check it and "
            "confirm again.",
            exc.count,
        ) % {"count": exc.count, "rows": shown}
        return contact_import_plan(contact_import=contact_import, notice=notice)
    except (PlanIntegrityError, ImportFileError) as exc:
        logger.warning("contact import %s failed: %s", contact_import.pk, exc)
        return _fail(
            contact_import, _("The import could not be applied: %(reason)s. Nothing was imported.") % {"reason": exc}
        )
    except Exception as exc:
        logger.exception("contact import %s failed", contact_import.pk)
        return _fail(
            contact_import,
            _("The import stopped with an error (%(error)s); nothing was imported. Ask an operator to check the logs.")
            % {"error": type(exc).__name__},
        )
    finally:
        progress_clear(contact_import.pk)
    contact_import.refresh_from_db()
    if contact_import.status == Status.COMPLETED:
        _delete_plan(contact_import)
    return contact_import


def _delete_plan(contact_import: ContactImport) -> None:
    if contact_import.plan_file:
        contact_import.plan_file.delete(save=False)
        contact_import.save(update_fields=["plan_file"])


def contact_import_cancel(*, contact_import: ContactImport) -> ContactImport:
    """Cancel an import that has not started applying (a queued task then does nothing)."""
    ContactImport.objects.filter(
        pk=contact_import.pk, status__in=(Status.PENDING, Status.PREVIEWING, Status.PREVIEWED, Status.QUEUED)
    ).update(status=Status.CANCELLED, finished_at=timezone.now())
    contact_import.refresh_from_db()
    if contact_import.status == Status.CANCELLED:
        _delete_plan(contact_import)
    return contact_import


def contact_import_run_preview(*, import_id: int) -> None:
    """The preview task's body: plan a pending import (nothing if it is gone or already planned)."""
    contact_import = ContactImport.objects.filter(pk=import_id).first()
    if contact_import is not None:
        contact_import_plan(contact_import=contact_import)


def contact_import_run_apply(*, import_id: int) -> None:
    """The apply task's body: apply a queued import, or resume a running one."""
    contact_import = ContactImport.objects.filter(pk=import_id).first()
    if contact_import is not None:
        contact_import_apply(contact_import=contact_import)


def contact_import_error_rows(*, contact_import: ContactImport) -> Iterator[bytes]:
    """The rows that were not imported, with an error column: CSV bytes (UTF-8 with BOM), streamed."""
    return error_rows_csv(contact_import)


__all__ = [
    "ImportStateError",
    "contact_import_apply",
    "contact_import_cancel",
    "contact_import_confirm",
    "contact_import_create",
    "contact_import_error_rows",
    "contact_import_plan",
    "contact_import_preview",
    "contact_import_run_apply",
    "contact_import_run_preview",
    "contact_import_upload",
]
