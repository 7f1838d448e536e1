"""Campaigns in the admin: build a campaign with its variants, schedule it, watch its runs, preview and test-send.

No business logic here: saving calls ``campaign_save`` (change log, PeriodicTask), the lifecycle buttons call the
lifecycle services, test sends go through the pipeline to the outbox. Runs, sends, outbox messages and
suppressions are read-only (written by the pipeline).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.humanize.templatetags.humanize import intcomma
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from campaigns.ab_report import ab_report, winner_in_words
from campaigns.content_rules import campaign_channel_errors, variant_errors
from campaigns.models import (
    AdsConsentNotice,
    Campaign,
    CampaignChange,
    Click,
    Conversion,
    KakaoTemplate,
    LaunchApproval,
    Open,
    OutboxMessage,
    Run,
    Send,
    SenderProfile,
    SkipReason,
    Suppression,
    Variant,
)
from campaigns.personalization import build_render_data, template_errors
from campaigns.selectors import run_is_settled
from campaigns.services import campaigns as lifecycle
from campaigns.services import launch
from campaigns.services.runs import run_counts
from campaigns.services.schedules import next_run_at
from campaigns.services.sending import OPEN_STATUSES, campaign_test_send, render_content
from config.admin_base import LoopModelAdmin, ReadOnlyModelAdmin, ReadOnlyTabularInline, json_block
from crm.models import Contact

CONTENT_FIELDS = ("subject", "preheader", "body", "html", "link_url")


def render_sample(campaign: Campaign, variant: Variant, contact: Contact) -> tuple[dict | None, str]:
    """The variant rendered for one contact, or the error that rendering it raised (shown to the marketer)."""
    data = build_render_data([contact.pk], variables=variant.variables)[contact.pk]
    try:
        rendered = render_content(campaign=campaign, variant=variant, data=data)
    except Exception as exc:  # a template that fails for this contact: show why
        return None, f"{type(exc).__name__}: {exc}"
    if campaign.channel == "sms":
        from campaigns.channels.sms_length import length_report

        report = length_report(
            rendered.get("body", ""), subject=rendered.get("subject", ""), has_image=bool(variant.image)
        )
        rendered["sms_type"] = gettext("%(kind)s · %(bytes)s bytes") % {
            "kind": report.kind,
            "bytes": f"{report.text_bytes:,}",
        }
    return rendered, ""


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
            "image",
            "variables",
            "send_delay_minutes",
        ]
        widgets = {
            "body": forms.Textarea(attrs={"rows": 4, "cols": 80, "data-sms-counter": "1"}),
            "html": forms.Textarea(attrs={"rows": 6, "cols": 80}),
            "variables": forms.Textarea(attrs={"rows": 2, "cols": 60}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name = self.fields.get("name")
        if name is not None and self.instance.pk and Send.objects.filter(variant=self.instance).exists():
            # Reports and stored run figures list the variant under the name it was sent with.
            name.disabled = True
            name.help_text = _("Fixed once the variant has been sent: reports list its results under this name.")

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


class VariantFormSet(forms.BaseInlineFormSet):
    """Checks each variant's content against its campaign's channel (``self.instance`` carries the campaign's
    edited values): text-message length, the AlimTalk template's exact text, KakaoTalk limits."""

    def clean(self):
        super().clean()
        campaign = self.instance
        if not campaign.channel:
            return
        for form in self.forms:
            if (
                not hasattr(form, "cleaned_data")
                or form.cleaned_data.get("DELETE")
                or (not form.has_changed() and form.instance.pk is None)
            ):
                continue
            data = form.cleaned_data
            image = data.get("image")
            content = {
                "subject": data.get("subject", ""),
                "body": data.get("body", ""),
                "link_url": data.get("link_url", ""),
                "image": image.name if image else "",
            }
            for field, messages_ in variant_errors(campaign, content).items():
                for message in messages_:
                    form.add_error(field if field in form.fields else None, message)


