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


#: Largest MMS image the Korean carriers accept (Solapi: JPEG up to 200 KB).
MMS_IMAGE_MAX_BYTES = 200 * 1024


def validate_mms_image(value) -> None:
    if value.size > MMS_IMAGE_MAX_BYTES:
        raise ValidationError(
            _("An MMS image is at most 200 KB; this one is %(size)d KB."), params={"size": value.size // 1024}
        )
    head = value.read(3)
    value.seek(0)
    if head != b"\xff\xd8\xff":
        raise ValidationError(_("An MMS image must be a JPEG file."))


def default_time_zone() -> str:
    return settings.TIME_ZONE


class Purpose(models.TextChoices):
    INFORMATIONAL = "informational", _("Informational")
    ADVERTISING = "advertising", _("Advertising")


class KakaoType(models.TextChoices):
    ALIMTALK = "alimtalk", _("AlimTalk (approved template, informational)")
    FRIENDTALK = "friendtalk", _("FriendTalk (friends of the channel, advertising allowed)")


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

    class Builtin(models.TextChoices):
        ADS_RECONSENT_EMAIL = "ads_reconsent_email", _("Advertising consent notice (email)")
        ADS_RECONSENT_SMS = "ads_reconsent_sms", _("Advertising consent notice (SMS)")

    class WinnerMetric(models.TextChoices):
        CONVERSION_RATE = "conversion_rate", _("Conversion rate (goal event)")
        REVENUE_PER_SEND = "revenue_per_send", _("Revenue per send (goal event)")

    name = models.CharField(
        _("name"),
        max_length=200,
        help_text=_("What the team sees in lists and reports, e.g. “주말 프로모션 마감 알림”. Customers never see it."),
    )
    description = models.TextField(_("description"), blank=True, help_text=_("Optional: the goal, the offer, notes."))
    kind = models.CharField(
        _("kind"),
        max_length=20,
        choices=Kind.choices,
        default=Kind.BROADCAST,
        help_text=_(
            "Broadcast: sent to a segment now, once or on a schedule. Triggered: sent one contact at a time by a "
            "journey (no audience or schedule here)."
        ),
    )
    channel = models.CharField(
        _("channel"),
        max_length=20,
        choices=channel_choices,
        help_text=_("How it reaches the contact: email, SMS/LMS, KakaoTalk or app push (needs the app installed)."),
    )
    purpose = models.CharField(
        _("message type"),
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

    class AttributionBasis(models.TextChoices):
        SEND = "send", _("After the message was sent")
        CLICK = "click", _("After the message was clicked")

    attribution_basis = models.CharField(
        _("attribution starts"),
        max_length=10,
        choices=AttributionBasis.choices,
        default=AttributionBasis.SEND,
        help_text=_(
            "When the attribution window starts: at the send (any goal event in the window counts) or at the "
            "contact's first click on the message (only clickers can convert)."
        ),
    )
    attribution_window_hours = models.PositiveIntegerField(
        _("attribution window (hours)"),
        default=72,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 90)],
        help_text=_("A goal event this long after a send counts as a conversion of that send."),
    )

    schedule = models.CharField(
        _("schedule"),
        max_length=20,
        choices=Schedule.choices,
        default=Schedule.NOW,
        help_text=_(
            "Send now: when you press Schedule. Once: at the date and time below. Recurring: on the days and times "
            "below (e.g. every Sunday at 20:00)."
        ),
    )
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
        _("test group %"),
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text=_("Automatic winner: the share of the audience that gets the variants first."),
    )
    winner_wait_hours = models.PositiveIntegerField(
        _("wait before choosing (hours)"),
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 14)],
        help_text=_("Automatic winner: how long the test group's results are collected before the rest is sent."),
    )
    winner_metric = models.CharField(
        _("winner metric"),
        max_length=30,
        choices=WinnerMetric.choices,
        default=WinnerMetric.CONVERSION_RATE,
        help_text=_("Automatic winner: the variant with the best value of this metric is sent to the rest."),
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
    sender_profile = models.ForeignKey(
        "campaigns.SenderProfile",
        verbose_name=_("sender profile"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="campaigns",
        help_text=_(
            "Who the message comes from: the email From address, the registered SMS caller number or the "
            "KakaoTalk channel. Empty: the channel's default profile."
        ),
    )
    kakao_type = models.CharField(
        _("KakaoTalk message type"),
        max_length=20,
        choices=KakaoType.choices,
        blank=True,
        help_text=_(
            "AlimTalk: an approved informational template, to anyone with KakaoTalk (never advertising). "
            "FriendTalk: free text, advertising allowed, only to friends of the channel, never 20:00–08:00."
        ),
    )
    kakao_template = models.ForeignKey(
        "campaigns.KakaoTemplate",
        verbose_name=_("AlimTalk template"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="campaigns",
        limit_choices_to={"active": True},
        help_text=_("The approved template; the variants' text must be this template's text."),
    )
    sms_fallback = models.BooleanField(
        _("SMS fallback"),
        default=True,
        help_text=_(
            "When KakaoTalk cannot deliver (not a friend, no KakaoTalk, blocked), send the same text by SMS/LMS "
            "to contacts who consented to SMS."
        ),
    )

    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.DRAFT, editable=False)
    builtin = models.CharField(
        _("built-in"),
        max_length=30,
        choices=Builtin.choices,
        null=True,
        blank=True,
        unique=True,
        editable=False,
        help_text=_("A campaign the product itself sends (e.g. the legally required consent notice)."),
    )
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


def variant_name_not_reserved(value: str) -> None:
    """Reports show the holdout beside the variants under the name "holdout": no variant may take it."""
    if value.strip().casefold() == "holdout":
        raise ValidationError(_("“holdout” is the name of the control group in reports: choose another name."))


class Variant(models.Model):
    """One version of a campaign's message. A campaign has at least one; two or more make an A/B test."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(
        _("name"),
        max_length=100,
        default="A",
        validators=[variant_name_not_reserved],
        help_text=_("A short label shown in reports, e.g. A or B."),
    )
    weight = models.PositiveIntegerField(
        _("weight"),
        default=1,
        validators=[MinValueValidator(1)],
        help_text=_("Share of the audience, relative: weights 2 and 1 send this variant to about two thirds."),
    )
    subject = models.CharField(
        _("subject / title"), max_length=300, blank=True, help_text=_("Email subject, push title, LMS subject.")
    )
    preheader = models.CharField(
        _("preheader"),
        max_length=300,
        blank=True,
        help_text=_("Email only: the preview line shown after the subject in the inbox."),
    )
    body = models.TextField(_("text"), blank=True, help_text=_("The message text. Personalize with #{고객명}."))
    html = models.TextField(_("HTML"), blank=True, help_text=_("Email only."))
    link_url = models.CharField(_("link"), max_length=1000, blank=True, help_text=_("Push/KakaoTalk link."))
    image = models.FileField(
        _("MMS image"),
        upload_to="campaigns/mms/",
        blank=True,
        validators=[validate_mms_image],
        help_text=_("SMS channel only: a JPEG of at most 200 KB makes the message an MMS."),
    )
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
    figures = models.JSONField(
        _("report figures"),
        default=dict,
        blank=True,
        help_text=_(
            "The run's report figures per variant and holdout, stored once the run settled (a day after its "
            "attribution window) and counted again daily for 30 days, so reports need not count its sends."
        ),
    )
    figures_at = models.DateTimeField(_("figures counted at"), null=True, blank=True)

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


class DeliveryStatus(models.TextChoices):
    """A provider's receipt for a sent message, in increasing order of finality (see ``DELIVERY_RANK``)."""

    DEFERRED = "deferred", _("Deferred (will be retried by the provider)")
    DELIVERED = "delivered", _("Delivered")
    UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
    REJECTED = "rejected", _("Rejected by the provider")
    FAILED = "failed", _("Failed at the provider")
    BOUNCED = "bounced", _("Bounced")
    COMPLAINED = "complained", _("Complained (marked as spam)")


#: A receipt never replaces a more final one (webhooks arrive in any order): complained > bounced > … > deferred.
DELIVERY_RANK = {
    "": 0,
    DeliveryStatus.DEFERRED: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.UNSUBSCRIBED: 3,
    DeliveryStatus.REJECTED: 4,
    DeliveryStatus.FAILED: 4,
    DeliveryStatus.BOUNCED: 5,
    DeliveryStatus.COMPLAINED: 6,
}


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
    fallback_channel = models.CharField(
        _("fallback channel"),
        max_length=20,
        blank=True,
        db_default="",
        help_text=_("The channel the message was sent on instead (KakaoTalk → SMS/LMS)."),
    )
    fallback_reason = models.CharField(_("fallback reason"), max_length=300, blank=True, db_default="")
    fallback_provider_message_id = models.CharField(
        _("fallback provider message ID"), max_length=255, blank=True, db_default=""
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # Receipts reported by the provider after the send (email: anymail's tracking webhooks; SMS and KakaoTalk:
    # Twilio's and Solapi's reports, ``campaigns.webhooks``). ``status`` stays what sending did.
    delivery_status = models.CharField(
        _("delivery status"),
        max_length=20,
        choices=DeliveryStatus.choices,
        blank=True,
        db_default="",  # the snapshot's INSERT … SELECT names only the columns it sets
        help_text=_("What the provider reported after sending: delivered, deferred, bounced, complained…"),
    )
    delivery_detail = models.TextField(
        _("delivery detail"),
        blank=True,
        db_default="",
        help_text=_("The provider's reason, e.g. the receiving server's answer."),
    )
    delivery_updated_at = models.DateTimeField(_("delivery status updated at"), null=True, blank=True)
    delivered_at = models.DateTimeField(
        _("delivered at"), null=True, blank=True, help_text=_("When the receiving server accepted the message.")
    )
    opened_at = models.DateTimeField(
        _("first opened at"), null=True, blank=True, help_text=_("The first open the provider reported.")
    )
    clicked_at = models.DateTimeField(
        _("first clicked at"), null=True, blank=True, help_text=_("The first click on a link the provider reported.")
    )

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
            models.Index(
                fields=["provider_message_id"],
                condition=~Q(provider_message_id=""),
                name="campaigns_send_provider_id",
            ),
            models.Index(
                fields=["fallback_provider_message_id"],
                condition=~Q(fallback_provider_message_id=""),
                name="campaigns_send_fallback_id",
            ),
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


class AdsConsentNotice(models.Model):
    """The legally required notice to a contact that they consented to advertising (정보통신망법 제50조 ⑧, every 2
    years from the consent): one row per contact and anniversary, so a notice is never sent twice for a period."""

    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="ads_consent_notices", verbose_name=_("contact")
    )
    consented_at = models.DateTimeField(
        _("consent given at"), help_text=_("When the contact consented to advertising; the periods start then.")
    )
    anniversary = models.DateTimeField(_("period"), help_text=_("The end of the 2-year period this notice is for."))
    channel = models.CharField(
        _("channel"), max_length=20, choices=channel_choices, help_text=_("Where the notice was sent.")
    )
    send = models.OneToOneField(
        Send,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ads_consent_notice",
        verbose_name=_("send"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("advertising consent notice")
        verbose_name_plural = _("advertising consent notices")
        ordering = ["-anniversary", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["contact", "anniversary"], name="campaigns_adsnotice_once_per_period")
        ]
        indexes = [models.Index(fields=["contact", "-anniversary"], name="campaigns_adsnotice_latest")]

    def __str__(self) -> str:
        return f"{self.contact_id} @ {self.anniversary:%Y-%m-%d}"


class OutboxMessage(models.Model):
    """A message delivered to the outbox backend: exactly what would have gone to the provider."""

    send = models.OneToOneField(
        Send, null=True, blank=True, on_delete=models.CASCADE, related_name="outbox_message", verbose_name=_("send")
    )
    notification = models.OneToOneField(
        "campaigns.Notification",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="outbox_message",
        verbose_name=_("team notification"),
    )
    channel = models.CharField(_("channel"), max_length=20)
    to = models.TextField(_("to"))
    subject = models.CharField(_("subject / title"), max_length=300, blank=True)
    preheader = models.CharField(
        _("preheader"),
        max_length=300,
        blank=True,
        help_text=_("Email only: the preview line shown after the subject in the inbox."),
    )
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


#: What a campaign change records (``CampaignChange.action``), for people.
CHANGE_ACTIONS = {
    "created": _("Created"),
    "changed": _("Changed"),
    "scheduled": _("Scheduled"),
    "activated": _("Activated"),
    "send_now": _("Send now"),
    "paused": _("Paused"),
    "resumed": _("Resumed"),
    "cancelled": _("Cancelled"),
    "rerandomized": _("Re-randomized A/B assignment"),
}


class CampaignChange(models.Model):
    """Append-only log of who changed what on a campaign, and when."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="changes")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("changed by"),
    )
    changed_at = models.DateTimeField(_("changed at"), default=timezone.now)
    action = models.CharField(_("action"), max_length=30)
    diff = models.JSONField(_("changes"), default=dict, blank=True)

    class Meta:
        verbose_name = _("campaign change")
        verbose_name_plural = _("campaign changes")
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action_label} · {timezone.localtime(self.changed_at):%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("campaign changes are append-only")
        super().save(*args, **kwargs)

    @property
    def action_label(self) -> str:
        return str(CHANGE_ACTIONS.get(self.action, self.action))


class LaunchApproval(models.Model):
    """A launch held for an Admin's decision: the audience was larger than ``LOOP_LAUNCH_APPROVAL_LIMIT`` and the
    person launching may not approve launches (``campaigns.approve_launch``). Approving performs the launch."""

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting for approval")
        APPROVED = "approved", _("approved")
        REJECTED = "rejected", _("rejected")
        WITHDRAWN = "withdrawn", _("withdrawn")

    class Action(models.TextChoices):
        SCHEDULE = "schedule", _("Schedule")
        SEND_NOW = "send_now", _("Send now")

    campaign = models.ForeignKey(
        Campaign, verbose_name=_("campaign"), on_delete=models.CASCADE, related_name="launch_approvals"
    )
    action = models.CharField(_("launch"), max_length=20, choices=Action.choices)
    audience_size = models.PositiveIntegerField(_("audience size"), help_text=_("When the approval was requested."))
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    requested_at = models.DateTimeField(_("requested at"), default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("decided by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    note = models.TextField(_("note"), blank=True, help_text=_("Why it was rejected, for the requester."))

    class Meta:
        verbose_name = _("launch approval")
        verbose_name_plural = _("launch approvals")
        ordering = ["-requested_at", "-id"]
        permissions = [("approve_launch", _("Can approve launches to large audiences"))]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign"],
                condition=models.Q(status="pending"),
                name="campaigns_one_pending_approval",
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign} ({self.get_status_display()})"


#: The built-in campaigns of the advertising-consent notice; an unsubscribe from one withdraws advertising consent.
ADS_RECONSENT_BUILTINS = (Campaign.Builtin.ADS_RECONSENT_EMAIL, Campaign.Builtin.ADS_RECONSENT_SMS)


# --- Tracking and attribution (docs/analytics.md) --------------------------------------------------------------------


class BotReason(models.TextChoices):
    """Why a click or an open was judged not to be a person's (excluded from rates by default)."""

    USER_AGENT = "user_agent", _("Known scanner or bot (user agent)")
    HEAD = "head", _("HEAD request (link checker)")
    TOO_FAST = "too_fast", _("Within seconds of delivery (security scanner)")
    APPLE_MPP = "apple_mpp", _("Apple Mail Privacy Protection prefetch")


class TrackingHit(models.Model):
    """One request to a tracking link: a click (``Click``) or an open pixel load (``Open``)."""

    send = models.ForeignKey(Send, on_delete=models.CASCADE, related_name="+", verbose_name=_("send"))
    at = models.DateTimeField(_("at"), default=timezone.now)
    user_agent = models.CharField(_("user agent"), max_length=500, blank=True)
    ip_hash = models.CharField(
        _("IP address (hashed)"),
        max_length=64,
        blank=True,
        help_text=_("A keyed hash of the address: repeated visits are recognisable, the address itself is not kept."),
    )
    is_bot = models.BooleanField(
        _("bot"), default=False, help_text=_("Judged automatic (scanner, prefetch); excluded from rates by default.")
    )
    bot_reason = models.CharField(_("bot reason"), max_length=20, choices=BotReason.choices, blank=True)

    class Meta:
        abstract = True
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"#{self.send_id} @ {self.at:%Y-%m-%d %H:%M:%S}"


class Click(TrackingHit):
    """A click on a tracked link (``/t/c/<token>``) of a send."""

    send = models.ForeignKey(Send, on_delete=models.CASCADE, related_name="clicks", verbose_name=_("send"))
    url = models.CharField(_("link"), max_length=2000, help_text=_("The destination the contact was sent to."))

    class Meta(TrackingHit.Meta):
        verbose_name = _("click")
        verbose_name_plural = _("clicks")
        indexes = [models.Index(fields=["send", "at"], name="campaigns_click_send")]


class Open(TrackingHit):
    """A load of an email's open pixel (``/t/o/<token>.gif``)."""

    send = models.ForeignKey(Send, on_delete=models.CASCADE, related_name="opens", verbose_name=_("send"))

    class Meta(TrackingHit.Meta):
        verbose_name = _("open")
        verbose_name_plural = _("opens")
        indexes = [models.Index(fields=["send", "at"], name="campaigns_open_send")]


class Conversion(models.Model):
    """A goal event attributed to one send (last touch), or, for a holdout member, to their holdout send.

    An event converts for at most one real send (``campaigns_conversion_once``); a holdout conversion is counted per
    campaign (``campaigns_conversion_holdout_once``) so each campaign's lift is measured on its own control group."""

    event = models.ForeignKey("crm.Event", on_delete=models.CASCADE, related_name="+", verbose_name=_("event"))
    send = models.ForeignKey(Send, on_delete=models.CASCADE, related_name="conversions", verbose_name=_("send"))
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="conversions", verbose_name=_("campaign")
    )
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.CASCADE, related_name="conversions", verbose_name=_("run")
    )
    variant = models.ForeignKey(
        Variant, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversions", verbose_name=_("variant")
    )
    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="+", verbose_name=_("contact"))
    is_holdout = models.BooleanField(_("holdout"), default=False)
    revenue = models.DecimalField(_("revenue"), max_digits=14, decimal_places=2, default=0)
    occurred_at = models.DateTimeField(_("occurred at"), help_text=_("When the goal event happened."))
    touched_at = models.DateTimeField(
        _("touched at"), help_text=_("The send's time (or its first click, or the run's start for the holdout).")
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("conversion")
        verbose_name_plural = _("conversions")
        ordering = ["-occurred_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["event"], condition=Q(is_holdout=False), name="campaigns_conversion_once"),
            models.UniqueConstraint(
                fields=["event", "campaign"], condition=Q(is_holdout=True), name="campaigns_conversion_holdout_once"
            ),
        ]
        indexes = [models.Index(fields=["run", "variant"], name="campaigns_conversion_run")]

    def __str__(self) -> str:
        return f"{self.event_id} → #{self.send_id}"


class AttributionCursor(models.Model):
    """The attribution task's watermark: events up to ``last_event_id`` have been attributed (one row)."""

    name = models.CharField(max_length=50, unique=True)
    last_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("attribution cursor")
        verbose_name_plural = _("attribution cursors")

    def __str__(self) -> str:
        return f"{self.name}: {self.last_event_id}"


class SenderProfile(models.Model):
    """Who a message comes from on a channel: an email From address, a registered SMS caller number or a KakaoTalk
    channel with its sender key. Credentials are never stored here: API keys and secrets come from the environment
    (docs/channels.md). Where team notifications go (Slack, webhooks) is a ``Destination``, not a sender."""

    class Kind(models.TextChoices):
        EMAIL = "email", _("Email From address")
        SMS = "sms", _("SMS caller number")
        KAKAO = "kakao", _("KakaoTalk channel")

    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices, help_text=_("The channel it is for."))
    label = models.CharField(_("label"), max_length=100, help_text=_("A name the team recognizes, e.g. 고객센터 번호."))
    value = models.CharField(
        _("value"),
        max_length=254,
        help_text=_(
            "Email: the From address (Name <addr@example.com>). SMS: the caller number registered with the SMS "
            "provider (발신번호, e.g. 02-1234-5678 or 1588-1234). KakaoTalk: the channel's search ID "
            "(@loopshop)."
        ),
    )
    sender_key = models.CharField(
        _("KakaoTalk sender key (pfId)"),
        max_length=100,
        blank=True,
        help_text=_("KakaoTalk only: the channel's profile ID at the provider (Solapi pfId). Not a secret."),
    )
    is_default = models.BooleanField(
        _("default"), default=False, help_text=_("Used by campaigns of this channel that pick no profile.")
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("sender profile")
        verbose_name_plural = _("sender profiles")
        ordering = ["kind", "label"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=Q(is_default=True), name="campaigns_senderprofile_one_default"
            ),
            models.UniqueConstraint(fields=["kind", "value"], name="campaigns_senderprofile_unique_value"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.value})"

    def validate_constraints(self, exclude=None) -> None:
        # Making a profile the default unmarks the previous one (``campaigns.senders.sender_profile_save``), so the
        # one-default constraint is not a form error; the database still guarantees it.
        constraints = [
            (type(self), [c for c in self._meta.constraints if c.name != "campaigns_senderprofile_one_default"])
        ]
        errors = {}
        for model_class, model_constraints in constraints:
            for constraint in model_constraints:
                try:
                    constraint.validate(model_class, self, exclude=exclude)
                except ValidationError as exc:
                    errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def clean(self) -> None:
        from campaigns.senders import normalize_sender_value

        errors: dict[str, list] = {}
        try:
            self.value = normalize_sender_value(self.kind, self.value)
        except ValidationError as exc:
            errors["value"] = exc.messages
        self.sender_key = (self.sender_key or "").strip()
        if self.kind == self.Kind.KAKAO and not self.sender_key:
            errors["sender_key"] = [_("A KakaoTalk profile needs its sender key (pfId).")]
        if self.kind != self.Kind.KAKAO and self.sender_key:
            errors["sender_key"] = [_("Only KakaoTalk profiles have a sender key.")]
        if errors:
            raise ValidationError(errors)


