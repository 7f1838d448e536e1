"""Campaigns, their variants and runs, the send ledger, the outbox, suppressions and the campaign change log.

Writers live in ``campaigns.services``; the admin calls them. The send pipeline (``campaigns.services.sending``) is
the only code that moves a ``Send`` through its states.
"""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from campaigns.channels import channel_choices


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(_("Unknown time zone %(zone)s."), params={"zone": value})


def default_time_zone() -> str:
    return settings.TIME_ZONE


class Purpose(models.TextChoices):
    INFORMATIONAL = "informational", _("Informational")
    ADVERTISING = "advertising", _("Advertising")


class Campaign(models.Model):
    """A message to a segment, sent now, once at a time, or on a recurring schedule; or, for ``triggered``
    campaigns, sent one contact at a time by journeys through the same pipeline."""

    class Kind(models.TextChoices):
        BROADCAST = "broadcast", _("Broadcast to a segment")
        TRIGGERED = "triggered", _("Triggered (sent by journeys)")

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SCHEDULED = "scheduled", _("Scheduled")
        RUNNING = "running", _("Running")
        PAUSED = "paused", _("Paused")
        COMPLETED = "completed", _("Completed")
        CANCELLED = "cancelled", _("Cancelled")

    class Schedule(models.TextChoices):
        NOW = "now", _("Send now")
        ONCE = "once", _("Once at a date and time")
        RECURRING = "recurring", _("Recurring")

    class QuietHours(models.TextChoices):
        HOLD = "hold", _("Hold until 08:00")
        SKIP = "skip", _("Skip")

    class WinnerMetric(models.TextChoices):
        CONVERSION_RATE = "conversion_rate", _("Conversion rate (goal event)")
        REVENUE_PER_SEND = "revenue_per_send", _("Revenue per send (goal event)")

    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices, default=Kind.BROADCAST)
    channel = models.CharField(_("channel"), max_length=20, choices=channel_choices)
    purpose = models.CharField(
        _("purpose"),
        max_length=20,
        choices=Purpose.choices,
        default=Purpose.INFORMATIONAL,
        help_text=_(
            "Advertising messages need advertising consent, get the legal form ((광고), sender, free opt-out) and "
            "respect quiet hours."
        ),
    )
    segment = models.ForeignKey(
        "crm.Segment",
        verbose_name=_("audience"),
        on_delete=models.PROTECT,
        related_name="campaigns",
        null=True,
        blank=True,
        help_text=_("Who receives it. Required for broadcasts."),
    )
    exclude_segment = models.ForeignKey(
        "crm.Segment",
        verbose_name=_("excluded audience"),
        on_delete=models.PROTECT,
        related_name="excluded_from_campaigns",
        null=True,
        blank=True,
        help_text=_("Members of this segment are left out."),
    )
    goal_event = models.CharField(
        _("goal event"), max_length=200, blank=True, help_text=_('The conversion event, e.g. "Order Completed".')
    )
    attribution_window_hours = models.PositiveIntegerField(
        _("attribution window (hours)"),
        default=72,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 90)],
        help_text=_("A goal event this long after a send counts as a conversion of that send."),
    )

    schedule = models.CharField(_("schedule"), max_length=20, choices=Schedule.choices, default=Schedule.NOW)
    send_at = models.DateTimeField(_("send at"), null=True, blank=True, help_text=_("For a one-time schedule."))
    cron_minute = models.CharField(_("minute"), max_length=60, default="0", help_text=_("0-59, e.g. 0 or */15."))
    cron_hour = models.CharField(_("hour"), max_length=60, default="20", help_text=_("0-23, e.g. 20 or 9,18."))
    cron_day_of_week = models.CharField(
        _("day of week"), max_length=60, default="*", help_text=_("0-6 with 0 = Sunday, or sun-sat; * for every day.")
    )
    cron_day_of_month = models.CharField(_("day of month"), max_length=60, default="*", help_text=_("1-31 or *."))
    cron_month_of_year = models.CharField(_("month"), max_length=60, default="*", help_text=_("1-12 or *."))
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        default=default_time_zone,
        validators=[validate_time_zone],
        help_text=_("The schedule's times are in this zone (IANA name, e.g. Asia/Seoul)."),
    )
    starts_on = models.DateField(
        _("starts on"), null=True, blank=True, help_text=_("First day a recurring run may fire.")
    )
    ends_on = models.DateField(_("ends on"), null=True, blank=True, help_text=_("Last day a recurring run may fire."))
    local_time = models.BooleanField(
        _("in each contact's time zone"),
        default=False,
        help_text=_(
            "Deliver at the scheduled wall-clock time in each contact's own time zone (e.g. Sunday 20:00 local). "
            "The audience is taken when the earliest time zone reaches that time."
        ),
    )
    frequency_cap_exempt = models.BooleanField(
        _("exempt from the frequency cap"),
        default=False,
        help_text=_("Neither limited by nor counted toward the per-contact daily/weekly message limit."),
    )
    quiet_hours = models.CharField(
        _("during quiet hours"),
        max_length=10,
        choices=QuietHours.choices,
        default=QuietHours.HOLD,
        help_text=_(
            "Advertising is not sent 21:00–08:00 in the contact's time zone without night-time consent: hold it "
            "until 08:00, or skip it."
        ),
    )
    holdout_percent = models.PositiveSmallIntegerField(
        _("holdout %"),
        default=0,
        validators=[MaxValueValidator(50)],
        help_text=_("This share of the audience receives nothing and is measured as the control group."),
    )
    auto_winner = models.BooleanField(
        _("automatic winner"),
        default=False,
        help_text=_("Test the variants on part of the audience, then send the best one to the rest."),
    )
    winner_test_percent = models.PositiveSmallIntegerField(
        _("test group %"), default=20, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    winner_wait_hours = models.PositiveIntegerField(
        _("wait before choosing (hours)"), default=4, validators=[MinValueValidator(1), MaxValueValidator(24 * 14)]
    )
    winner_metric = models.CharField(
        _("winner metric"), max_length=30, choices=WinnerMetric.choices, default=WinnerMetric.CONVERSION_RATE
    )
    assignment_seed = models.PositiveIntegerField(
        _("assignment seed"),
        default=0,
        help_text=_("Variant and holdout assignment is stable per contact; changing the seed re-randomizes it."),
    )
    sender_name = models.CharField(
        _("sender name"),
        max_length=100,
        blank=True,
        help_text=_("Shown in advertising messages; default from settings."),
    )

    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.DRAFT, editable=False)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        editable=False,
        related_name="campaign",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "schedule", "send_at"], name="campaigns_campaign_due")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_advertising(self) -> bool:
        return self.purpose == Purpose.ADVERTISING

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone or settings.TIME_ZONE)

    @property
    def cron_expression(self) -> str:
        return " ".join(
            [self.cron_minute, self.cron_hour, self.cron_day_of_month, self.cron_month_of_year, self.cron_day_of_week]
        )


