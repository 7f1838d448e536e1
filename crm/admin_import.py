"""Contact import and export in the admin: views, forms, actions, and the pieces ``crm/admin.py`` wires in.

- ``ContactImportExportAdminMixin`` for the contact ModelAdmin: "Import", "Export CSV/Excel" and "Import history"
  buttons on the changelist, export actions for selected contacts, and these pages under the contact admin:

  ``import/``                          upload form (file, tag, static list, "empty cells clear values")
  ``import/<id>/``                     preview (counts, column mapping, error rows, sample) → confirm; progress of a
                                       queued import; result
  ``import/<id>/confirm/``, ``cancel/``  POST
  ``import/<id>/progress/``            JSON polled by the progress bar
  ``import/<id>/errors.csv``           the rows that were not imported, with an error column
  ``export/<csv|xlsx>/``               every contact of the changelist's current filter

- ``ContactImportAdmin``: the import history (who, when, file, counts), read-only.
- ``export_contacts_csv``/``export_contacts_xlsx``/``export_events_csv``/``export_events_xlsx``: admin actions.

Views call services only (``crm.services.imports``) and read through ``crm.exporting``.
"""

from __future__ import annotations

import os
import tempfile

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm import exporting
from crm.importing import async_rows_threshold, max_upload_bytes
from crm.importing.errors import format_error
from crm.importing.progress import progress_get
from crm.models import ContactImport
from crm.services.imports import (
    ImportStateError,
    contact_import_cancel,
    contact_import_confirm,
    contact_import_create,
    contact_import_error_rows,
)

#: Error rows listed on the preview and result pages (all of them are in the error CSV).
ERRORS_SHOWN = 100
Status = ContactImport.Status
RUNNING_STATES = (Status.PENDING, Status.PREVIEWING, Status.QUEUED, Status.RUNNING)


# --- Export responses ------------------------------------------------------------------------------------------


def _stamp() -> str:
    return timezone.localtime().strftime("%Y%m%d-%H%M")


