"""Team channels in the admin: destinations (Slack webhooks, webhook URLs) and the team notifications sent to them.

A destination's URL and signing secret are write-only: the form never renders them back (password inputs left
empty), the pages show only their last four characters, and leaving the field empty keeps the stored value.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from campaigns.channels.slack import blocks
from campaigns.models import Destination, Notification
from campaigns.services.notifications import notifications_retry, slack_notify, webhook_notify
from config.admin_base import LoopModelAdmin, ReadOnlyModelAdmin, json_block


def last_four(value: str) -> str:
    """``…abcd`` for a stored secret, ``-`` when there is none."""
    return f"…{value[-4:]}" if value else "-"


class DestinationForm(forms.ModelForm):
    new_url = forms.CharField(
        label=_("URL"),
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=_(
            "The Slack incoming webhook URL (https://hooks.slack.com/services/…) or the URL that receives webhooks. "
            "Write-only: leave empty to keep the stored one."
        ),
    )
    new_secret = forms.CharField(
        label=_("signing secret"),
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=_(
            "Webhooks only: the key the receiver verifies X-Loop-Signature with (at least 16 characters). "
            "Write-only: leave empty to keep the stored one."
        ),
    )

    class Meta:
        model = Destination
        fields = ["name", "kind", "url_env", "secret_env", "active"]

    def clean_new_url(self) -> str:
        url = self.cleaned_data["new_url"].strip()
        if url:
            URLValidator(schemes=["https", "http"])(url)
        return url

    def clean_new_secret(self) -> str:
        secret = self.cleaned_data["new_secret"].strip()
        if secret and len(secret) < 16:
            raise ValidationError(_("Use a secret of at least 16 characters."))
        return secret

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        has_url = bool(data.get("new_url") or data.get("url_env") or self.instance.url)
        if not has_url:
            self.add_error("new_url", _("Enter the URL, or the environment variable that holds it."))
        if kind == Destination.Kind.SLACK and data.get("new_url", "").startswith("http://"):
            self.add_error("new_url", _("Slack webhook URLs start with https://."))
        if kind == Destination.Kind.WEBHOOK and not (
            data.get("new_secret") or data.get("secret_env") or self.instance.secret
        ):
            self.add_error("new_secret", _("Webhooks are signed: enter a secret, or the variable that holds it."))
        return data

    def save(self, commit: bool = True) -> Destination:
        destination = super().save(commit=False)
        if self.cleaned_data.get("new_url"):
            destination.url = self.cleaned_data["new_url"]
        if self.cleaned_data.get("new_secret"):
            destination.secret = self.cleaned_data["new_secret"]
        if commit:
            destination.save()
        return destination


@admin.register(Destination)
class DestinationAdmin(LoopModelAdmin):
    form = DestinationForm
    list_display = ["name", "kind", "url_hint", "secret_hint", "active"]
    list_filter = ["kind", "active"]
    search_fields = ["name"]
    readonly_fields = ["url_hint", "secret_hint", "created_at", "updated_at"]
    actions = ["send_test"]

    def get_fields(self, request, obj=None):
        fields = ["name", "kind", "new_url", "url_env", "new_secret", "secret_env", "active"]
        if obj is not None:
            fields[2:2] = ["url_hint"]
            fields[5:5] = ["secret_hint"]
            fields += ["created_at", "updated_at"]
        return fields

    @admin.display(description=_("stored URL"))
    def url_hint(self, destination: Destination) -> str:
        return last_four(destination.url)

    @admin.display(description=_("stored secret"))
    def secret_hint(self, destination: Destination) -> str:
        return last_four(destination.secret)

    @admin.action(description=_("Send a test notification"), permissions=["change"])
    def send_test(self, request, queryset) -> None:
        for destination in queryset:
            text = gettext("Test notification from Loop CRM to %(name)s") % {"name": destination.name}
            if destination.kind == Destination.Kind.SLACK:
                slack_notify(
                    destination,
                    text=text,
                    blocks=blocks(header=gettext("Loop CRM test"), text=text, context=request.user.get_username()),
                )
            else:
                webhook_notify(destination, event="loop.test", data={"text": text})
        self.message_user(
            request,
            gettext("Test notifications queued: see Team notifications for the outcome."),
            messages.SUCCESS,
        )


@admin.register(Notification)
class NotificationAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "destination", "channel", "text_start", "status", "attempts", "sent_at"]
    list_filter = ["status", "channel"]
    list_select_related = ["destination"]
    search_fields = ["=key", "event"]
    fields = [
        "destination",
        "channel",
        "event",
        "key",
        "text",
        "payload_display",
        "status",
        "attempts",
        "due_at",
        "backend",
        "provider_message_id",
        "error",
        "created_at",
        "sent_at",
    ]
    readonly_fields = fields

    actions = ["retry"]

    def has_retry_permission(self, request) -> bool:
        """Admins (a retry of a notification whose delivery is unknown may repeat it)."""
        return request.user.has_perm("campaigns.change_notification")

    @admin.action(description=_("Retry failed notifications"), permissions=["retry"])
    def retry(self, request, queryset) -> None:
        count = notifications_retry(notification_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request, gettext("%(count)d notifications queued again.") % {"count": count}, messages.SUCCESS
        )

    @admin.display(description=_("text"))
    def text_start(self, notification: Notification) -> str:
        return notification.text[:80] or notification.event

    @admin.display(description=_("payload"))
    def payload_display(self, notification: Notification) -> str:
        return json_block(notification.payload)