class KakaoTemplate(models.Model):
    """An AlimTalk template as approved by Kakao: its code at the provider, the approved text with ``#{variables}``
    and its buttons. AlimTalk campaigns must use the approved text exactly (variables filled per contact)."""

    sender_profile = models.ForeignKey(
        SenderProfile,
        verbose_name=_("KakaoTalk channel"),
        on_delete=models.PROTECT,
        related_name="kakao_templates",
        limit_choices_to={"kind": SenderProfile.Kind.KAKAO},
        help_text=_("The channel the template was approved for."),
    )
    code = models.CharField(
        _("template code"), max_length=100, help_text=_("The template ID at the provider (Solapi templateId).")
    )
    name = models.CharField(_("name"), max_length=200, help_text=_("What the template is for."))
    text = models.TextField(
        _("approved text"),
        help_text=_("Exactly as approved, with its variables, e.g. #{고객명}님, 주문하신 상품이 출발했어요."),
    )
    buttons = models.JSONField(
        _("buttons"),
        default=list,
        blank=True,
        help_text=_(
            'As approved, e.g. [{"type": "WL", "name": "배송 조회", "url_mobile": "https://…", "url_pc": "https://…"}] '
            '(WL web link) or {"type": "AL", "name": "앱 열기", "scheme_android": "…", "scheme_ios": "…"} '
            "(AL app link)."
        ),
    )
    active = models.BooleanField(_("active"), default=True, help_text=_("Inactive templates cannot be chosen."))
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("KakaoTalk template")
        verbose_name_plural = _("KakaoTalk templates")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["sender_profile", "code"], name="campaigns_kakaotemplate_unique_code")
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.code}]"

    def clean(self) -> None:
        from campaigns.channels.kakao import button_errors

        errors = button_errors(self.buttons)
        if errors:
            raise ValidationError({"buttons": errors})


