"""Journeys: a trigger, entry rules, a graph of steps, and the enrollments the engine moves through it.

Edit rule (documented in docs/journeys.md): **positions migrate**. An enrollment's position is the id of the step it
runs next (``Enrollment.current_step``); steps keep their ids when a journey is edited, so contacts already in the
journey continue on the edited graph from where they are: a changed message is sent in its new form, a changed
branch decides by its new condition, changed edges are followed from the next move on. A wait already started keeps
the due time it was given. A step at which contacts wait (or failed) cannot be deleted (``PROTECT``): point the
edges elsewhere first, or let them pass. ``Journey.version`` counts saved changes of the graph; each enrollment
records the version it entered with and each log line the version it ran with, so the path a contact took stays
explainable.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from campaigns.channels import channel_choices

#: A contact attribute a date trigger reads (it becomes part of a JSON lookup: no ``__``).
ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)*")


class Journey(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        ACTIVE = "active", _("Active")
        PAUSED = "paused", _("Paused")
        ARCHIVED = "archived", _("Archived")

    class Trigger(models.TextChoices):
        EVENT = "event", _("An event")
        SEGMENT_ENTRY = "segment_entry", _("Entering a segment")
        DATE = "date", _("A date relative to a contact attribute")
        FORM = "form", _("A lead form submission")
        API = "api", _("An API call")

    class Reentry(models.TextChoices):
        ONCE = "once", _("Once ever")
        AFTER_FINISH = "after_finish", _("Again after the previous run finished")
        EVERY_N_DAYS = "every_n_days", _("At most once every N days")
        EVERY_TIME = "every_time", _("Every time (each trigger a separate run)")

    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True, help_text=_("What the journey is for (internal)."))
    status = models.CharField(
        _("status"),
        max_length=10,
        choices=Status.choices,
        default=Status.DRAFT,
        help_text=_(
            "Only active journeys enroll contacts and move them on. Paused journeys hold their contacts where they "
            "are until resumed; archived journeys are finished."
        ),
    )
    trigger = models.CharField(
        _("trigger"),
        max_length=20,
        choices=Trigger.choices,
        default=Trigger.EVENT,
        help_text=_("What makes a contact enter the journey."),
    )
    trigger_event = models.CharField(
        _("trigger event"),
        max_length=200,
        blank=True,
        help_text=_('For an event trigger: the event name, e.g. "Checkout Started".'),
    )
    trigger_conditions = models.JSONField(
        _("event conditions"),
        default=list,
        blank=True,
        help_text=_(
            'Conditions on the trigger event\'s properties, all of which must hold, e.g. [{"property": "value", '
            '"op": "gte", "value": 30000}]. Operators: eq, ne, gt, gte, lt, lte, contains, exists.'
        ),
    )
    trigger_segment = models.ForeignKey(
        "crm.Segment",
        verbose_name=_("trigger segment"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("For a segment-entry trigger: contacts who become members enter (checked every few minutes)."),
    )
    date_attribute = models.CharField(
        _("date attribute"),
        max_length=100,
        blank=True,
        help_text=_('For a date trigger: the contact attribute holding a date, e.g. "class_start".'),
    )
    date_offset_days = models.IntegerField(
        _("days from the date"),
        default=0,
        help_text=_("For a date trigger: -1 enters one day before the date, 3 enters three days after it."),
    )
    date_time = models.TimeField(
        _("at (time of day)"),
        null=True,
        blank=True,
        help_text=_("For a date trigger: the time of day in the workspace time zone (default 09:00)."),
    )
    entry_segment = models.ForeignKey(
        "crm.Segment",
        verbose_name=_("audience"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("Optional: only members of this segment enter."),
    )
    reentry = models.CharField(
        _("re-entry"),
        max_length=20,
        choices=Reentry.choices,
        default=Reentry.AFTER_FINISH,
        help_text=_("Whether a contact who was in the journey before may enter again. Never twice at the same time."),
    )
    reentry_days = models.PositiveIntegerField(
        _("re-entry after (days)"),
        default=30,
        validators=[MinValueValidator(1)],
        help_text=_('For "at most once every N days": N.'),
    )
    exit_events = models.JSONField(
        _("exit events"),
        default=list,
        blank=True,
        help_text=_('Events that end the journey early for the contact, e.g. ["Order Completed"].'),
    )
    goal_event = models.CharField(
        _("goal event"),
        max_length=200,
        blank=True,
        help_text=_('The conversion this journey aims for, e.g. "Order Completed".'),
    )
    goal_window_hours = models.PositiveIntegerField(
        _("goal window (hours)"),
        default=72,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 365)],
        help_text=_("A goal event this long after entering counts as the journey's conversion."),
    )
    exit_on_goal = models.BooleanField(
        _("exit on goal"), default=False, help_text=_("End the journey for a contact once they reach the goal.")
    )
    first_step = models.ForeignKey(
        "Step",
        verbose_name=_("first step"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("Where contacts start. Empty: the step with the lowest position."),
    )
    version = models.PositiveIntegerField(
        _("version"), default=1, editable=False, help_text=_("Counts saved changes of the steps.")
    )
    playbook = models.CharField(_("playbook"), max_length=50, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("journey")
        verbose_name_plural = _("journeys")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "trigger", "trigger_event"], name="journeys_journey_trigger")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.trigger == self.Trigger.EVENT and not self.trigger_event:
            errors["trigger_event"] = _("An event trigger needs the event name.")
        if self.trigger == self.Trigger.SEGMENT_ENTRY and not self.trigger_segment_id:
            errors["trigger_segment"] = _("A segment-entry trigger needs the segment.")
        if self.trigger == self.Trigger.DATE and not self.date_attribute:
            errors["date_attribute"] = _("A date trigger needs the attribute holding the date.")
        if self.date_attribute and not ATTRIBUTE_NAME.fullmatch(self.date_attribute):
            errors["date_attribute"] = _("Letters, digits and single underscores only, e.g. class_start.")
        if not isinstance(self.exit_events, list) or not all(isinstance(e, str) for e in self.exit_events):
            errors["exit_events"] = _("A list of event names.")
        from journeys.conditions import conditions_errors

        problems = conditions_errors(self.trigger_conditions)
        if problems:
            errors["trigger_conditions"] = problems
        if errors:
            raise ValidationError(errors)


class Step(models.Model):
    class Kind(models.TextChoices):
        WAIT_DURATION = "wait_duration", _("Wait a duration")
        WAIT_UNTIL = "wait_until", _("Wait until")
        SEND = "send", _("Send a message")
        BRANCH = "branch", _("Branch on a condition")
        RANDOM_SPLIT = "random_split", _("Random split")
        ACTION = "action", _("Action")
        EXIT = "exit", _("Exit")

    class Condition(models.TextChoices):
        SEGMENT = "segment", _("Member of a segment")
        EVENT_SINCE_ENTRY = "event_since_entry", _("Did an event since entering")
        DATA = "data", _("Contact or trigger data")
        OPENED = "opened", _("Opened the previous message")
        CLICKED = "clicked", _("Clicked the previous message")

    class Action(models.TextChoices):
        SET_ATTRIBUTE = "set_attribute", _("Set a contact attribute")
        ADD_TAG = "add_tag", _("Add a tag")
        NOTIFY = "notify", _("Notify the team")
        WEBHOOK = "webhook", _("Call a webhook")
        ISSUE_COUPON = "issue_coupon", _("Issue a coupon")

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="steps", verbose_name=_("journey"))
    position = models.PositiveIntegerField(
        _("position"), default=0, help_text=_("Order in the editor; without an explicit next step, the next one.")
    )
    name = models.CharField(_("name"), max_length=200, help_text=_("A label for the step, shown in reports."))
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    next_step = models.ForeignKey(
        "self",
        verbose_name=_("next / yes"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text=_(
            "Where contacts go after this step (for a branch: when the condition holds; for a split: path A). "
            'Empty: the step at the next position (unless that step starts a "no" path or path B), or the end.'
        ),
    )
    no_step = models.ForeignKey(
        "self",
        verbose_name=_("no / path B"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text=_(
            "For a branch: where contacts go when the condition does not hold (empty: the journey ends). "
            "For a split: path B."
        ),
    )
    # Waits
    wait_minutes = models.PositiveIntegerField(
        _("wait (minutes)"), default=0, help_text=_("Wait a duration: 30 = 30 minutes, 1440 = 1 day.")
    )
    until_time = models.TimeField(
        _("until time of day"),
        null=True,
        blank=True,
        help_text=_("Wait until: this time of day in the contact's time zone (e.g. 09:00)."),
    )
    until_weekday = models.PositiveSmallIntegerField(
        _("until weekday"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(6)],
        help_text=_("Wait until: this weekday (0 = Monday … 6 = Sunday)."),
    )
    until_date_field = models.CharField(
        _("until the date in"),
        max_length=200,
        blank=True,
        help_text=_(
            'Wait until a date: "event.expires_at" (a trigger event property) or "attributes.class_start" '
            "(a contact attribute)."
        ),
    )
    until_offset_days = models.IntegerField(
        _("days from that date"), default=0, help_text=_("Wait until: -1 is the day before the date.")
    )
    # Send
    campaign = models.ForeignKey(
        "campaigns.Campaign",
        verbose_name=_("triggered campaign"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="journey_steps",
        limit_choices_to={"kind": "triggered"},
        help_text=_(
            "Send a message: a triggered campaign (its variants make an A/B test). Or leave empty and write the "
            "message below."
        ),
    )
    channel = models.CharField(
        _("channel"), max_length=20, choices=channel_choices, blank=True, help_text=_("For a message written here.")
    )
    subject = models.CharField(
        _("subject / title"), max_length=300, blank=True, help_text=_("Email subject, push title, LMS subject.")
    )
    body = models.TextField(
        _("text"),
        blank=True,
        help_text=_("The message, with variables: #{고객명}, #{상품명}, #{이벤트.price:number}."),
    )
    link_url = models.CharField(_("link"), max_length=1000, blank=True, help_text=_("Push/KakaoTalk link."))
    variables = models.JSONField(
        _("variables"), default=dict, blank=True, help_text=_('Values for the message, e.g. {"할인 금액": 5000}.')
    )
    advertising = models.BooleanField(
        _("advertising"),
        default=False,
        help_text=_("Advertising needs advertising consent, gets the legal form and respects quiet hours."),
    )
    inline_campaign = models.OneToOneField(
        "campaigns.Campaign",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="journey_inline_step",
        help_text="The triggered campaign that carries a message written on the step (kept in step with it).",
    )
    # Branch
    condition = models.CharField(
        _("condition"), max_length=20, choices=Condition.choices, blank=True, help_text=_("For a branch.")
    )
    condition_segment = models.ForeignKey(
        "crm.Segment",
        verbose_name=_("segment"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("For a segment condition."),
    )
    condition_event = models.CharField(
        _("event"), max_length=200, blank=True, help_text=_('For "did an event since entering": its name.')
    )
    condition_rules = models.JSONField(
        _("data conditions"),
        default=list,
        blank=True,
        help_text=_(
            'For a data condition, all must hold: [{"property": "event.value", "op": "gte", "value": 30000}, '
            '{"property": "attributes.grade", "op": "eq", "value": "VIP"}, {"property": "contact.order_count", '
            '"op": "eq", "value": 0}].'
        ),
    )
    # Random split
    split_percent = models.PositiveSmallIntegerField(
        _("path A %"),
        default=50,
        validators=[MaxValueValidator(100)],
        help_text=_("For a random split: the share of contacts on path A (stable per contact)."),
    )
    # Action
    action = models.CharField(
        _("action"), max_length=20, choices=Action.choices, blank=True, help_text=_("For an action step.")
    )
    action_name = models.CharField(
        _("attribute / tag / notifier"),
        max_length=200,
        blank=True,
        help_text=_('The attribute to set, the tag to add, the notifier ("slack", "log"), or the coupon code prefix.'),
    )
    action_value = models.TextField(
        _("value / text"),
        blank=True,
        help_text=_("The attribute's value, or the notification text (variables allowed: #{고객명})."),
    )
    coupon_amount = models.DecimalField(
        _("coupon discount (amount)"),
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_("For a coupon: the discount in won. Its code is the prefix above and a unique part."),
    )
    coupon_valid_days = models.PositiveIntegerField(
        _("coupon valid for (days)"),
        null=True,
        blank=True,
        help_text=_("For a coupon: it expires at the end of this many days (empty: never)."),
    )
    webhook_url = models.URLField(
        _("webhook URL"),
        max_length=1000,
        blank=True,
        help_text=_("For a webhook: receives a signed JSON POST with the contact and the trigger data."),
    )

    class Meta:
        verbose_name = _("step")
        verbose_name_plural = _("steps")
        ordering = ["journey", "position", "id"]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}"

    def clean(self) -> None:
        errors = {}
        k = self.Kind
        if self.kind == k.WAIT_DURATION and not self.wait_minutes:
            errors["wait_minutes"] = _("How long to wait.")
        if self.kind == k.WAIT_UNTIL and not (
            self.until_time or self.until_weekday is not None or self.until_date_field
        ):
            errors["until_time"] = _("A time of day, a weekday or a date to wait for.")
        if self.until_date_field and not self.until_date_field.startswith(("event.", "attributes.")):
            errors["until_date_field"] = _('Starts with "event." or "attributes.".')
        if self.kind == k.SEND:
            if self.campaign_id is None and not (self.channel and self.body):
                errors["campaign"] = _("A triggered campaign, or a channel and a text.")
            if self.campaign_id is not None and self.campaign.kind != "triggered":
                errors["campaign"] = _("Only triggered campaigns can be sent by journeys.")
        if self.kind == k.BRANCH:
            if not self.condition:
                errors["condition"] = _("A branch needs a condition.")
            elif self.condition == self.Condition.SEGMENT and not self.condition_segment_id:
                errors["condition_segment"] = _("Which segment.")
            elif self.condition == self.Condition.EVENT_SINCE_ENTRY and not self.condition_event:
                errors["condition_event"] = _("Which event.")
            elif self.condition == self.Condition.DATA:
                from journeys.conditions import conditions_errors

                problems = conditions_errors(self.condition_rules, data=True)
                if problems or not self.condition_rules:
                    errors["condition_rules"] = problems or [_("At least one condition.")]
        if self.kind == k.ACTION:
            if not self.action:
                errors["action"] = _("Which action.")
            elif self.action == self.Action.WEBHOOK and not self.webhook_url:
                errors["webhook_url"] = _("The URL to call.")
            elif self.action != self.Action.WEBHOOK and not self.action_name:
                errors["action_name"] = _("Required for this action.")
            elif self.action == self.Action.ISSUE_COUPON and not self.coupon_amount:
                errors["coupon_amount"] = _("The coupon's discount.")
        if errors:
            raise ValidationError(errors)


class Enrollment(models.Model):
    """One contact's run through one journey: where it is, when it moves next, and with which trigger data."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        WAITING = "waiting", _("Waiting")
        COMPLETED = "completed", _("Completed")
        EXITED = "exited", _("Exited")
        FAILED = "failed", _("Failed")

    OPEN = (Status.ACTIVE, Status.WAITING)

    journey = models.ForeignKey(
        Journey, on_delete=models.CASCADE, related_name="enrollments", verbose_name=_("journey")
    )
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="journey_enrollments", verbose_name=_("contact")
    )
    version = models.PositiveIntegerField(_("journey version"), default=1)
    current_step = models.ForeignKey(
        Step,
        verbose_name=_("next step"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="enrollments",
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.ACTIVE)
    next_run_at = models.DateTimeField(_("next run at"), null=True, blank=True)
    context = models.JSONField(_("trigger data"), default=dict, blank=True)
    trigger_event_id = models.BigIntegerField(_("trigger event"), null=True, blank=True)
    entry_key = models.CharField(  # noqa: DJ001 (NULL: not counted by the unique constraint)
        max_length=100,
        null=True,
        blank=True,
        help_text="Unique per journey while the enrollment is open (the re-entry rule); cleared when it ends.",
    )
    entered_at = models.DateTimeField(_("entered at"), default=timezone.now)
    triggered_at = models.DateTimeField(
        _("triggered at"),
        default=timezone.now,
        help_text=_("When the trigger event happened (exit and goal events count from here)."),
    )
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    exit_reason = models.CharField(_("exit reason"), max_length=200, blank=True)
    goal_reached_at = models.DateTimeField(_("goal reached at"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    claim = models.CharField(max_length=32, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("enrollment")
        verbose_name_plural = _("enrollments")
        ordering = ["-entered_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["journey", "entry_key"], name="journeys_enrollment_one_open"),
        ]
        indexes = [
            models.Index(
                fields=["next_run_at", "id"], condition=Q(status__in=["active", "waiting"]), name="journeys_due"
            ),
            models.Index(fields=["journey", "contact", "status"], name="journeys_enrollment_contact"),
            models.Index(fields=["contact", "status"], name="journeys_enrollment_open"),
        ]

    def __str__(self) -> str:
        return f"{self.journey} · {self.contact_id} ({self.status})"


class EnrollmentLog(models.Model):
    """What happened to an enrollment, step by step (append-only)."""

    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="logs")
    step = models.ForeignKey(Step, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    step_name = models.CharField(_("step"), max_length=200, blank=True)
    version = models.PositiveIntegerField(_("journey version"), default=1)
    action = models.CharField(_("what"), max_length=30)
    detail = models.CharField(_("detail"), max_length=1000, blank=True)
    at = models.DateTimeField(_("at"), default=timezone.now)

    class Meta:
        verbose_name = _("enrollment log")
        verbose_name_plural = _("enrollment logs")
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["enrollment", "at"], name="journeys_log_enrollment")]

    def __str__(self) -> str:
        return f"{self.action} {self.step_name}"


class SegmentMember(models.Model):
    """The members of a segment-entry journey's trigger segment at its last check: a contact *enters* the segment
    when it is a member now and was not then (and may enter again after leaving)."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="+")
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("segment member")
        verbose_name_plural = _("segment members")
        constraints = [
            models.UniqueConstraint(fields=["journey", "contact"], name="journeys_segmentmember_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id}: {self.contact_id}"


class LeadForm(models.Model):
    """A public lead form endpoint (``POST /forms/<slug>``): Typeform and Google Forms webhooks and plain HTML forms.
    A submission creates or updates the contact (by email, then phone) and enters it in the form's journey."""

    name = models.CharField(_("name"), max_length=200)
    slug = models.SlugField(
        _("form address"), max_length=100, unique=True, help_text=_("The form posts to /forms/<address>, e.g. ebook.")
    )
    journey = models.ForeignKey(
        Journey,
        verbose_name=_("journey"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="lead_forms",
        limit_choices_to={"trigger": "form"},
        help_text=_("The journey submissions enter (its trigger must be a lead form)."),
    )
    typeform_secret = models.CharField(
        _("Typeform secret"),
        max_length=200,
        blank=True,
        help_text=_(
            "The secret of the Typeform webhook: submissions must then carry its signature. Leave empty for Google "
            "Forms and HTML forms."
        ),
    )
    consent_purposes = models.JSONField(
        _("consent given by the checkbox"),
        default=list,
        blank=True,
        help_text=_('Consent granted when the form\'s "consent" field is checked, e.g. ["email", "ads"].'),
    )
    redirect_url = models.URLField(
        _("thank-you page"),
        max_length=1000,
        blank=True,
        help_text=_("HTML forms: where the visitor goes after submitting (default: a short thank-you page)."),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("lead form")
        verbose_name_plural = _("lead forms")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
