"""Journeys in the admin: build a journey with its steps inline, activate/pause/archive it, load playbooks, and
follow enrollments (each contact's path, failures and their retry).

No business logic here: the lifecycle buttons and actions call ``journeys.services``; enrollments and their logs
are read-only (written by the engine).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from config.admin_base import LoopModelAdmin, ReadOnlyTabularInline, json_block
from journeys.models import Enrollment, EnrollmentLog, Journey, LeadForm, Step
from journeys.playbooks import playbook_choices, playbook_load
from journeys.services import journeys as lifecycle
from journeys.services.enrollment import enrollments_end

LIFECYCLE_ACTIONS = {
    "activate": (_("Activate"), lifecycle.journey_activate, {Journey.Status.DRAFT, Journey.Status.PAUSED}),
    "pause": (_("Pause"), lifecycle.journey_pause, {Journey.Status.ACTIVE}),
    "archive": (
        _("Archive"),
        lifecycle.journey_archive,
        {Journey.Status.DRAFT, Journey.Status.ACTIVE, Journey.Status.PAUSED},
    ),
}


class HttpsUrls:
    """URL fields without a scheme mean https (Django 6's default, chosen now)."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, models.URLField):
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)


class StepInline(HttpsUrls, admin.StackedInline):
    model = Step
    fk_name = "journey"
    extra = 0
    show_change_link = False
    fieldsets = [
        (None, {"fields": [("position", "name", "kind"), ("next_step", "no_step")]}),
        (
            _("Wait"),
            {
                "fields": ["wait_minutes", ("until_time", "until_weekday"), ("until_date_field", "until_offset_days")],
                "classes": ["collapse"],
            },
        ),
        (
            _("Message"),
            {
                "fields": ["campaign", "channel", "subject", "body", "link_url", "variables", "advertising"],
                "classes": ["collapse"],
            },
        ),
        (
            _("Branch and split"),
            {
                "fields": ["condition", "condition_segment", "condition_event", "condition_rules", "split_percent"],
                "classes": ["collapse"],
            },
        ),
        (
            _("Action"),
            {
                "fields": [
                    "action",
                    "action_name",
                    "action_value",
                    ("coupon_amount", "coupon_valid_days"),
                    "webhook_url",
                ],
                "classes": ["collapse"],
            },
        ),
    ]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name in ("next_step", "no_step"):
            journey_id = request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
            kwargs["queryset"] = Step.objects.filter(journey_id=journey_id) if journey_id else Step.objects.none()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class DryRunForm(forms.Form):
    contact = forms.CharField(
        label=_("Contact"),
        max_length=255,
        help_text=_("External ID, email, phone or #id of the contact."),
    )
    data = forms.JSONField(
        label=_("Trigger data"),
        required=False,
        initial=dict,
        help_text=_('The trigger event\'s properties, e.g. {"product_name": "니트 가디건", "value": 39000}.'),
    )

    def clean_contact(self):
        from crm.models import Contact

        value = self.cleaned_data["contact"].strip()
        contacts = Contact.objects.not_erased()
        if value.startswith("#") and value[1:].isdigit():
            found = contacts.filter(pk=int(value[1:])).first()
        else:
            found = (
                contacts.filter(external_id=value).first()
                or contacts.filter(email__iexact=value).first()
                or contacts.filter(phone=value).first()
            )
        if found is None:
            raise forms.ValidationError(_("No contact with this external ID, email, phone or id."))
        return found

    def clean_data(self):
        data = self.cleaned_data.get("data") or {}
        if not isinstance(data, dict):
            raise forms.ValidationError(_('A JSON object, e.g. {"value": 39000}.'))
        return data


class PlaybookForm(forms.Form):
    playbook = forms.ChoiceField(
        label=_("Playbook"),
        choices=playbook_choices,
        widget=forms.RadioSelect,
        help_text=_("Created as a draft journey with its messages in Korean: review it, then activate it."),
    )


