"""Segments in the admin: the visual rule builder, members, why, size, export.

Pages under the segment admin:

``<id>/change/``          name, description, rules (the visual builder, ``static/crm/segment_builder.js``, over the
                          JSON textarea it keeps in sync; errors shown per condition, with their path); below the form
                          the member count (counted on load), a sample of members, the size-over-time chart (an SVG
                          drawn here, no script, no CDN), links to "why" and to the exports
``preview.json``          POST ``{"rules": …, "segment": <id>|null}``: validate, then the live member count and a
                          sample (the builder calls it as the rules change), or 400 with the validator's errors
``<id>/why/``             "why is this contact (not) in this segment?": pick a contact by ID, email, phone or
                          external ID; every condition with ✔/✘ and what was observed
``<id>/export/<fmt>/``    the members as CSV or Excel (``crm.exporting``, the same columns as the contact export)
``schema.json``           the rule schema for a builder (``crm.segments.schema_description``)

Writes go through ``crm.services.segments``.
"""

from __future__ import annotations

import contextlib
import json
from datetime import date, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.humanize.templatetags.humanize import intcomma
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from config.admin_base import LoopModelAdmin
from crm.admin_import import csv_response, xlsx_response
from crm.exporting import contact_rows, display_phone
from crm.models import Contact, ContactList, Segment, SegmentSize, Tag
from crm.phones import InvalidPhoneNumber, normalize_phone
from crm.segments import EMPTY_RULES, RulesInvalid, schema_description, validate_rules
from crm.segments.explain import segment_explain
from crm.selectors import event_names, segment_rules_preview
from crm.services.segments import SegmentInUse, segment_count, segment_create, segment_delete, segment_update

#: Members listed on the segment page.
SAMPLE_SIZE = 20
#: Members the builder's live preview lists.
PREVIEW_SAMPLE_SIZE = 10
#: Longest a live preview may query PostgreSQL (milliseconds): the builder asks after every change, and an
#: abandoned request's query would otherwise keep running.
PREVIEW_TIMEOUT_MS = 10_000
#: Static lists, tags, event names and segments the builder offers in its pickers (more can be typed in the JSON).
BUILDER_CHOICES_LIMIT = 1000
#: Days of history the size chart shows.
CHART_DAYS = 90
#: Contacts a "why" lookup lists when the search matches several.
LOOKUP_LIMIT = 20


class RulesField(forms.JSONField):
    """JSON in a monospace textarea, indented so that a power user can read and edit it."""

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        if value is None:
            return ""
        return json.dumps(value, ensure_ascii=False, indent=2)


class RuleBuilderWidget(forms.Textarea):
    """The JSON textarea with the visual rule builder over it (``static/crm/segment_builder.js``).

    Without JavaScript the textarea stays as it is. The builder reads the schema from ``schema.json``, keeps the
    textarea in sync, and asks ``preview.json`` for the live count. The pickers of static lists, tags and segments
    are filled from the page (``builder_choices``), not from another request.
    """

    template_name = "crm/widgets/rule_builder.html"
    segment_id: int | None = None

    class Media:
        css = {"all": ["crm/segment_builder.css"]}
        js = ["crm/segment_builder.js"]

    def __init__(self, attrs=None):
        super().__init__(attrs={"rows": 24, "class": "loop-rules-json", "spellcheck": "false", **(attrs or {})})

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["builder"] = {
            "schema_url": reverse("admin:crm_segment_schema"),
            "preview_url": reverse("admin:crm_segment_preview"),
            "segment_id": self.segment_id or "",
            "choices": builder_choices(exclude_segment=self.segment_id),
            "choices_id": f"{context['widget']['attrs'].get('id') or name}-choices",
        }
        return context