class CampaignForm(forms.ModelForm):
    """The campaign's own fields come from the admin's fieldsets; this adds checks across fields."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "attribution_basis" in self.fields:  # optional in a form post: the default (after the send) applies
            self.fields["attribution_basis"].required = False

    def clean_attribution_basis(self) -> str:
        return self.cleaned_data.get("attribution_basis") or Campaign.AttributionBasis.SEND

    def clean(self):
        cleaned = super().clean()
        probe = Campaign(
            channel=cleaned.get("channel") or "",
            purpose=cleaned.get("purpose") or "",
            kakao_type=cleaned.get("kakao_type") or "",
            sender_profile=cleaned.get("sender_profile"),
            kakao_template=cleaned.get("kakao_template"),
        )
        for field, errors in campaign_channel_errors(probe).items():
            for error in errors:
                self.add_error(field if field in self.fields else None, error)
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


def content_locked(campaign: Campaign | None) -> bool:
    """A one-off broadcast that has sent its message: the message is history and can no longer be edited.

    A recurring campaign's content stays editable for its next runs; every send keeps the content it went out
    with (shown on the send), so editing never rewrites what a contact received.
    """
    return (
        campaign is not None
        and campaign.pk is not None
        and campaign.kind == Campaign.Kind.BROADCAST
        and campaign.schedule != Campaign.Schedule.RECURRING
        and campaign.sends.filter(status=Send.Status.SENT, is_test=False).exists()
    )


class VariantInline(admin.StackedInline):
    model = Variant
    form = VariantForm
    formset = VariantFormSet
    extra = 0
    min_num = 1

    def get_readonly_fields(self, request, obj=None):
        if content_locked(obj):
            return ["name", "weight", "send_delay_minutes", *CONTENT_FIELDS, "image", "variables"]
        return super().get_readonly_fields(request, obj)

    def has_add_permission(self, request, obj=None) -> bool:
        return not content_locked(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return not content_locked(obj) and super().has_delete_permission(request, obj)

    fieldsets = [
        (None, {"fields": [("name", "weight", "send_delay_minutes")]}),
        (
            _("Content"),
            {
                "fields": ["subject", "preheader", "body", "html", "link_url", "image", "variables"],
                "description": _(
                    "Personalize with #{고객명}, #{고객명|고객} (fallback), #{할인 금액:number} (5,000), "
                    "#{속성.등급} (attribute), #{이벤트.product_name} (event). See docs/campaigns.md. Text messages: "
                    "up to 90 bytes is an SMS, up to 2,000 an LMS, with an image an MMS (Korean characters count 2 "
                    "bytes). AlimTalk: the approved template's text exactly."
                ),
            },
        ),
    ]

    class Media:
        js = ["campaigns/sms_counter.js"]

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        if "body" in formset.form.base_fields:  # not when the content is locked (read-only)
            body = formset.form.base_fields["body"].widget
            body.attrs["data-sms-sender"] = settings.LOOP_SENDER_NAME
            body.attrs["data-sms-optout"] = settings.LOOP_OPTOUT_PHONE
        return formset


class RunInline(ReadOnlyTabularInline):
    model = Run
    fields = [
        "scheduled_for",
        "status",
        "audience_count",
        "sent",
        "skipped",
        "holdout_count",
        "converted",
        "conversion_rate",
        "revenue",
        "winner_variant",
    ]
    readonly_fields = fields
    ordering = ["-scheduled_for"]
    max_num = 0

    @admin.display(description=_("converted"))
    def converted(self, run: Run) -> int:
        return run.converted_n

    @admin.display(description=_("conversion rate"))
    def conversion_rate(self, run: Run) -> str:
        sent = self.sent(run)
        return f"{run.converted_n / sent:.1%}" if sent else "-"

    @admin.display(description=_("revenue"))
    def revenue(self, run: Run) -> str:
        return intcomma(f"{run.revenue_sum or 0:.0f}")

    @admin.display(description=_("sent"))
    def sent(self, run: Run) -> int:
        return live_counts(run)["status"].get(Send.Status.SENT, 0)

    @admin.display(description=_("skipped"))
    def skipped(self, run: Run) -> int:
        return live_counts(run)["status"].get(Send.Status.SKIPPED, 0)

    def get_queryset(self, request):
        real = Q(conversions__is_holdout=False)
        return (
            super()
            .get_queryset(request)
            .select_related("winner_variant")
            .annotate(
                converted_n=Count("conversions__send", filter=real, distinct=True),
                revenue_sum=Sum("conversions__revenue", filter=real),
            )
        )


class ChangeInline(ReadOnlyTabularInline):
    model = CampaignChange
    fields = ["changed_at", "changed_by", "action_display", "diff_display"]
    readonly_fields = fields
    show_change_link = False
    verbose_name_plural = _("change history")

    @admin.display(description=_("action"))
    def action_display(self, change: CampaignChange) -> str:
        return change.action_label

    @admin.display(description=_("changes"))
    def diff_display(self, change: CampaignChange) -> str:
        return json_block(change.diff)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("changed_by")


def live_counts(run: Run) -> dict:
    """Stored counts for finished runs; computed for a run still sending (or stored before they had every key)."""
    if run.status == Run.Status.SENDING or "variant_skip_reasons" not in (run.counts or {}):
        return run_counts(run=run)
    return run.counts


def run_report_context(run: Run) -> dict[str, Any]:
    """What a run's report shows: a row per variant (by name) and the holdout (last), the skip reasons per variant."""
    counts = live_counts(run)
    labels = sorted((name for name in counts["variants"] if name != "holdout"), key=str)
    if "holdout" in counts["variants"]:
        labels.append("holdout")
    rows = []
    for key in labels:
        by_status = counts["variants"][key]
        rows.append(
            {
                "key": key,
                "label": gettext("Holdout") if key == "holdout" else key,
                "holdout": key == "holdout",
                "audience": sum(by_status.values()),
                "sent": by_status.get(Send.Status.SENT, 0),
                "skipped": by_status.get(Send.Status.SKIPPED, 0),
                "failed": by_status.get(Send.Status.FAILED, 0),
                "open": sum(by_status.get(s, 0) for s in OPEN_STATUSES),
            }
        )
    variants = [key for key in labels if key != "holdout"]
    ab = ab_report(run, variants)
    window = run.campaign.attribution_window_hours
    for row in rows:
        row["ab"] = ab["holdout"] if row["holdout"] else ab["variants"].get(row["key"])
    per_variant = counts.get("variant_skip_reasons", {})
    reason_labels = dict(SkipReason.choices)
    reasons = [
        {
            "key": reason,
            "label": reason_labels.get(reason, reason),
            "per_variant": [per_variant.get(key, {}).get(reason, 0) for key in variants],
            "total": sum(per_variant.get(key, {}).get(reason, 0) for key in variants),
        }
        for reason in sorted(counts["skip_reason"], key=lambda r: -counts["skip_reason"][r])
        if reason != SkipReason.HOLDOUT
    ]
    return {
        "rows": rows,
        "reasons": reasons,
        "goal_event": run.campaign.goal_event,
        "window_hours": run.campaign.attribution_window_hours,
        "by_click": run.campaign.attribution_basis == Campaign.AttributionBasis.CLICK,
        "metric": ab["metric"],
        "holdout": ab["holdout"],
        "figures_at": run.figures_at if run_is_settled(run, window_hours=window, now=timezone.now()) else None,
    }


