"""``python manage.py import_contacts PATH [--dry-run] [--tag T] [--list L] [--overwrite-empty]``

Previews the file (the same service as the admin), prints the counts and the rows that cannot be imported, and,
unless ``--dry-run``, applies exactly that preview. A progress bar goes to stderr; the summary and row errors to
stdout. Runs in this process whatever the size (no Celery). Exit status 1 when the file cannot be read or the import
fails.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from crm.importing.errors import format_error
from crm.models import ContactImport
from crm.services.imports import contact_import_apply, contact_import_error_rows, contact_import_preview

Status = ContactImport.Status
BAR_WIDTH = 30


class ProgressBar:
    """``preview [##########----------]  50% 50,000/100,000 rows  12,345 rows/s`` on stderr, redrawn in place."""

    def __init__(self, stream, label: str, *, enabled: bool = True):
        self.stream = stream
        self.label = label
        self.enabled = enabled
        self.started = time.monotonic()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        total = max(total, done, 1)
        filled = int(BAR_WIDTH * done / total)
        rate = done / max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r{self.label:<8}[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {100 * done // total:3d}% "
            f"{done:,}/{total:,} rows  {rate:,.0f} rows/s"
        )
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


class Command(BaseCommand):
    help = "Import contacts from a CSV or Excel file: preview, then apply (or only preview with --dry-run)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="A .csv (UTF-8, UTF-8 with BOM, CP949/EUC-KR) or .xlsx file.")
        parser.add_argument("--dry-run", action="store_true", help="Only preview: show what would happen.")
        parser.add_argument("--tag", default="", help="Tag every imported contact (created if missing).")
        parser.add_argument("--list", default="", dest="list_name", help="Add them to this static list.")
        parser.add_argument(
            "--overwrite-empty", action="store_true", help="Empty cells clear existing values (default: keep them)."
        )
        parser.add_argument("--user", default="", help="Username recorded as the importer in the history.")
        parser.add_argument("--errors-csv", default="", help="Write the rows not imported to this CSV file.")
        parser.add_argument("--max-errors", type=int, default=50, help="Row errors printed (default 50).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, path, dry_run, tag, list_name, overwrite_empty, user, errors_csv, max_errors, **options):
        source = Path(path)
        if not source.is_file():
            raise CommandError(f"No such file: {source}")
        importer = None
        if user:
            importer = get_user_model().objects.filter(username=user).first()
            if importer is None:
                raise CommandError(f"No such user: {user}")
        show = not options["no_progress"] and options.get("verbosity", 1) > 0
        bar = ProgressBar(self.stderr, "preview", enabled=show)
        with source.open("rb") as stream:
            contact_import = contact_import_preview(
                file=stream,
                file_name=source.name,
                options={"tag": tag, "list": list_name, "overwrite_empty": overwrite_empty},
                user=importer,
                progress=bar,
            )
        bar.finish()
        if contact_import.status == Status.FAILED:
            raise CommandError(contact_import.failure)
        self.summary(contact_import, "Preview", max_errors)
        if dry_run:
            self.stdout.write(
                f"Dry run: nothing imported. The preview is import #{contact_import.pk}; confirm it in the admin, or "
                "run again without --dry-run."
            )
            self.write_errors(contact_import, errors_csv)
            return
        started = time.monotonic()
        bar = ProgressBar(self.stderr, "import", enabled=show)
        contact_import = contact_import_apply(contact_import=contact_import, progress=bar)
        bar.finish()
        elapsed = time.monotonic() - started
        if contact_import.status == Status.FAILED:
            raise CommandError(contact_import.failure)
        if contact_import.status != Status.COMPLETED:
            self.summary(contact_import, "New preview", max_errors)
            raise CommandError(contact_import.preview.get("notice") or f"Import #{contact_import.pk} not applied.")
        self.summary(contact_import, "Imported", max_errors, errors=False)
        self.stdout.write(f"Import #{contact_import.pk} applied in {elapsed:.1f} s.")
        self.write_errors(contact_import, errors_csv)

    def summary(self, contact_import: ContactImport, title: str, max_errors: int, *, errors: bool = True) -> None:
        ci = contact_import
        self.stdout.write(
            f"{title}: {ci.total_rows:,} rows ({ci.file_format}, {ci.encoding or '-'}): {ci.new_count:,} new, "
            f"{ci.updated_count:,} updated, {ci.unchanged_count:,} unchanged, {ci.skipped_count:,} skipped, "
            f"{ci.error_count:,} with errors."
        )
        if not errors or not ci.errors:
            return
        for error in ci.errors[:max_errors]:
            self.stdout.write(f"  {format_error(error)}")
        if len(ci.errors) > max_errors:
            self.stdout.write(f"  … and {len(ci.errors) - max_errors:,} more (--errors-csv FILE writes them all).")

    def write_errors(self, contact_import: ContactImport, errors_csv: str) -> None:
        if not errors_csv or not contact_import.errors:
            return
        out = sys.stdout.buffer if errors_csv == "-" else Path(errors_csv).open("wb")  # noqa: SIM115
        try:
            for chunk in contact_import_error_rows(contact_import=contact_import):
                out.write(chunk)
        finally:
            if errors_csv != "-":
                out.close()
        if errors_csv != "-":
            self.stdout.write(f"Rows not imported written to {errors_csv}.")