class Variant(models.Model):
    """One version of a campaign's message. A campaign has at least one; two or more make an A/B test."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(_("name"), max_length=100, default="A")
    weight = models.PositiveIntegerField(
        _("weight"), default=1, validators=[MinValueValidator(1)], help_text=_("Share of the audience, relative.")
    )
    subject = models.CharField(
        _("subject / title"), max_length=300, blank=True, help_text=_("Email subject, push title, LMS subject.")
    )
    preheader = models.CharField(_("preheader"), max_length=300, blank=True)
    body = models.TextField(_("text"), blank=True, help_text=_("The message text. Personalize with #{고객명}."))
    html = models.TextField(_("HTML"), blank=True, help_text=_("Email only."))
    link_url = models.CharField(_("link"), max_length=1000, blank=True, help_text=_("Push/KakaoTalk link."))
    variables = models.JSONField(
        _("variables"),
        default=dict,
        blank=True,
        help_text=_('Values this variant gives to the template, e.g. {"할인 금액": 5000}.'),
    )
    send_delay_minutes = models.PositiveIntegerField(
        _("send delay (minutes)"), default=0, help_text=_("Send this variant this long after the run starts.")
    )

    class Meta:
        verbose_name = _("variant")
        verbose_name_plural = _("variants")
        ordering = ["campaign", "id"]
        constraints = [models.UniqueConstraint(fields=["campaign", "name"], name="campaigns_variant_unique_name")]

    def __str__(self) -> str:
        return self.name


class Run(models.Model):
    """One execution of a campaign with its own audience snapshot and counts."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENDING = "sending", _("Sending")
        COMPLETED = "completed", _("Completed")
        CANCELLED = "cancelled", _("Cancelled")

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs", verbose_name=_("campaign"))
    scheduled_for = models.DateTimeField(_("scheduled for"))
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    audience_count = models.PositiveIntegerField(_("audience"), null=True, blank=True)
    holdout_count = models.PositiveIntegerField(_("holdout"), default=0)
    counts = models.JSONField(_("counts"), default=dict, blank=True)
    winner_decide_at = models.DateTimeField(_("winner chosen at (due)"), null=True, blank=True)
    winner_decided_at = models.DateTimeField(_("winner chosen at"), null=True, blank=True)
    winner_variant = models.ForeignKey(
        Variant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("winner")
    )
    winner_explanation = models.JSONField(_("winner decision"), default=dict, blank=True)

    class Meta:
        verbose_name = _("run")
        verbose_name_plural = _("runs")
        ordering = ["-scheduled_for", "-id"]
        constraints = [
            # A recurring schedule delivered twice, or two beat processes, still make one run per occurrence.
            models.UniqueConstraint(fields=["campaign", "scheduled_for"], name="campaigns_run_once_per_time")
        ]
        indexes = [models.Index(fields=["status", "winner_decide_at"], name="campaigns_run_status")]

    def __str__(self) -> str:
        local = timezone.localtime(self.scheduled_for, self.campaign.zone)
        return f"{self.campaign} @ {local:%Y-%m-%d %H:%M}"