# --- Campaign ------------------------------------------------------------------------------------------------------


def email_as_received(*, campaign: Campaign, contact: Contact, content: dict[str, str]):
    """The email in its layout with its text part, as the contact would get it (the unsubscribe link inert)."""
    from campaigns.advertising import UNSUBSCRIBE_URL
    from campaigns.channels import Message
    from campaigns.channels.email import render_email

    message = Message(
        send_id=0,
        channel="email",
        contact_id=contact.pk,
        to=contact.email,
        advertising=campaign.is_advertising,
        **{name: content.get(name, "") for name in CONTENT_FIELDS},
    )
    email = render_email(message, sender_name=campaign.sender_name or settings.LOOP_SENDER_NAME)
    return {
        "from": email.from_email,
        "html": email.html.replace(UNSUBSCRIBE_URL, "#unsubscribe"),
        "text": email.text.replace(UNSUBSCRIBE_URL, "#unsubscribe"),
    }


@admin.register(Campaign)
class CampaignAdmin(LoopModelAdmin):
    form = CampaignForm
    change_form_template = "admin/campaigns/campaign/change_form.html"
    inlines = [VariantInline, RunInline, ChangeInline]

    def get_inlines(self, request, obj: Campaign | None):
        return self.inlines if obj is not None else [VariantInline]  # a new campaign has no runs or history yet

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
        (_("Goal"), {"fields": ["goal_event", "attribution_basis", "attribution_window_hours"]}),
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
        (
            _("Sender"),
            {
                "fields": ["sender_profile", "sender_name", "kakao_type", "kakao_template", "sms_fallback"],
                "description": _(
                    "SMS: the registered caller number. KakaoTalk: AlimTalk (approved template, informational) or "
                    "FriendTalk (friends of the channel, advertising allowed, not 20:00–08:00)."
                ),
            },
        ),
        (_("Delivery rules"), {"fields": ["quiet_hours", "frequency_cap_exempt"]}),
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

    #: What a built-in campaign (the advertising-consent notice) keeps: its wording and sender stay editable.
    BUILTIN_LOCKED = ["kind", "channel", "purpose", "segment", "exclude_segment", "schedule", "frequency_cap_exempt"]

    def get_readonly_fields(self, request, obj: Campaign | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.builtin:
            fields += self.BUILTIN_LOCKED
        return fields

    def has_delete_permission(self, request, obj: Campaign | None = None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.builtin)

    # Saving and deleting go through the services.

    def save_model(self, request, obj: Campaign, form, change: bool) -> None:
        before = lifecycle.campaign_snapshot(Campaign.objects.get(pk=obj.pk)) if change else None
        lifecycle.campaign_save(campaign=obj, user=request.user, before=before)
        if change and {"goal_event", "attribution_basis", "attribution_window_hours"} & set(form.changed_data):
            from campaigns.tasks import rebuild_conversions

            transaction.on_commit(lambda: rebuild_conversions.delay(obj.pk))  # its events, counted by the new rule

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
        self.message_user(
            request,
            gettext("%(campaign)s: %(action)s done.") % {"campaign": campaign, "action": label},
            messages.SUCCESS,
        )
        return True

    def lifecycle_view(self, request: HttpRequest, pk: int, action: str):
        campaign = get_object_or_404(Campaign, pk=pk)
        if request.method != "POST" or action not in LIFECYCLE_ACTIONS:
            raise PermissionDenied
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        change_url = reverse("admin:campaigns_campaign_change", args=[pk])
        if action not in launch.LAUNCHES:
            self._run_action(request, campaign, action)
            return HttpResponseRedirect(change_url)
        size = launch.campaign_audience_size(campaign=campaign)
        if launch.launch_needs_confirmation(size) and request.POST.get("confirmed") != "1":
            return self._launch_confirm(request, campaign, action, size)
        try:
            outcome = launch.campaign_launch(campaign=campaign, action=action, user=request.user)
        except ValidationError as exc:
            for message in exc.messages:
                self.message_user(request, f"{campaign}: {message}", messages.ERROR)
            return HttpResponseRedirect(change_url)
        if outcome.launched:
            label = LIFECYCLE_ACTIONS[action][0]
            self.message_user(
                request,
                gettext("%(campaign)s: %(action)s done.") % {"campaign": campaign, "action": label},
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request,
                gettext(
                    "%(campaign)s: the audience (%(size)s contacts) is over the approval limit of %(limit)s: "
                    "the launch waits for an Admin's approval."
                )
                % {"campaign": campaign, "size": intcomma(size), "limit": intcomma(launch.approval_limit())},
                messages.WARNING,
            )
        return HttpResponseRedirect(change_url)

    def _launch_confirm(self, request: HttpRequest, campaign: Campaign, action: str, size: int):
        """The page that asks "send to N contacts?" with a preview rendered for one member."""
        sample = campaign.segment.contacts().order_by("pk").first() if campaign.segment_id else None
        previews = []
        for variant in campaign.variants.all():
            rendered, error = render_sample(campaign, variant, sample) if sample else (None, "")
            previews.append({"variant": variant, "rendered": rendered, "error": error})
        context = self._tool_context(
            request,
            campaign,
            gettext("Confirm the launch: %(name)s") % {"name": campaign},
            action=action,
            action_label=LIFECYCLE_ACTIONS[action][0],
            action_url=reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, action]),
            audience_size=size,
            needs_approval=launch.launch_needs_approval(user=request.user, audience_size=size),
            approval_limit=launch.approval_limit(),
            sample=sample,
            previews=previews,
        )
        return TemplateResponse(request, "admin/campaigns/campaign/launch_confirm.html", context)

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
        if campaign is not None and campaign.schedule == Campaign.Schedule.RECURRING:
            from campaigns.reports import campaign_runs_context
            from config.reports import csv_download, csv_requested

            report = campaign_runs_context(request, campaign)
            if csv_requested(request):
                return csv_download(request, report["tables"], prefix=f"campaign-{campaign.pk}")
            extra["runs_report"] = report
        if campaign is not None:
            extra["lifecycle_actions"] = [
                {
                    "name": name,
                    "label": label,
                    "url": reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, name]),
                    "confirm": gettext(
                        "Cancel “%(name)s” for good? Its schedule is removed and whatever was not sent yet is skipped."
                    )
                    % {"name": campaign.name}
                    if name == "cancel"
                    else "",
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
        rendered, email, error = None, None, ""
        if form.is_valid():
            rendered, error = render_sample(campaign, form.cleaned_data["variant"], form.cleaned_data["contact"])
            if rendered is not None and campaign.channel == "email":
                email = email_as_received(campaign=campaign, contact=form.cleaned_data["contact"], content=rendered)
        context = self._tool_context(
            request,
            campaign,
            gettext("Preview: %(name)s") % {"name": campaign},
            form=form,
            rendered=rendered,
            email=email,
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

    def get_fields(self, request, obj: Run | None = None):
        if obj is not None and not obj.campaign.auto_winner:  # no automatic winner: nothing to show about one
            return [name for name in self.fields if not name.startswith("winner")]
        return self.fields

    @admin.display(description=_("sent"))
    def sent_display(self, run: Run) -> int:
        return (run.counts or {}).get("status", {}).get(Send.Status.SENT, 0)

    @admin.display(description=_("skipped"))
    def skipped_display(self, run: Run) -> int:
        return (run.counts or {}).get("status", {}).get(Send.Status.SKIPPED, 0)

    @admin.display(description=_("report"))
    def report(self, run: Run) -> str:
        return render_to_string("admin/campaigns/run/report.html", run_report_context(run))

    @admin.display(description=_("winner decision"))
    def winner_display(self, run: Run) -> str:
        words = winner_in_words(run.winner_explanation)
        return format_html("<p>{}</p>{}", words, json_block(run.winner_explanation)) if words else "-"


@admin.register(Send)
class SendAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "campaign",
        "run",
        "contact",
        "variant",
        "channel",
        "status",
        "skip_reason",
        "sent_at",
        "delivery_status",
    ]
    list_filter = ["status", "skip_reason", "delivery_status", "channel", "fallback_channel", "is_test", "is_holdout"]
    list_select_related = ["campaign", "run__campaign", "contact", "variant"]
    search_fields = ["=id", "=contact__email", "=contact__phone", "=provider_message_id"]
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
        "delivery_status",
        "delivery_detail",
        "delivery_updated_at",
        "delivered_at",
        "opened_at",
        "clicked_at",
        "fallback_channel",
        "fallback_reason",
        "fallback_provider_message_id",
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
        if message.send_id is None:  # a team notification (Slack, webhook)
            url = reverse("admin:campaigns_notification_change", args=[message.notification_id])
            return format_html('<a href="{}">{} #{}</a>', url, gettext("team notification"), message.notification_id)
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