class RateLimitBucket(models.Model):
    """A token bucket shared by every worker when no Redis is configured (``campaigns.channels.ratelimit``)."""

    key = models.CharField(max_length=100, unique=True)
    tokens = models.FloatField()
    updated = models.FloatField(help_text="Unix time of the last refill.")

    class Meta:
        verbose_name = "rate limit bucket"

    def __str__(self) -> str:
        return self.key


# --- Team channels: Slack and webhooks ------------------------------------------------------------------------------


class Destination(models.Model):
    """Where team notifications go: a Slack incoming webhook or an HTTPS endpoint that receives signed JSON.

    The Slack webhook URL and the webhook signing secret are secrets: the admin never shows them back (only their
    last four characters), and either may instead come from an environment variable (``url_env``, ``secret_env``).
    """

    class Kind(models.TextChoices):
        SLACK = "slack", _("Slack (incoming webhook)")
        WEBHOOK = "webhook", _("Webhook (signed JSON POST)")

    name = models.SlugField(
        _("name"),
        max_length=100,
        unique=True,
        allow_unicode=True,
        help_text=_("How journeys and settings refer to it, e.g. sales-leads."),
    )
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    url = models.CharField(
        _("URL"),
        max_length=1000,
        blank=True,
        help_text=_("The Slack incoming webhook URL, or the URL that receives webhooks. Never shown again."),
    )
    url_env = models.CharField(
        _("URL from environment variable"),
        max_length=100,
        blank=True,
        help_text=_("Name of an environment variable holding the URL; used instead of the stored URL."),
    )
    secret = models.CharField(
        _("signing secret"),
        max_length=200,
        blank=True,
        help_text=_("Webhooks: the key of the X-Loop-Signature HMAC, shared with the receiver. Never shown again."),
    )
    secret_env = models.CharField(
        _("secret from environment variable"),
        max_length=100,
        blank=True,
        help_text=_("Name of an environment variable holding the signing secret; used instead of the stored one."),
    )
    active = models.BooleanField(_("active"), default=True, help_text=_("Inactive destinations receive nothing."))
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("destination")
        verbose_name_plural = _("destinations (Slack, webhooks)")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def _resolve(self, stored: str, variable: str) -> str:
        if variable:
            import os

            return os.environ.get(variable, "")
        return stored

    def resolved_url(self) -> str:
        return self._resolve(self.url, self.url_env)

    def resolved_secret(self) -> str:
        return self._resolve(self.secret, self.secret_env)


