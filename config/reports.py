"""Report tables shared by the dashboard, the recurring campaign's runs and the journey funnel: each table has a key,
a title, its columns and its rows, and the permission needed to see it; the same table renders as HTML, feeds a
chart, and downloads as CSV (``?format=csv&table=KEY`` on the page that shows it).

CSV: UTF-8 with a BOM (Excel then opens Korean text correctly), CRLF line ends, times in the workspace time zone,
cells that would start a spreadsheet formula prefixed with an apostrophe (``crm.exporting.csv_stream``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.text import slugify


@dataclass
class Table:
    """One report table. ``columns`` are ``(key, label)``; a row is a dict by column key."""

    key: str
    title: Any
    columns: list[tuple[str, Any]]
    rows: list[dict[str, Any]]
    permission: str
    note: Any = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def header(self) -> list[str]:
        return [str(label) for _key, label in self.columns]

    @property
    def cells(self) -> list[list[Any]]:
        return [[row.get(key, "") for key, _label in self.columns] for row in self.rows]


def cell_value(value: Any) -> Any:
    """A value for a CSV cell: aware datetimes in the workspace time zone, rates as fractions with 4 decimals."""
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.4f}"
    return value


def table_csv(table: Table, *, filename: str) -> HttpResponse:
    from crm.exporting import csv_stream

    rows = [table.header, *([cell_value(value) for value in cells] for cells in table.cells)]
    response = HttpResponse(b"".join(csv_stream(rows)), content_type="text/csv; charset=utf-8")
    name = slugify(filename) or "report"
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


def csv_requested(request: HttpRequest) -> bool:
    return request.GET.get("format") == "csv"


def csv_download(request: HttpRequest, tables: list[Table], *, prefix: str) -> HttpResponse:
    """The table ``?table=KEY`` of a page as CSV; 404 for an unknown key, 403 without the table's permission."""
    key = request.GET.get("table", "")
    table = next((t for t in tables if t.key == key), None)
    if table is None:
        raise Http404("unknown table")
    if not request.user.has_perm(table.permission):
        raise PermissionDenied
    return table_csv(table, filename=f"{prefix}-{table.key}-{timezone.localdate():%Y%m%d}")


def visible(request: HttpRequest, tables: list[Table]) -> list[Table]:
    return [t for t in tables if request.user.has_perm(t.permission)]


def cached(key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` reused for ``LOOP_REPORT_CACHE_SECONDS`` under ``key`` (report figures may be that old)."""
    seconds = settings.LOOP_REPORT_CACHE_SECONDS
    if seconds <= 0:
        return compute()
    return cache.get_or_set(f"loop:report:{key}", compute, seconds)


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None