@admin.register(AdsConsentNotice)
class AdsConsentNoticeAdmin(ReadOnlyModelAdmin):
    """The 2-year advertising-consent notices sent (written by the daily job, read-only)."""

    list_display = ["contact", "consented_at", "anniversary", "channel", "send", "created_at"]
    list_filter = ["channel"]
    list_select_related = ["contact", "send"]
    raw_id_fields = ["contact", "send"]
    search_fields = ["=contact__email", "=contact__phone"]
    fields = ["contact", "consented_at", "anniversary", "channel", "send", "created_at"]
    readonly_fields = fields


@admin.register(LaunchApproval)
class LaunchApprovalAdmin(ReadOnlyModelAdmin):
    """Launches waiting for an Admin: approve (performs the launch in the approver's name) or reject."""

    list_display = ["campaign", "action", "audience_size", "status", "requested_by", "requested_at", "decided_by"]
    list_filter = ["status"]
    list_select_related = ["campaign", "requested_by", "decided_by"]
    search_fields = ["campaign__name"]
    fields = [*list_display, "decided_at", "note"]
    readonly_fields = fields
    actions = ["approve_selected", "reject_selected"]

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm(launch.APPROVE_PERMISSION)

    def _decide(self, request, queryset, decide) -> None:
        for approval in queryset.filter(status=LaunchApproval.Status.PENDING).select_related("campaign"):
            try:
                decide(approval=approval, user=request.user)
            except ValidationError as exc:
                for message in exc.messages:
                    self.message_user(request, f"{approval.campaign}: {message}", messages.ERROR)
            else:
                self.message_user(request, f"{approval.campaign}: {approval.get_status_display()}")

    @admin.action(description=_("Approve and launch the selected campaigns"), permissions=["approve"])
    def approve_selected(self, request, queryset):
        self._decide(request, queryset, launch.launch_approve)

    @admin.action(description=_("Reject the selected launches"), permissions=["approve"])
    def reject_selected(self, request, queryset):
        self._decide(request, queryset, launch.launch_reject)