def builder_choices(*, exclude_segment: int | None) -> dict[str, list]:
    """The static lists, tags, event names and other segments a condition can name, for the builder's pickers."""
    limit = BUILDER_CHOICES_LIMIT
    segments = Segment.objects.exclude(pk=exclude_segment) if exclude_segment else Segment.objects.all()
    return {
        "lists": [{"id": pk, "name": name} for pk, name in ContactList.objects.values_list("pk", "name")[:limit]],
        "tags": list(Tag.objects.values_list("name", flat=True)[:limit]),
        "events": event_names(limit=limit),
        "segments": [
            {"id": pk, "name": name} for pk, name in segments.order_by("name").values_list("pk", "name")[:limit]
        ],
    }


class SegmentForm(forms.ModelForm):
    rules = RulesField(
        label=_("rules"),
        required=False,
        widget=RuleBuilderWidget(),
        help_text=_(
            "Build the rules with the builder: groups combine conditions with AND or OR, NOT turns a group or a "
            "condition into its opposite, and the live count shows who matches. “JSON (advanced)” shows the rule "
            "document itself (see the segments guide); empty means every contact. Each problem is reported with "
            "the place of the condition, e.g. root.children[1].value."
        ),
    )

    class Meta:
        model = Segment
        fields = ["name", "description", "rules"]
        help_texts = {
            "name": _("What marketers see when they pick an audience, e.g. “VIP: 3+ orders”."),
            "description": _("Optional: who this is for and why."),
        }

    def clean_rules(self) -> dict:
        rules = self.cleaned_data.get("rules")
        if rules in (None, "", {}):
            return {}
        try:
            return validate_rules(rules, segment_id=self.instance.pk)
        except RulesInvalid as exc:
            raise ValidationError([str(error) for error in exc.errors]) from exc

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["rules"].widget.segment_id = self.instance.pk


# --- Size chart -----------------------------------------------------------------------------------------------------


def size_chart_svg(points: list[tuple[date, int]], *, width: int = 640, height: int = 160) -> SafeString | str:
    """The member count per day as a small line chart (inline SVG), or "" when there is nothing to draw."""
    if not points:
        return ""
    left, right, top, bottom = 56, 12, 12, 26
    inner_w, inner_h = width - left - right, height - top - bottom
    first, last = points[0][0], points[-1][0]
    span = max((last - first).days, 1)
    high = max(count for _day, count in points)
    low = min(count for _day, count in points)
    top_value = high if high > low else high + 1
    bottom_value = low if high > low else max(low - 1, 0)
    scale = top_value - bottom_value or 1

    def xy(day: date, count: int) -> tuple[float, float]:
        x = left + inner_w * ((day - first).days / span if len(points) > 1 else 0.5)
        y = top + inner_h * (1 - (count - bottom_value) / scale)
        return round(x, 1), round(y, 1)

    coords = [xy(day, count) for day, count in points]
    line = " ".join(f"{x},{y}" for x, y in coords)
    dots = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="2.5"><title>{}: {}</title></circle>',
        (
            (x, y, formats.date_format(day, "Y-m-d"), intcomma(count))
            for (x, y), (day, count) in zip(coords, points, strict=True)
        ),
    )
    return format_html(
        '<svg class="loop-size-chart" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        'xmlns="http://www.w3.org/2000/svg" aria-label="{label}">'
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" class="axis"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" class="axis"/>'
        '<text x="{lt}" y="{ty}" text-anchor="end">{high}</text>'
        '<text x="{lt}" y="{by}" text-anchor="end">{low}</text>'
        '<text x="{l}" y="{xy}" text-anchor="start">{first}</text>'
        '<text x="{r}" y="{xy}" text-anchor="end">{last}</text>'
        '<polyline points="{line}" fill="none"/>{dots}</svg>',
        w=width,
        h=height,
        label=gettext("Members per day"),
        l=left,
        r=width - right,
        t=top,
        b=height - bottom,
        lt=left - 6,
        ty=top + 4,
        by=height - bottom,
        xy=height - 8,
        high=intcomma(top_value),
        low=intcomma(bottom_value),
        first=formats.date_format(first, "m-d"),
        last=formats.date_format(last, "m-d"),
        line=line,
        dots=dots,
    )