def csv_response(rows, file_name: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(exporting.csv_stream(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, file_name)
    return response


def xlsx_response(rows, file_name: str, sheet_title: str) -> FileResponse:
    """Write the workbook to a temporary file (deleted when the response is closed) and send it."""
    handle = tempfile.TemporaryFile(suffix=".xlsx")  # noqa: SIM115 (closed by FileResponse)
    exporting.xlsx_write(rows, handle, sheet_title=sheet_title)
    handle.seek(0)
    return FileResponse(
        handle,
        as_attachment=True,
        filename=file_name,
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )


def contacts_export_response(queryset, fmt: str):
    name = f"contacts-{_stamp()}.{fmt}"
    if fmt == "xlsx":
        return xlsx_response(exporting.contact_rows(queryset), name, str(_("Contacts")))
    return csv_response(exporting.contact_rows(queryset), name)


def events_export_response(queryset, fmt: str):
    name = f"events-{_stamp()}.{fmt}"
    if fmt == "xlsx":
        return xlsx_response(exporting.event_rows(queryset), name, str(_("Events")))
    return csv_response(exporting.event_rows(queryset), name)


@admin.action(description=gettext_lazy("Export selected contacts to CSV"), permissions=["view"])
def export_contacts_csv(modeladmin, request, queryset):
    return contacts_export_response(queryset, "csv")


@admin.action(description=gettext_lazy("Export selected contacts to Excel"), permissions=["view"])
def export_contacts_xlsx(modeladmin, request, queryset):
    return contacts_export_response(queryset, "xlsx")


@admin.action(description=gettext_lazy("Export selected events to CSV"), permissions=["view"])
def export_events_csv(modeladmin, request, queryset):
    return events_export_response(queryset, "csv")


@admin.action(description=gettext_lazy("Export selected events to Excel"), permissions=["view"])
def export_events_xlsx(modeladmin, request, queryset):
    return events_export_response(queryset, "xlsx")


# --- Import ----------------------------------------------------------------------------------------------------


class ContactImportForm(forms.Form):
    file = forms.FileField(
        label=gettext_lazy("File"),
        help_text=gettext_lazy(
            "CSV (UTF-8, UTF-8 with BOM, or CP949/EUC-KR as Excel saves it on Korean Windows) or Excel (.xlsx)."
        ),
    )
    tag = forms.CharField(
        label=gettext_lazy("Tag the imported contacts"),
        required=False,
        max_length=100,
        help_text=gettext_lazy("Optional. Created if it does not exist."),
    )
    contact_list = forms.CharField(
        label=gettext_lazy("Add them to the static list"),
        required=False,
        max_length=200,
        help_text=gettext_lazy("Optional. Created if it does not exist; usable in segments."),
    )
    overwrite_empty = forms.BooleanField(
        label=gettext_lazy("Empty cells clear existing values"),
        required=False,
        help_text=gettext_lazy("Off: an empty cell leaves the contact's value as it is."),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > max_upload_bytes():
            raise forms.ValidationError(
                _("The file is larger than %(max)d MB. Split it into smaller files.")
                % {"max": max_upload_bytes() // (1024 * 1024)}
            )
        return upload


def _info(model_admin) -> tuple[str, str]:
    return model_admin.opts.app_label, model_admin.opts.model_name


def _url(model_admin, name: str, *args) -> str:
    app_label, model_name = _info(model_admin)
    return reverse(f"{model_admin.admin_site.name}:{app_label}_{model_name}_{name}", args=args)


def _require_import_permission(model_admin, request) -> None:
    if not (model_admin.has_add_permission(request) and model_admin.has_change_permission(request)):
        raise PermissionDenied


def _require_view_permission(model_admin, request) -> None:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied


def _context(model_admin, request, title: str, **extra) -> dict:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "has_view_permission": model_admin.has_view_permission(request),
        "changelist_url": _url(model_admin, "changelist"),
        "history_url": _history_url(model_admin),
        **extra,
    }


def _history_url(model_admin) -> str:
    try:
        return reverse(f"{model_admin.admin_site.name}:crm_contactimport_changelist")
    except NoReverseMatch:
        return ""


def import_upload_view(model_admin, request):
    _require_import_permission(model_admin, request)
    form = ContactImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        contact_import = contact_import_create(
            file=upload,
            file_name=upload.name,
            options={
                "tag": form.cleaned_data["tag"],
                "list": form.cleaned_data["contact_list"],
                "overwrite_empty": form.cleaned_data["overwrite_empty"],
            },
            user=request.user,
        )
        return HttpResponseRedirect(_url(model_admin, "import_detail", contact_import.pk))
    context = _context(
        model_admin,
        request,
        _("Import contacts"),
        form=form,
        async_rows=async_rows_threshold(),
        media=model_admin.media + form.media,
    )
    return TemplateResponse(request, "admin/crm/contact/import_upload.html", context)


def _mapping_rows(contact_import: ContactImport) -> list[dict]:
    from crm.importing.mapping import ATTRIBUTE, FIELD_LABELS
    from crm.segments.schema import TYPE_LABELS  # the value types segments compare attributes as

    rows = []
    for column in contact_import.column_mapping.get("columns", []):
        field = column["field"]
        if field == ATTRIBUTE:
            kind = TYPE_LABELS.get(column["type"], column["type"])
            target = _("attribute '%(key)s' (%(type)s)") % {"key": column["key"], "type": kind}
        else:
            target = str(FIELD_LABELS.get(field, field))
        rows.append({"header": column["header"] or f"#{column['index'] + 1}", "target": target, "field": field})
    return rows


def _shown(value):
    """A value of the preview's changes as the page shows it: consent as 예/아니오 (Yes/No), not True/False."""
    if isinstance(value, bool):
        return _("Yes") if value else _("No")
    return value


def import_detail_view(model_admin, request, import_id: int):
    _require_view_permission(model_admin, request)
    contact_import = get_object_or_404(ContactImport, pk=import_id)
    errors = contact_import.errors[:ERRORS_SHOWN]
    # (key of the preview's action, count field, label): the counts, and the action of each sample row in words.
    counts = [
        ("new", "new", _("New")),
        ("update", "updated", _("Updated")),
        ("unchanged", "unchanged", _("Unchanged")),
        ("skip", "skipped", _("Skipped")),
        ("error", "error", _("Errors")),
    ]
    action_labels = {key: label for key, _field, label in counts}
    context = _context(
        model_admin,
        request,
        _("Import of %(file)s") % {"file": contact_import.file_name},
        contact_import=contact_import,
        counts=[(label, getattr(contact_import, f"{field}_count"), key) for key, field, label in counts],
        errors=[{**e, "text": format_error(e)} for e in errors],
        errors_more=max(len(contact_import.errors) - ERRORS_SHOWN, 0),
        sample=[
            {
                **entry,
                "action": action_labels.get(entry["action"], entry["action"]),
                "changes": [[what, _shown(before), _shown(after)] for what, before, after in entry["changes"]],
            }
            for entry in contact_import.preview.get("sample", [])
        ],
        notice=contact_import.preview.get("notice", ""),
        mapping=_mapping_rows(contact_import),
        in_progress=contact_import.status in RUNNING_STATES,
        can_confirm=contact_import.status == Status.PREVIEWED
        and model_admin.has_add_permission(request)
        and model_admin.has_change_permission(request),
        will_queue=contact_import.total_rows > async_rows_threshold(),
        confirm_url=_url(model_admin, "import_confirm", contact_import.pk),
        cancel_url=_url(model_admin, "import_cancel", contact_import.pk),
        progress_url=_url(model_admin, "import_progress", contact_import.pk),
        errors_url=_url(model_admin, "import_errors", contact_import.pk),
        upload_url=_url(model_admin, "import"),
    )
    return TemplateResponse(request, "admin/crm/contact/import_detail.html", context)


def import_confirm_view(model_admin, request, import_id: int):
    _require_import_permission(model_admin, request)
    if request.method != "POST":
        return HttpResponseRedirect(_url(model_admin, "import_detail", import_id))
    contact_import = get_object_or_404(ContactImport, pk=import_id)
    try:
        contact_import = contact_import_confirm(contact_import=contact_import)
    except ImportStateError as exc:
        messages.error(request, str(exc))
    else:
        if contact_import.status == Status.COMPLETED:
            messages.success(
                request,
                _("Imported: %(new)d new, %(updated)d updated, %(unchanged)d unchanged.")
                % {
                    "new": contact_import.new_count,
                    "updated": contact_import.updated_count,
                    "unchanged": contact_import.unchanged_count,
                },
            )
        elif contact_import.status == Status.QUEUED:
            messages.info(request, _("The import runs in the background; this page shows its progress."))
        elif contact_import.status == Status.PREVIEWED:
            messages.warning(request, contact_import.preview.get("notice") or _("The preview was recomputed."))
        elif contact_import.status == Status.FAILED:
            messages.error(request, contact_import.failure)
    return HttpResponseRedirect(_url(model_admin, "import_detail", import_id))


def import_cancel_view(model_admin, request, import_id: int):
    _require_import_permission(model_admin, request)
    if request.method == "POST":
        contact_import = contact_import_cancel(contact_import=get_object_or_404(ContactImport, pk=import_id))
        if contact_import.status == Status.CANCELLED:
            messages.info(request, _("The import was cancelled; nothing was imported."))
    return HttpResponseRedirect(_url(model_admin, "import_detail", import_id))


def import_progress_view(model_admin, request, import_id: int):
    _require_view_permission(model_admin, request)
    contact_import = get_object_or_404(ContactImport, pk=import_id)
    progress = progress_get(contact_import.pk) or {}
    total = progress.get("total") or contact_import.total_rows
    done = max(progress.get("done", 0), contact_import.processed_rows if contact_import.status != Status.RUNNING else 0)
    if contact_import.status == Status.COMPLETED:
        done = total
    return JsonResponse(
        {
            "status": contact_import.status,
            "status_display": contact_import.get_status_display(),
            "phase": progress.get("phase", ""),
            "done": done,
            "total": total,
            "percent": round(100 * done / total) if total else 0,
            "finished": contact_import.status not in RUNNING_STATES,
        }
    )


def import_errors_view(model_admin, request, import_id: int):
    _require_view_permission(model_admin, request)
    contact_import = get_object_or_404(ContactImport, pk=import_id)
    if not contact_import.file or not contact_import.errors:
        return HttpResponseRedirect(_url(model_admin, "import_detail", import_id))
    stem = os.path.splitext(contact_import.file_name)[0] or "contacts"
    response = StreamingHttpResponse(
        contact_import_error_rows(contact_import=contact_import), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = content_disposition_header(True, f"{stem}-errors.csv")
    return response


def contacts_export_view(model_admin, request, fmt: str):
    _require_view_permission(model_admin, request)
    if fmt not in ("csv", "xlsx"):
        raise PermissionDenied
    changelist = model_admin.get_changelist_instance(request)
    return contacts_export_response(changelist.get_queryset(request), fmt)


class ContactImportExportAdminMixin:
    """Mix into the contact ModelAdmin (before ``admin.ModelAdmin``) to add import and export."""

    change_list_template = "admin/crm/contact/change_list_import_export.html"
    import_export_actions = (export_contacts_csv, export_contacts_xlsx)

    def get_urls(self):
        app_label, model_name = _info(self)
        wrap = self.admin_site.admin_view
        prefix = f"{app_label}_{model_name}"
        custom = [
            path("import/", wrap(self.import_upload_view), name=f"{prefix}_import"),
            path("import/<int:import_id>/", wrap(self.import_detail_view), name=f"{prefix}_import_detail"),
            path("import/<int:import_id>/confirm/", wrap(self.import_confirm_view), name=f"{prefix}_import_confirm"),
            path("import/<int:import_id>/cancel/", wrap(self.import_cancel_view), name=f"{prefix}_import_cancel"),
            path("import/<int:import_id>/progress/", wrap(self.import_progress_view), name=f"{prefix}_import_progress"),
            path("import/<int:import_id>/errors.csv", wrap(self.import_errors_view), name=f"{prefix}_import_errors"),
            path("export/<str:fmt>/", wrap(self.contacts_export_view), name=f"{prefix}_export"),
        ]
        return custom + super().get_urls()

    def get_actions(self, request):
        actions = super().get_actions(request)
        for action in self.import_export_actions:
            if self.has_view_permission(request):
                actions[action.__name__] = (action, action.__name__, action.short_description)
        return actions

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "import_url": _url(self, "import"),
            "export_csv_url": _url(self, "export", "csv"),
            "export_xlsx_url": _url(self, "export", "xlsx"),
            "import_history_url": _history_url(self),
            "can_import": self.has_add_permission(request) and self.has_change_permission(request),
        }
        return super().changelist_view(request, extra_context=extra_context)

    def import_upload_view(self, request):
        return import_upload_view(self, request)

    def import_detail_view(self, request, import_id):
        return import_detail_view(self, request, import_id)

    def import_confirm_view(self, request, import_id):
        return import_confirm_view(self, request, import_id)

    def import_cancel_view(self, request, import_id):
        return import_cancel_view(self, request, import_id)

    def import_progress_view(self, request, import_id):
        return import_progress_view(self, request, import_id)

    def import_errors_view(self, request, import_id):
        return import_errors_view(self, request, import_id)

    def contacts_export_view(self, request, fmt):
        return contacts_export_view(self, request, fmt)


class ContactImportAdmin(admin.ModelAdmin):
    """The import history: who imported which file when, and what happened. Read-only; imports start from the
    contact list's "Import" button."""

    list_display = (
        "created_at",
        "file_name",
        "created_by",
        "status",
        "total_rows",
        "new_count",
        "updated_count",
        "unchanged_count",
        "skipped_count",
        "error_count",
        "open_link",
    )
    list_filter = ("status", "file_format")
    search_fields = ("file_name",)
    date_hierarchy = "created_at"
    list_select_related = ("created_by",)
    fields = (
        "open_link",
        "created_at",
        "created_by",
        "file_name",
        "file_format",
        "encoding",
        "status",
        "failure",
        "options",
        "tag",
        "contact_list",
        "total_rows",
        "new_count",
        "updated_count",
        "unchanged_count",
        "skipped_count",
        "error_count",
        "previewed_at",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=gettext_lazy("Details"))
    def open_link(self, obj):
        try:
            url = reverse(f"{self.admin_site.name}:crm_contact_import_detail", args=[obj.pk])
        except NoReverseMatch:
            return "-"
        return format_html('<a href="{}">{}</a>', url, _("Open"))

    def delete_model(self, request, obj):
        _delete_files(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            _delete_files(obj)
        super().delete_queryset(request, queryset)


def _delete_files(contact_import: ContactImport) -> None:
    """An import's files hold personal data: they go with it."""
    for file_field in (contact_import.file, contact_import.plan_file):
        if file_field:
            file_field.delete(save=False)