# --- Tracking and conversions (docs/analytics.md) -------------------------------------------------------------------


@admin.register(Click)
class ClickAdmin(ReadOnlyModelAdmin):
    list_display = ["at", "send", "url", "is_bot", "bot_reason"]
    list_filter = ["is_bot", "bot_reason"]
    list_select_related = ["send"]
    search_fields = ["=send__id", "url"]
    raw_id_fields = ["send"]
    date_hierarchy = "at"


@admin.register(Open)
class OpenAdmin(ReadOnlyModelAdmin):
    list_display = ["at", "send", "is_bot", "bot_reason", "user_agent"]
    list_filter = ["is_bot", "bot_reason"]
    list_select_related = ["send"]
    search_fields = ["=send__id"]
    raw_id_fields = ["send"]
    date_hierarchy = "at"


@admin.register(Conversion)
class ConversionAdmin(ReadOnlyModelAdmin):
    list_display = ["occurred_at", "campaign", "run", "variant", "contact", "is_holdout", "revenue", "touched_at"]
    list_filter = ["is_holdout", "campaign"]
    list_select_related = ["campaign", "run__campaign", "variant", "contact"]
    search_fields = ["campaign__name", "=contact__id"]
    raw_id_fields = ["event", "send", "campaign", "run", "variant", "contact"]
    date_hierarchy = "occurred_at"


