"""Campaigns in the admin: build a campaign with its variants, schedule it, watch its runs, preview and test-send.

No business logic here: saving calls ``campaign_save`` (change log, PeriodicTask), the lifecycle buttons call the
lifecycle services, test sends go through the pipeline to the outbox. Runs, sends, outbox messages and
suppressions are read-only (written by the pipeline).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from campaigns.models import Campaign, CampaignChange, OutboxMessage, Run, Send, SkipReason, Suppression, Variant
from campaigns.personalization import build_render_data, template_errors
from campaigns.services import campaigns as lifecycle
from campaigns.services.runs import run_counts
from campaigns.services.schedules import next_run_at
from campaigns.services.sending import campaign_test_send, render_content
from config.admin_base import LoopModelAdmin, ReadOnlyModelAdmin, ReadOnlyTabularInline, json_block
from crm.models import Contact

CONTENT_FIELDS = ("subject", "preheader", "body", "html", "link_url")

#: Lifecycle buttons: action name → (label, service, statuses it is offered in).
LIFECYCLE_ACTIONS: dict[str, tuple[Any, Any, set[str]]] = {
    "schedule": (_("Schedule"), lifecycle.campaign_schedule, {Campaign.Status.DRAFT}),
    "send_now": (
        _("Send now"),
        lifecycle.campaign_send_now,
        {Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.COMPLETED},
    ),
    "pause": (_("Pause"), lifecycle.campaign_pause, {Campaign.Status.SCHEDULED, Campaign.Status.RUNNING}),
    "resume": (_("Resume"), lifecycle.campaign_resume, {Campaign.Status.PAUSED}),
    "cancel": (
        _("Cancel"),
        lifecycle.campaign_cancel,
        {Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.PAUSED},
    ),
    "rerandomize": (
        _("Re-randomize A/B assignment"),
        lifecycle.campaign_rerandomize,
        {Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.PAUSED},
    ),
}


# --- Forms ---------------------------------------------------------------------------------------------------------


class VariantForm(forms.ModelForm):
    class Meta:
        model = Variant
        fields = [
            "name",
            "weight",
            "subject",
            "preheader",
            "body",
            "html",
            "link_url",
            "variables",
            "send_delay_minutes",
        ]
        widgets = {
            "body": forms.Textarea(attrs={"rows": 4, "cols": 80}),
            "html": forms.Textarea(attrs={"rows": 6, "cols": 80}),
            "variables": forms.Textarea(attrs={"rows": 2, "cols": 60}),
        }

    def clean(self):
        cleaned = super().clean()
        variables = cleaned.get("variables") or {}
        if not isinstance(variables, dict):
            self.add_error("variables", _('Give variables as a JSON object, e.g. {"할인 금액": 5000}.'))
            variables = {}
        for name in CONTENT_FIELDS:
            for error in template_errors(cleaned.get(name) or "", html=name == "html", extra_variables=variables):
                self.add_error(name, error)
        return cleaned


class CampaignForm(forms.ModelForm):
    """The campaign's own fields come from the admin's fieldsets; this adds checks across fields."""

    def clean(self):
        cleaned = super().clean()
        schedule = cleaned.get("schedule")
        if cleaned.get("kind") == Campaign.Kind.BROADCAST and not cleaned.get("segment"):
            self.add_error("segment", _("Choose an audience segment."))
        if schedule == Campaign.Schedule.ONCE and not cleaned.get("send_at"):
            self.add_error("send_at", _("Set the date and time to send at."))
        if schedule == Campaign.Schedule.RECURRING:
            probe = Campaign(**{k: v for k, v in cleaned.items() if k.startswith("cron_")})
            from campaigns.services.schedules import parse_cron

            try:
                parse_cron(probe)
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    self.add_error(field if field in self.fields else None, errors)
        if cleaned.get("local_time") and schedule == Campaign.Schedule.NOW:
            self.add_error("local_time", _("Per-contact local time needs a one-time or recurring schedule."))
        starts, ends = cleaned.get("starts_on"), cleaned.get("ends_on")
        if starts and ends and ends < starts:
            self.add_error("ends_on", _("The end date is before the start date."))
        if cleaned.get("auto_winner") and not cleaned.get("goal_event"):
            self.add_error("goal_event", _("An automatic winner needs a goal event."))
        return cleaned


class PreviewForm(forms.Form):
    contact = forms.CharField(label=_("Contact"), help_text=_("ID, email or phone number."))
    variant = forms.ModelChoiceField(label=_("Variant"), queryset=Variant.objects.none())

    def __init__(self, *args, campaign: Campaign, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["variant"].queryset = campaign.variants.all()
        self.fields["variant"].initial = campaign.variants.first()

    def clean_contact(self) -> Contact:
        return find_contact(self.cleaned_data["contact"])


class TestSendForm(forms.Form):
    contacts = forms.CharField(
        label=_("Contacts"),
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=_("IDs, emails or phone numbers of contacts, separated by commas or lines (at most 20)."),
    )
    variant = forms.ModelChoiceField(label=_("Variant"), queryset=Variant.objects.none())

    def __init__(self, *args, campaign: Campaign, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["variant"].queryset = campaign.variants.all()
        self.fields["variant"].initial = campaign.variants.first()

    def clean_contacts(self) -> list[Contact]:
        words = [w.strip() for w in self.cleaned_data["contacts"].replace("\n", ",").split(",") if w.strip()]
        if len(words) > 20:
            raise ValidationError(_("At most 20 contacts at a time."))
        return [find_contact(word) for word in words]


def find_contact(word: str) -> Contact:
    word = word.strip()
    query = Q(email__iexact=word) | Q(phone=word) | Q(external_id=word)
    if word.isdigit():
        query |= Q(pk=int(word))
    found = list(Contact.objects.not_erased().filter(query)[:2])
    if not found:
        raise ValidationError(_("No contact “%(word)s”.") % {"word": word})
    if len(found) > 1:
        raise ValidationError(_("“%(word)s” matches more than one contact; use the ID.") % {"word": word})
    return found[0]


# --- Inlines -------------------------------------------------------------------------------------------------------


class VariantInline(admin.StackedInline):
    model = Variant
    form = VariantForm
    extra = 0
    min_num = 1
    fieldsets = [
        (None, {"fields": [("name", "weight", "send_delay_minutes")]}),
        (
            _("Content"),
            {
                "fields": ["subject", "preheader", "body", "html", "link_url", "variables"],
                "description": _(
                    "Personalize with #{고객명}, #{고객명|고객} (fallback), #{할인 금액:number} (5,000), "
                    "#{속성.등급} (attribute), #{이벤트.product_name} (event). See docs/campaigns.md."
                ),
            },
        ),
    ]


class RunInline(ReadOnlyTabularInline):
    model = Run
    fields = ["scheduled_for", "status", "audience_count", "sent", "skipped", "holdout_count", "winner_variant"]
    readonly_fields = fields
    ordering = ["-scheduled_for"]
    max_num = 0

    @admin.display(description=_("sent"))
    def sent(self, run: Run) -> int:
        return live_counts(run)["status"].get(Send.Status.SENT, 0)

    @admin.display(description=_("skipped"))
    def skipped(self, run: Run) -> int:
        return live_counts(run)["status"].get(Send.Status.SKIPPED, 0)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("winner_variant")


class ChangeInline(ReadOnlyTabularInline):
    model = CampaignChange
    fields = ["changed_at", "changed_by", "action", "diff_display"]
    readonly_fields = fields
    show_change_link = False
    verbose_name_plural = _("change history")

    @admin.display(description=_("changes"))
    def diff_display(self, change: CampaignChange) -> str:
        return json_block(change.diff)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("changed_by")


def live_counts(run: Run) -> dict:
    """Stored counts for finished runs; computed for a run still sending."""
    if run.status == Run.Status.SENDING or not run.counts:
        return run_counts(run=run)
    return run.counts


# --- Campaign ------------------------------------------------------------------------------------------------------


@admin.register(Campaign)
class CampaignAdmin(LoopModelAdmin):
    form = CampaignForm
    change_form_template = "admin/campaigns/campaign/change_form.html"
    inlines = [VariantInline, RunInline, ChangeInline]
    list_display = ["name", "channel", "purpose", "status", "schedule_display", "next_run_display", "created_at"]
    list_filter = ["status", "channel", "purpose", "schedule"]
    search_fields = ["name"]
    list_select_related = ["segment"]
    autocomplete_fields = []
    actions = ["pause_selected", "resume_selected", "cancel_selected"]
    readonly_fields = ["status", "next_run_display", "periodic_task_link", "created_by", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "kind", "channel", "purpose", "status"]}),
        (_("Audience"), {"fields": ["segment", "exclude_segment"]}),
        (_("Goal"), {"fields": ["goal_event", "attribution_window_hours"]}),
        (
            _("Schedule"),
            {
                "fields": [
                    "schedule",
                    "send_at",
                    ("cron_minute", "cron_hour", "cron_day_of_week", "cron_day_of_month", "cron_month_of_year"),
                    "time_zone",
                    ("starts_on", "ends_on"),
                    "local_time",
                    "next_run_display",
                    "periodic_task_link",
                ],
                "description": _(
                    "Recurring: a cron schedule in the campaign's time zone. The weekend promo, every Sunday at "
                    "20:00: minute 0, hour 20, day of week sun, time zone Asia/Seoul."
                ),
            },
        ),
        (_("Delivery rules"), {"fields": ["quiet_hours", "frequency_cap_exempt", "sender_name"]}),
        (
            _("A/B test"),
            {
                "fields": [
                    "holdout_percent",
                    "auto_winner",
                    ("winner_test_percent", "winner_wait_hours", "winner_metric"),
                    "assignment_seed",
                ]
            },
        ),
        (_("Record"), {"fields": ["created_by", "created_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description=_("schedule"))
    def schedule_display(self, campaign: Campaign) -> str:
        if campaign.schedule == Campaign.Schedule.RECURRING:
            return f"cron {campaign.cron_expression} ({campaign.time_zone})"
        if campaign.schedule == Campaign.Schedule.ONCE and campaign.send_at:
            return timezone.localtime(campaign.send_at, campaign.zone).strftime("%Y-%m-%d %H:%M")
        return campaign.get_schedule_display()

    @admin.display(description=_("next run"))
    def next_run_display(self, campaign: Campaign) -> str:
        if campaign.pk is None:
            return "-"
        moment = next_run_at(campaign)
        return timezone.localtime(moment, campaign.zone).strftime("%Y-%m-%d %H:%M %Z") if moment else "-"

    @admin.display(description=_("beat schedule"))
    def periodic_task_link(self, campaign: Campaign) -> str:
        task = campaign.periodic_task
        if task is None:
            return "-"
        url = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
        state = gettext("enabled") if task.enabled else gettext("disabled")
        return format_html('<a href="{}">{}</a> ({})', url, task.name, state)

    # Saving and deleting go through the services.

    def save_model(self, request, obj: Campaign, form, change: bool) -> None:
        before = lifecycle.campaign_snapshot(Campaign.objects.get(pk=obj.pk)) if change else None
        lifecycle.campaign_save(campaign=obj, user=request.user, before=before)

    def delete_model(self, request, obj: Campaign) -> None:
        lifecycle.campaign_delete(campaign=obj)

    def delete_queryset(self, request, queryset) -> None:
        for campaign in queryset:
            lifecycle.campaign_delete(campaign=campaign)

    # Lifecycle.

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/lifecycle/<str:action>/", wrap(self.lifecycle_view), name="campaigns_campaign_lifecycle"),
            path("<int:pk>/preview/", wrap(self.preview_view), name="campaigns_campaign_preview"),
            path("<int:pk>/test-send/", wrap(self.test_send_view), name="campaigns_campaign_test_send"),
            *super().get_urls(),
        ]

    def _run_action(self, request: HttpRequest, campaign: Campaign, action: str) -> bool:
        label, service, _allowed = LIFECYCLE_ACTIONS[action]
        try:
            service(campaign=campaign, user=request.user)
        except ValidationError as exc:
            for message in exc.messages:
                self.message_user(request, f"{campaign}: {message}", messages.ERROR)
            return False
        self.message_user(request, gettext("%(campaign)s: %(action)s done.") % {"campaign": campaign, "action": label})
        return True

    def lifecycle_view(self, request: HttpRequest, pk: int, action: str):
        campaign = get_object_or_404(Campaign, pk=pk)
        if request.method != "POST" or action not in LIFECYCLE_ACTIONS:
            raise PermissionDenied
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        self._run_action(request, campaign, action)
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))

    def _bulk(self, request, queryset, action: str) -> None:
        for campaign in queryset:
            self._run_action(request, campaign, action)

    @admin.action(description=_("Pause selected campaigns"))
    def pause_selected(self, request, queryset):
        self._bulk(request, queryset, "pause")

    @admin.action(description=_("Resume selected campaigns"))
    def resume_selected(self, request, queryset):
        self._bulk(request, queryset, "resume")

    @admin.action(description=_("Cancel selected campaigns"))
    def cancel_selected(self, request, queryset):
        self._bulk(request, queryset, "cancel")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        campaign = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if campaign is not None:
            extra["lifecycle_actions"] = [
                {
                    "name": name,
                    "label": label,
                    "url": reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, name]),
                }
                for name, (label, _service, allowed) in LIFECYCLE_ACTIONS.items()
                if campaign.status in allowed
            ]
            extra["preview_url"] = reverse("admin:campaigns_campaign_preview", args=[campaign.pk])
            extra["test_send_url"] = reverse("admin:campaigns_campaign_test_send", args=[campaign.pk])
        return super().change_view(request, object_id, form_url, extra)

    # Preview and test send.

    def _tool_context(self, request, campaign: Campaign, title: str, **extra):
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": campaign,
            "campaign": campaign,
            "title": title,
            "change_url": reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
            **extra,
        }

    def preview_view(self, request: HttpRequest, pk: int):
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        form = PreviewForm(request.GET or None, campaign=campaign)
        rendered, error = None, ""
        if form.is_valid():
            contact, variant = form.cleaned_data["contact"], form.cleaned_data["variant"]
            data = build_render_data([contact.pk], variables=variant.variables)[contact.pk]
            try:
                rendered = render_content(campaign=campaign, variant=variant, data=data)
            except Exception as exc:  # a template that fails for this contact: show why
                error = f"{type(exc).__name__}: {exc}"
        context = self._tool_context(
            request,
            campaign,
            gettext("Preview: %(name)s") % {"name": campaign},
            form=form,
            rendered=rendered,
            error=error,
        )
        return TemplateResponse(request, "admin/campaigns/campaign/preview.html", context)

    def test_send_view(self, request: HttpRequest, pk: int):
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        form = TestSendForm(request.POST or None, campaign=campaign)
        sends = None
        if request.method == "POST" and form.is_valid():
            sends = campaign_test_send(
                campaign=campaign,
                variant=form.cleaned_data["variant"],
                contact_ids=[c.pk for c in form.cleaned_data["contacts"]],
            )
            self.message_user(request, gettext("%(count)d test message(s) sent to the outbox.") % {"count": len(sends)})
        context = self._tool_context(
            request, campaign, gettext("Test send: %(name)s") % {"name": campaign}, form=form, sends=sends
        )
        return TemplateResponse(request, "admin/campaigns/campaign/test_send.html", context)


# --- Runs, sends, outbox, suppressions -----------------------------------------------------------------------------


@admin.register(Run)
class RunAdmin(ReadOnlyModelAdmin):
    list_display = ["__str__", "status", "audience_count", "sent_display", "skipped_display", "holdout_count"]
    list_filter = ["status"]
    list_select_related = ["campaign"]
    search_fields = ["campaign__name"]
    fields = [
        "campaign",
        "scheduled_for",
        "status",
        "started_at",
        "finished_at",
        "audience_count",
        "holdout_count",
        "report",
        "winner_variant",
        "winner_decided_at",
        "winner_display",
    ]
    readonly_fields = fields

    @admin.display(description=_("sent"))
    def sent_display(self, run: Run) -> int:
        return (run.counts or {}).get("status", {}).get(Send.Status.SENT, 0)

    @admin.display(description=_("skipped"))
    def skipped_display(self, run: Run) -> int:
        return (run.counts or {}).get("status", {}).get(Send.Status.SKIPPED, 0)

    @admin.display(description=_("report"))
    def report(self, run: Run) -> str:
        counts = live_counts(run)
        statuses = list(Send.Status)
        header = format_html_join("", "<th>{}</th>", ((s.label,) for s in statuses))
        rows = format_html_join(
            "",
            "<tr><th>{}</th>{}</tr>",
            (
                (
                    gettext("Holdout") if name == "holdout" else name,
                    format_html_join("", "<td>{}</td>", ((row.get(s.value, 0),) for s in statuses)),
                )
                for name, row in sorted(counts["variants"].items())
            ),
        )
        labels = dict(SkipReason.choices)
        reasons = format_html_join(
            "", "<li>{}: {}</li>", ((labels.get(r, r), n) for r, n in sorted(counts["skip_reason"].items()))
        )
        return format_html(
            '<table class="loop-run-report"><thead><tr><th>{}</th>{}</tr></thead><tbody>{}</tbody></table>'
            "<h4>{}</h4><ul>{}</ul>",
            gettext("variant"),
            header,
            rows,
            gettext("Skip reasons"),
            reasons or "-",
        )

    @admin.display(description=_("winner decision"))
    def winner_display(self, run: Run) -> str:
        return json_block(run.winner_explanation)


@admin.register(Send)
class SendAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "campaign", "run", "contact", "variant", "channel", "status", "skip_reason", "sent_at"]
    list_filter = ["status", "skip_reason", "channel", "is_test", "is_holdout"]
    list_select_related = ["campaign", "run__campaign", "contact", "variant"]
    search_fields = ["=id", "=contact__email", "=contact__phone", "provider_message_id"]
    raw_id_fields = ["contact", "run"]
    readonly_fields = [
        "campaign",
        "run",
        "contact",
        "variant",
        "is_holdout",
        "is_test",
        "key",
        "channel",
        "advertising",
        "status",
        "skip_reason",
        "due_at",
        "attempts",
        "address",
        "backend",
        "provider_message_id",
        "error",
        "content_display",
        "context_display",
        "created_at",
        "sent_at",
        "finished_at",
    ]
    fields = readonly_fields

    @admin.display(description=_("rendered content"))
    def content_display(self, send: Send) -> str:
        return json_block(send.content)

    @admin.display(description=_("context"))
    def context_display(self, send: Send) -> str:
        return json_block(send.context)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "channel", "to", "subject", "body_start", "advertising"]
    list_filter = ["channel", "advertising"]
    list_select_related = ["send"]
    search_fields = ["to", "subject"]
    fields = [
        "send_link",
        "channel",
        "to",
        "subject",
        "preheader",
        "body_display",
        "html_display",
        "link_url",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description=_("text"))
    def body_start(self, message: OutboxMessage) -> str:
        return message.body[:80]

    @admin.display(description=_("send"))
    def send_link(self, message: OutboxMessage) -> str:
        url = reverse("admin:campaigns_send_change", args=[message.send_id])
        return format_html('<a href="{}">#{}</a>', url, message.send_id)

    @admin.display(description=_("text"))
    def body_display(self, message: OutboxMessage) -> str:
        return format_html('<pre class="loop-message">{}</pre>', message.body)

    @admin.display(description=_("HTML"))
    def html_display(self, message: OutboxMessage) -> str:
        if not message.html:
            return "-"
        # Shown in a sandboxed frame: no scripts, no same-origin access.
        return format_html(
            '<iframe sandbox="" srcdoc="{}" style="width:100%;height:400px;border:1px solid #ccc"></iframe>',
            message.html,
        )


@admin.register(Suppression)
class SuppressionAdmin(ReadOnlyModelAdmin):
    list_display = ["contact", "channel", "reason", "created_at"]
    list_filter = ["channel", "reason"]
    list_select_related = ["contact"]
    raw_id_fields = ["contact"]
    search_fields = ["=contact__email", "=contact__phone"]
    fields = ["contact", "channel", "reason", "detail", "created_at"]
    readonly_fields = fields