# --- Finding a contact for "why" ------------------------------------------------------------------------------------


def find_contacts(term: str) -> list[Contact]:
    """Contacts matching an ID, an email (any case), a phone number (any format) or an external ID."""
    term = term.strip()
    if not term:
        return []
    q = Q(external_id=term)
    if term.isdigit():
        q |= Q(pk=int(term))
    if "@" in term:
        q |= Q(email__iexact=term)
    if any(ch.isdigit() for ch in term):
        with contextlib.suppress(InvalidPhoneNumber):
            q |= Q(phone=normalize_phone(term))
    return list(Contact.objects.filter(q).order_by("-id")[:LOOKUP_LIMIT])


# --- The admin --------------------------------------------------------------------------------------------------------


@admin.register(Segment)
class SegmentAdmin(LoopModelAdmin):
    form = SegmentForm
    list_display = ["name", "members_column", "version", "updated_at", "created_by_column"]
    search_fields = ["name", "description"]
    search_help_text = _("Name or description.")
    readonly_fields = ["version", "created_by_column", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        (_("Rules"), {"fields": ["rules"]}),
        (_("History"), {"fields": [("version", "created_by_column"), ("created_at", "updated_at")]}),
    ]
    actions = ["count_members", "export_members_csv", "export_members_xlsx"]
    change_form_template = "admin/crm/segment/change_form.html"

    def get_fieldsets(self, request, obj=None):
        return self.fieldsets if obj is not None else self.fieldsets[:2]

    # -- columns --

    @admin.display(description=_("members"), ordering="last_count")
    def members_column(self, obj: Segment) -> str:
        if obj.last_count is None:
            return "-"
        return format_html(
            '{} <span class="loop-quiet">({})</span>',
            intcomma(obj.last_count),
            formats.date_format(timezone.localtime(obj.last_counted_at), "Y-m-d H:i"),
        )

    @admin.display(description=_("created by"))
    def created_by_column(self, obj: Segment) -> str:
        return str(obj.created_by) if obj.created_by else "-"

    # -- saving and deleting through the services --

    def save_model(self, request, obj: Segment, form, change: bool) -> None:
        data = form.cleaned_data
        if change:
            # The form has already copied its values onto ``obj``: the service compares with what is stored.
            stored = Segment.objects.get(pk=obj.pk)
            segment_update(
                segment=stored, name=data["name"], description=data.get("description") or "", rules=data.get("rules")
            )
            obj.refresh_from_db()
            return
        saved = segment_create(
            name=data["name"],
            description=data.get("description") or "",
            rules=data.get("rules"),
            created_by=request.user,
        )
        obj.pk = saved.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def delete_view(self, request, object_id, extra_context=None):
        if request.method == "POST":
            segment = self.get_object(request, object_id)
            if segment is not None and self.has_delete_permission(request, segment):
                try:
                    with transaction.atomic():
                        self.log_deletions(request, [segment])
                        segment_delete(segment=segment)
                except SegmentInUse as exc:
                    self.message_user(request, str(exc), messages.ERROR)
                    return HttpResponseRedirect(reverse("admin:crm_segment_change", args=[segment.pk]))
                self.message_user(request, gettext("The segment “%(name)s” was deleted.") % {"name": segment})
                return HttpResponseRedirect(reverse("admin:crm_segment_changelist"))
        return super().delete_view(request, object_id, extra_context)

    def delete_queryset(self, request, queryset) -> None:
        for segment in queryset:
            try:
                segment_delete(segment=segment)
            except SegmentInUse as exc:
                self.message_user(request, str(exc), messages.ERROR)

    # -- actions --

    @admin.action(description=_("Count the members now"), permissions=["view"])
    def count_members(self, request, queryset) -> None:
        for segment in queryset:
            try:
                segment_count(segment=segment)
            except RulesInvalid as exc:
                self.message_user(request, f"{segment}: {exc.errors[0]}", messages.ERROR)
        self.message_user(request, gettext("Members counted."), messages.SUCCESS)

    def _one(self, request, queryset) -> Segment | None:
        if queryset.count() != 1:
            self.message_user(request, gettext("Select exactly one segment to export its members."), messages.ERROR)
            return None
        return queryset.first()

    @admin.action(description=_("Export the members to CSV"), permissions=["view"])
    def export_members_csv(self, request, queryset):
        segment = self._one(request, queryset)
        return members_export_response(segment, "csv") if segment else None

    @admin.action(description=_("Export the members to Excel"), permissions=["view"])
    def export_members_xlsx(self, request, queryset):
        segment = self._one(request, queryset)
        return members_export_response(segment, "xlsx") if segment else None

    # -- pages --

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("schema.json", wrap(self.schema_view), name="crm_segment_schema"),
            path("preview.json", wrap(self.preview_view), name="crm_segment_preview"),
            path("<int:segment_id>/why/", wrap(self.why_view), name="crm_segment_why"),
            path("<int:segment_id>/export/<str:fmt>/", wrap(self.export_view), name="crm_segment_export"),
            *super().get_urls(),
        ]

    def _segment(self, request, segment_id: int) -> Segment:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(Segment, pk=segment_id)

    def schema_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return JsonResponse(schema_description(), json_dumps_params={"ensure_ascii": False})

    def preview_view(self, request):
        """POST ``{"rules": {...}, "segment": <id or null>}`` → ``{"count": n, "sample": [...]}``, or 400 with
        ``{"errors": [{"path", "code", "message"}]}``, or 504 with ``{"message"}`` when counting took too long. A POST
        (CSRF-checked by ``admin_view``) because the rules can be long; it reads only."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        parsed = parse_preview_request(request.body)
        if isinstance(parsed, JsonResponse):
            return parsed
        rules, segment_id = parsed
        try:
            preview = preview_with_timeout(rules=rules, segment_id=segment_id)
        except RulesInvalid as exc:
            return json_response(exc.as_json(), status=400)
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != QUERY_CANCELED:
                raise
            seconds = max(PREVIEW_TIMEOUT_MS // 1000, 1)
            message = ngettext(
                "Counting took longer than %(seconds)d second; the segment can still be saved.",
                "Counting took longer than %(seconds)d seconds; the segment can still be saved.",
                seconds,
            )
            return json_response({"message": message % {"seconds": seconds}}, status=504)
        sample = [
            {
                "id": contact.pk,
                "name": str(contact),
                "email": contact.email,
                "phone": display_phone(contact.phone),
                "url": reverse("admin:crm_contact_change", args=[contact.pk]),
            }
            for contact in preview.sample
        ]
        return json_response({"count": preview.count, "sample": sample})

    def export_view(self, request, segment_id: int, fmt: str):
        segment = self._segment(request, segment_id)
        if fmt not in ("csv", "xlsx"):
            raise PermissionDenied
        return members_export_response(segment, fmt)

    def why_view(self, request, segment_id: int):
        segment = self._segment(request, segment_id)
        term = request.GET.get("q", "").strip()
        contact_id = request.GET.get("contact", "")
        candidates: list[Contact] = []
        explanation = None
        error = ""
        contact = None
        if contact_id.isdigit():
            contact = Contact.objects.filter(pk=int(contact_id)).first()
        elif term:
            candidates = find_contacts(term)
            if len(candidates) == 1:
                contact, candidates = candidates[0], []
            elif not candidates:
                error = gettext("No contact has this ID, email, phone number or external ID.")
        if contact is not None:
            try:
                explanation = segment_explain(segment=segment, contact=contact)
            except RulesInvalid as exc:
                error = "; ".join(str(e) for e in exc.errors)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": gettext("Why is a contact (not) in “%(name)s”?") % {"name": segment.name},
            "segment": segment,
            "term": term,
            "candidates": candidates,
            "contact": contact,
            "explanation": explanation,
            "rows": explanation.flat() if explanation else [],
            "error": error,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/crm/segment/why.html", context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk:
            context.update(self.members_context(obj))
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def members_context(self, segment: Segment) -> dict[str, Any]:
        """The member count, a sample, and the daily sizes, for the segment page.

        The count is the remembered one (``last_count``: set by the "Count the members now" action and by
        the first visit after the rules changed), so opening the page never counts a million contacts again.
        """
        try:
            count = segment.last_count if segment.last_count is not None else segment_count(segment=segment)
            sample = [
                {"contact": contact, "phone": display_phone(contact.phone)}
                for contact in segment.contacts().only("pk", "name", "email", "phone", "last_seen_at")[:SAMPLE_SIZE]
            ]
            members_error = ""
        except RulesInvalid as exc:
            count, sample, members_error = None, [], "; ".join(str(e) for e in exc.errors)
        since = timezone.localdate() - timedelta(days=CHART_DAYS)
        sizes = list(
            SegmentSize.objects.filter(segment=segment, day__gte=since).order_by("day").values_list("day", "count")
        )
        return {
            "member_count": count,
            "counted_at": segment.last_counted_at,
            "members_error": members_error,
            "sample": sample,
            "sample_size": SAMPLE_SIZE,
            "size_chart": size_chart_svg(sizes),
            "chart_days": CHART_DAYS,
            "why_url": reverse("admin:crm_segment_why", args=[segment.pk]),
            "export_csv_url": reverse("admin:crm_segment_export", args=[segment.pk, "csv"]),
            "export_xlsx_url": reverse("admin:crm_segment_export", args=[segment.pk, "xlsx"]),
        }


#: PostgreSQL's SQLSTATE for a statement cancelled by ``statement_timeout``.
QUERY_CANCELED = "57014"


def preview_with_timeout(*, rules: dict, segment_id: int | None):
    """``segment_rules_preview`` in a transaction whose statements PostgreSQL stops after ``PREVIEW_TIMEOUT_MS``."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL statement_timeout = %s", [PREVIEW_TIMEOUT_MS])
        return segment_rules_preview(rules=rules, segment_id=segment_id, sample_size=PREVIEW_SAMPLE_SIZE)