# --- Sender profiles and KakaoTalk templates -------------------------------------------------------------------------


class SenderProfileForm(forms.ModelForm):
    class Meta:
        model = SenderProfile
        fields = ["kind", "label", "value", "sender_key", "is_default"]

    def _post_clean(self):
        super()._post_clean()  # the model's clean normalizes the number to E.164
        if self.instance.kind == SenderProfile.Kind.SMS and not self.errors:
            from campaigns.senders import caller_number_registration_error

            error = caller_number_registration_error(self.instance.value)
            if error:
                self.add_error("value", error)


@admin.register(SenderProfile)
class SenderProfileAdmin(LoopModelAdmin):
    """Who messages come from. Credentials are not here: API keys and secrets are environment variables."""

    form = SenderProfileForm
    list_display = ["label", "kind", "value", "is_default"]
    list_filter = ["kind", "is_default"]
    search_fields = ["label", "value"]

    def save_model(self, request, obj: SenderProfile, form, change: bool) -> None:
        from campaigns.senders import sender_profile_save

        sender_profile_save(profile=obj)


class KakaoTemplateForm(forms.ModelForm):
    class Meta:
        model = KakaoTemplate
        fields = ["sender_profile", "code", "name", "text", "buttons", "active"]
        widgets = {"text": forms.Textarea(attrs={"rows": 6, "cols": 80}), "buttons": forms.Textarea(attrs={"rows": 4})}


@admin.register(KakaoTemplate)
class KakaoTemplateAdmin(LoopModelAdmin):
    form = KakaoTemplateForm
    list_display = ["name", "code", "sender_profile", "active"]
    list_filter = ["active", "sender_profile"]
    search_fields = ["name", "code"]
    readonly_fields = ["variables_display"]
    fields = ["sender_profile", "code", "name", "text", "variables_display", "buttons", "active"]

    @admin.display(description=_("variables"))
    def variables_display(self, template: KakaoTemplate) -> str:
        from campaigns.channels.kakao import template_variables

        names = template_variables(template.text) if template.pk else []
        return ", ".join(f"#{{{name}}}" for name in dict.fromkeys(names)) or "-"


from campaigns import admin_team  # noqa: E402, F401  (destinations and team notifications)