@admin.register(Journey)
class JourneyAdmin(LoopModelAdmin):
    list_display = ["name", "status", "trigger", "trigger_event", "open_count", "completed_count", "failed_count"]
    list_filter = ["status", "trigger"]
    search_fields = ["name", "trigger_event"]
    inlines = [StepInline]
    readonly_fields = ["version", "playbook", "created_at", "updated_at", "diagram", "path_overview"]
    actions = ["pause_selected", "archive_selected"]
    change_form_template = "admin/journeys/journey/change_form.html"
    change_list_template = "admin/journeys/journey/change_list.html"
    fieldsets = [
        (None, {"fields": ["name", "description", "status"]}),
        (
            _("Trigger"),
            {
                "fields": [
                    "trigger",
                    "trigger_event",
                    "trigger_conditions",
                    "trigger_segment",
                    ("date_attribute", "date_offset_days", "date_time"),
                ]
            },
        ),
        (_("Entry rules"), {"fields": ["entry_segment", ("reentry", "reentry_days")]}),
        (_("Exit and goal"), {"fields": ["exit_events", ("goal_event", "goal_window_hours"), "exit_on_goal"]}),
        (_("Path"), {"fields": ["first_step", "diagram", "path_overview"]}),
        (_("Record"), {"fields": ["version", "playbook", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # The status changes through the lifecycle buttons only (they check the journey can run).
        return [*self.readonly_fields, "status"]

    def get_queryset(self, request):
        open_ = Q(enrollments__status__in=Enrollment.OPEN)
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_open=Count("enrollments", filter=open_),
                n_completed=Count("enrollments", filter=Q(enrollments__status=Enrollment.Status.COMPLETED)),
                n_failed=Count("enrollments", filter=Q(enrollments__status=Enrollment.Status.FAILED)),
            )
        )

    @admin.display(description=_("in the journey"), ordering="n_open")
    def open_count(self, journey: Journey) -> int:
        return journey.n_open

    @admin.display(description=_("completed"), ordering="n_completed")
    def completed_count(self, journey: Journey) -> int:
        return journey.n_completed

    @admin.display(description=_("failed"), ordering="n_failed")
    def failed_count(self, journey: Journey) -> int:
        return journey.n_failed

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "first_step":
            journey_id = request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
            kwargs["queryset"] = Step.objects.filter(journey_id=journey_id) if journey_id else Step.objects.none()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description=_("diagram"))
    def diagram(self, journey: Journey) -> str:
        from journeys.diagram import journey_diagram

        return journey_diagram(journey) if journey.pk else "-"

    @admin.display(description=_("steps and contacts at each"))
    def path_overview(self, journey: Journey) -> str:
        if journey.pk is None:
            return "-"
        steps = list(journey.steps.order_by("position", "id"))
        counts = {
            (row["current_step"], row["status"]): row["n"]
            for row in journey.enrollments.filter(status__in=Enrollment.OPEN)
            .values("current_step", "status")
            .annotate(n=Count("id"))
        }
        from journeys.services.engine import Graph

        graph = Graph(steps)
        rows = []
        for step in steps:
            following = graph.next_of(step)
            target = graph.steps[following].name if following in graph.steps else gettext("end")
            edges = f"→ {target}"
            if step.kind in (Step.Kind.BRANCH, Step.Kind.RANDOM_SPLIT):
                other = step.no_step.name if step.no_step else gettext("end")
                edges = f"{gettext('yes / A')} → {target}; {gettext('no / B')} → {other}"
            rows.append(
                (
                    step.position,
                    step.name,
                    step.get_kind_display(),
                    edges,
                    counts.get((step.pk, Enrollment.Status.WAITING), 0),
                    counts.get((step.pk, Enrollment.Status.ACTIVE), 0),
                )
            )
        header = format_html(
            "<tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            gettext("step"),
            gettext("kind"),
            gettext("then"),
            gettext("waiting for it"),
            gettext("due now / retrying"),
        )
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html('<table class="loop-journey-path">{}{}</table>', header, body)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        if change and any(formset.has_changed() for formset in formsets):
            lifecycle.journey_steps_changed(journey=form.instance)

    # Lifecycle.

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/lifecycle/<str:action>/", wrap(self.lifecycle_view), name="journeys_journey_lifecycle"),
            path("playbooks/", wrap(self.playbook_view), name="journeys_journey_playbooks"),
            path("<int:pk>/dry-run/", wrap(self.dry_run_view), name="journeys_journey_dry_run"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        journey = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if journey is not None:
            from config.reports import csv_download, csv_requested
            from journeys.reports import journey_funnel_context

            funnel = journey_funnel_context(request, journey)
            if csv_requested(request):
                return csv_download(request, funnel["tables"], prefix=f"journey-{journey.pk}")
            extra_context["funnel"] = funnel
            extra_context["lifecycle_actions"] = [
                {
                    "name": name,
                    "label": label,
                    "url": reverse("admin:journeys_journey_lifecycle", args=[journey.pk, name]),
                }
                for name, (label, _service, allowed) in LIFECYCLE_ACTIONS.items()
                if journey.status in allowed
            ]
            extra_context["dry_run_url"] = reverse("admin:journeys_journey_dry_run", args=[journey.pk])
            extra_context["enrollments_url"] = (
                reverse("admin:journeys_enrollment_changelist") + f"?journey__id__exact={journey.pk}"
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def _run_action(self, request: HttpRequest, journey: Journey, action: str) -> bool:
        label, service, _allowed = LIFECYCLE_ACTIONS[action]
        try:
            service(journey=journey)
        except ValidationError as exc:
            for message in exc.messages:
                self.message_user(request, f"{journey}: {message}", messages.ERROR)
            return False
        self.message_user(request, gettext("%(journey)s: %(action)s done.") % {"journey": journey, "action": label})
        return True

    def lifecycle_view(self, request: HttpRequest, pk: int, action: str):
        journey = get_object_or_404(Journey, pk=pk)
        if request.method != "POST" or action not in LIFECYCLE_ACTIONS:
            raise PermissionDenied
        if not self.has_change_permission(request, journey):
            raise PermissionDenied
        self._run_action(request, journey, action)
        return HttpResponseRedirect(reverse("admin:journeys_journey_change", args=[pk]))

    def playbook_view(self, request: HttpRequest):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PlaybookForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            journey = playbook_load(name=form.cleaned_data["playbook"])
            self.message_user(
                request,
                gettext("Created the draft journey %(journey)s: review it, then activate it.") % {"journey": journey},
            )
            return HttpResponseRedirect(reverse("admin:journeys_journey_change", args=[journey.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Load a playbook"),
            "form": form,
        }
        return TemplateResponse(request, "admin/journeys/journey/playbooks.html", context)

    def dry_run_view(self, request: HttpRequest, pk: int):
        from journeys.services.dry_run import journey_dry_run

        journey = get_object_or_404(Journey, pk=pk)
        if not self.has_view_permission(request, journey):
            raise PermissionDenied
        form = DryRunForm(request.POST or None)
        path_steps = None
        if request.method == "POST" and form.is_valid():
            path_steps = journey_dry_run(
                journey=journey, contact=form.cleaned_data["contact"], context=form.cleaned_data["data"]
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": journey,
            "title": gettext("Dry run of %(journey)s") % {"journey": journey},
            "form": form,
            "path_steps": path_steps,
        }
        return TemplateResponse(request, "admin/journeys/journey/dry_run.html", context)

    def _bulk(self, request, queryset, action: str) -> None:
        for journey in queryset:
            if journey.status in LIFECYCLE_ACTIONS[action][2]:
                self._run_action(request, journey, action)

    @admin.action(description=_("Pause selected journeys"), permissions=["change"])
    def pause_selected(self, request, queryset):
        self._bulk(request, queryset, "pause")

    @admin.action(description=_("Archive selected journeys"), permissions=["change"])
    def archive_selected(self, request, queryset):
        self._bulk(request, queryset, "archive")


class EnrollmentLogInline(ReadOnlyTabularInline):
    model = EnrollmentLog
    fields = ["at", "step_name", "action", "detail", "version"]
    ordering = ["at", "id"]


@admin.register(Enrollment)
class EnrollmentAdmin(LoopModelAdmin):
    list_display = [
        "contact",
        "journey",
        "status",
        "current_step",
        "next_run_at",
        "entered_at",
        "finished_at",
        "goal_reached_at",
        "attempts",
        "short_error",
    ]
    list_filter = ["status", "journey", ("entered_at", admin.DateFieldListFilter), "goal_reached_at"]
    list_select_related = ["contact", "journey", "current_step"]
    search_fields = ["contact__email", "contact__phone", "contact__external_id", "contact__name"]
    raw_id_fields = ["contact"]
    inlines = [EnrollmentLogInline]
    actions = ["retry_failed", "exit_selected"]
    fields = [
        "journey",
        "contact",
        "version",
        "status",
        "current_step",
        "next_run_at",
        "entered_at",
        "triggered_at",
        "finished_at",
        "exit_reason",
        "goal_reached_at",
        "attempts",
        "last_error",
        "trigger_data",
    ]
    readonly_fields = fields

    @admin.display(description=_("trigger data"))
    def trigger_data(self, enrollment: Enrollment) -> str:
        return json_block(enrollment.context)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("last error"))
    def short_error(self, enrollment: Enrollment) -> str:
        return enrollment.last_error[:80]

    @admin.action(description=_("Retry selected failed enrollments"), permissions=["change"])
    def retry_failed(self, request, queryset):
        count = lifecycle.enrollments_retry(
            ids=queryset.filter(status=Enrollment.Status.FAILED).values_list("id", flat=True)
        )
        self.message_user(
            request, gettext("%(count)d enrollment(s) will run their failed step again.") % {"count": count}
        )

    @admin.action(description=_("End selected enrollments (exit)"), permissions=["change"])
    def exit_selected(self, request, queryset):
        ids = list(queryset.filter(status__in=Enrollment.OPEN).values_list("id", flat=True))
        count = enrollments_end(
            ids=ids, status=Enrollment.Status.EXITED, reason=f"ended by {request.user}", now=timezone.now()
        )
        self.message_user(request, gettext("%(count)d enrollment(s) ended.") % {"count": count})


class ContactJourneysInline(ReadOnlyTabularInline):
    """A contact's journeys on the contact's page (newest first), each linking to its path."""

    model = Enrollment
    fk_name = "contact"
    verbose_name = _("journey")
    verbose_name_plural = _("journeys")
    fields = ["journey", "status", "current_step", "entered_at", "next_run_at", "finished_at", "exit_reason"]
    ordering = ["-entered_at", "-id"]


def _add_contact_history() -> None:
    """journeys depends on crm, never the reverse: the contact page's journey history is added from here."""
    from crm.admin import ContactAdmin

    if ContactJourneysInline not in ContactAdmin.inlines:
        ContactAdmin.inlines = [*ContactAdmin.inlines, ContactJourneysInline]


_add_contact_history()


@admin.register(LeadForm)
class LeadFormAdmin(HttpsUrls, LoopModelAdmin):
    list_display = ["name", "slug", "journey", "endpoint"]
    list_select_related = ["journey"]  # the journey column: one join, not a query per form
    search_fields = ["name", "slug"]
    fields = ["name", "slug", "journey", "typeform_secret", "consent_purposes", "redirect_url", "endpoint"]
    readonly_fields = ["endpoint"]

    @admin.display(description=_("endpoint"))
    def endpoint(self, form: LeadForm) -> str:
        if not form.pk:
            return "-"
        return format_html("<code>POST {}</code>", reverse("lead-form", args=[form.slug]))