class Notification(models.Model):
    """One team notification to one destination (Slack message, webhook call): the ledger row.

    ``queued`` → ``sending`` → ``sent`` / ``failed``; transient failures go back to ``queued`` with a later
    ``due_at`` (backoff, ``Retry-After``). ``key`` makes a notification idempotent (journeys' enrollment/step).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")

    destination = models.ForeignKey(
        Destination, on_delete=models.PROTECT, related_name="notifications", verbose_name=_("destination")
    )
    channel = models.CharField(_("channel"), max_length=20, choices=Destination.Kind.choices)
    key = models.CharField(_("idempotency key"), max_length=200, null=True, blank=True, unique=True)
    event = models.CharField(_("event"), max_length=100, blank=True, help_text=_("Webhooks: the event name."))
    text = models.TextField(_("text"), blank=True)
    payload = models.JSONField(
        _("payload"), default=dict, blank=True, help_text=_("Slack: the Block Kit blocks; webhooks: the data.")
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.QUEUED)
    due_at = models.DateTimeField(_("due at"), default=timezone.now)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="When a delivery task was last queued.")
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    backend = models.CharField(_("backend"), max_length=50, blank=True)
    provider_message_id = models.CharField(_("provider message ID"), max_length=255, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("team notification")
        verbose_name_plural = _("team notifications")
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["due_at"], name="campaigns_notification_due", condition=Q(status__in=["queued", "sending"])
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} → {self.destination_id}: {self.text[:40]}"