class SkipReason(models.TextChoices):
    HOLDOUT = "holdout", _("Holdout (control group)")
    NO_CONSENT = "no_consent", _("No consent for the channel")
    NO_ADS_CONSENT = "no_ads_consent", _("No advertising consent")
    SUPPRESSED = "suppressed", _("Suppressed (bounced, complained, unsubscribed)")
    UNREACHABLE = "unreachable", _("No address for the channel")
    ERASED = "erased", _("Contact erased")
    FREQUENCY_CAP = "frequency_cap", _("Frequency cap reached")
    QUIET_HOURS = "quiet_hours", _("Quiet hours")
    CANCELLED = "cancelled", _("Campaign cancelled")
    RENDER_ERROR = "render_error", _("Message could not be rendered")


class Send(models.Model):
    """One message to one contact on one channel: the ledger row.

    States: ``waiting`` (auto-winner remainder, waits for the winner) → ``queued`` (due at ``due_at``) → ``sending``
    (claimed by a worker) → ``sent`` / ``failed`` / ``skipped`` (with ``skip_reason``); ``held`` is ``queued`` put
    off by quiet hours. ``(run, contact)`` is unique, and so is ``key`` (journeys' ``enrollment/step``, test sends).
    """

    class Status(models.TextChoices):
        WAITING = "waiting", _("Waiting for the winner")
        QUEUED = "queued", _("Queued")
        HELD = "held", _("Held (quiet hours)")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Skipped")

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="sends", verbose_name=_("campaign"))
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.CASCADE, related_name="sends", verbose_name=_("run")
    )
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="campaign_sends", verbose_name=_("contact")
    )
    variant = models.ForeignKey(
        Variant, null=True, blank=True, on_delete=models.SET_NULL, related_name="sends", verbose_name=_("variant")
    )
    is_holdout = models.BooleanField(_("holdout"), default=False)
    is_test = models.BooleanField(_("test send"), default=False)
    key = models.CharField(
        _("idempotency key"), max_length=200, null=True, blank=True, unique=True, help_text=_("For sends outside runs.")
    )
    channel = models.CharField(_("channel"), max_length=20, choices=channel_choices)
    advertising = models.BooleanField(_("advertising"), default=False)
    counts_toward_cap = models.BooleanField(default=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.QUEUED)
    skip_reason = models.CharField(_("skip reason"), max_length=20, choices=SkipReason.choices, blank=True)
    due_at = models.DateTimeField(_("due at"))
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim = models.CharField(max_length=32, blank=True, help_text="Token of the worker call that claimed it.")
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    context = models.JSONField(_("context"), default=dict, blank=True, help_text=_("The triggering event's data."))
    address = models.CharField(_("address"), max_length=1000, blank=True)
    backend = models.CharField(_("backend"), max_length=50, blank=True)
    content = models.JSONField(_("rendered content"), default=dict, blank=True)
    provider_message_id = models.CharField(_("provider message ID"), max_length=255, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("send")
        verbose_name_plural = _("sends")
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "contact"], name="campaigns_send_once_per_run"),
        ]
        indexes = [
            models.Index(
                fields=["due_at", "id"],
                condition=Q(status__in=["queued", "held"]),
                name="campaigns_send_due",
            ),
            models.Index(fields=["status", "claimed_at"], name="campaigns_send_claims"),
            models.Index(fields=["contact", "sent_at"], name="campaigns_send_contact_sent"),
            models.Index(fields=["run", "status"], name="campaigns_send_run_status"),
            models.Index(fields=["campaign", "status"], name="campaigns_send_campaign_status"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.channel} → {self.contact_id} ({self.status})"


class Suppression(models.Model):
    """A contact who must not get messages on a channel: bounced, complained, unsubscribed, or by hand."""

    class Reason(models.TextChoices):
        BOUNCED = "bounced", _("Bounced")
        COMPLAINED = "complained", _("Complained")
        UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
        MANUAL = "manual", _("Added by hand")

    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="suppressions", verbose_name=_("contact")
    )
    channel = models.CharField(_("channel"), max_length=20, choices=channel_choices)
    reason = models.CharField(_("reason"), max_length=20, choices=Reason.choices)
    detail = models.TextField(_("detail"), blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("suppression")
        verbose_name_plural = _("suppressions")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["contact", "channel"], name="campaigns_suppression_one_per_channel")
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.channel}: {self.reason}"


class OutboxMessage(models.Model):
    """A message delivered to the outbox backend: exactly what would have gone to the provider."""

    send = models.OneToOneField(Send, on_delete=models.CASCADE, related_name="outbox_message", verbose_name=_("send"))
    channel = models.CharField(_("channel"), max_length=20)
    to = models.TextField(_("to"))
    subject = models.CharField(_("subject / title"), max_length=300, blank=True)
    preheader = models.CharField(_("preheader"), max_length=300, blank=True)
    body = models.TextField(_("text"), blank=True)
    html = models.TextField(_("HTML"), blank=True)
    link_url = models.CharField(_("link"), max_length=1000, blank=True)
    advertising = models.BooleanField(_("advertising"), default=False)
    extra = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox")
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.channel} → {self.to}"


class CampaignChange(models.Model):
    """Append-only log of who changed what on a campaign, and when."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="changes")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(_("changed at"), default=timezone.now)
    action = models.CharField(_("action"), max_length=30)
    diff = models.JSONField(_("changes"), default=dict, blank=True)

    class Meta:
        verbose_name = _("campaign change")
        verbose_name_plural = _("campaign changes")
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.campaign_id} {self.action} @ {self.changed_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("campaign changes are append-only")
        super().save(*args, **kwargs)