def parse_preview_request(body: bytes) -> tuple[dict, int | None] | JsonResponse:
    """The rules (empty: every contact) and the id of the segment being edited, or a 400 for a malformed body."""
    try:
        payload = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict):
        return preview_error("", "json", gettext('Send a JSON object: {"rules": {...}, "segment": null}.'))
    segment_id = payload.get("segment")
    if segment_id == "":
        segment_id = None
    if segment_id is not None and (not isinstance(segment_id, int) or isinstance(segment_id, bool)):
        return preview_error("segment", "type", gettext("A segment is given by its number (ID)."))
    rules = payload.get("rules")
    return (EMPTY_RULES if rules in (None, {}) else rules), segment_id


def json_response(data: dict, *, status: int = 200) -> JsonResponse:
    return JsonResponse(data, status=status, json_dumps_params={"ensure_ascii": False})


def preview_error(path: str, code: str, message: str) -> JsonResponse:
    """A 400 shaped like ``RulesInvalid.as_json()``, for a request the validator never saw."""
    return json_response({"errors": [{"path": path, "code": code, "message": message}]}, status=400)


def members_export_response(segment: Segment, fmt: str):
    """A segment's members as CSV (streamed) or XLSX, with the contact export's columns."""
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    name = f"segment-{segment.pk}-{stamp}.{fmt}"
    rows = contact_rows(segment.contacts())
    if fmt == "xlsx":
        return xlsx_response(rows, name, segment.name[:25] or gettext("Members"))
    return csv_response(rows, name)
