"""Contacts, their consent, devices and events, and the commerce state derived from events.

Writers live in ``crm.services``; nothing else creates or changes these rows.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.querysets import ContactQuerySet, EventQuerySet


class ConsentPurpose(models.TextChoices):
    """What a contact can consent to: each message channel, advertising, and night-time advertising."""

    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS/LMS")
    PUSH = "push", _("App push")
    KAKAO = "kakao", _("KakaoTalk")
    ADS = "ads", _("Advertising")
    ADS_NIGHT = "ads_night", _("Night-time advertising (21:00–08:00)")


class Source(models.Model):
    """Where data comes from: a shop backend, an app, a server, an import, the admin. API keys belong to one."""

    class Kind(models.TextChoices):
        SHOP = "shop", _("Shop")
        APP = "app", _("App")
        SERVER = "server", _("Server")
        IMPORT = "import", _("Import")
        ADMIN = "admin", _("Admin")

    name = models.CharField(_("name"), max_length=100, unique=True)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices, default=Kind.SHOP)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("source")
        verbose_name_plural = _("sources")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A secret key a source authenticates with. Only its SHA-256 hash is stored; the key is shown once."""

    class Scope(models.TextChoices):
        #: The tracking endpoints, POST /events, journey enrollments: what a key embedded in a web page or app needs.
        WRITE_EVENTS = "write_events", _("Write events")
        #: PUT and DELETE /contacts/{external_id}: overwrite or erase any contact. Server-side keys only.
        WRITE_CONTACTS = "write_contacts", _("Write contacts")
        READ_CONTACTS = "read_contacts", _("Read contacts")

    source = models.ForeignKey(Source, verbose_name=_("source"), on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(_("scopes"), default=list)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class Tag(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)

    class Meta:
        verbose_name = _("tag")
        verbose_name_plural = _("tags")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ContactList(models.Model):
    """A static list of contacts (from an import or picked by hand), usable in segments."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("static list")
        verbose_name_plural = _("static lists")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Contact(models.Model):
    """A person the business can message."""

    external_id = models.CharField(
        _("external ID"),
        max_length=255,
        null=True,
        blank=True,
        unique=True,
        help_text=_("The shop's own user ID (Segment's userId). Empty for contacts known only anonymously."),
    )
    email = models.CharField(_("email"), max_length=254, blank=True, db_index=True)
    phone = models.CharField(
        _("phone"), max_length=20, blank=True, db_index=True, help_text=_("E.164, e.g. +821012345678.")
    )
    name = models.CharField(_("name"), max_length=200, blank=True)
    locale = models.CharField(_("locale"), max_length=20, blank=True, help_text=_("e.g. ko-KR, en-US."))
    time_zone = models.CharField(
        _("time zone"), max_length=64, blank=True, help_text=_("IANA name; empty means the workspace time zone.")
    )
    attributes = models.JSONField(_("attributes"), default=dict, blank=True)
    tags = models.ManyToManyField(Tag, verbose_name=_("tags"), blank=True, related_name="contacts")
    lists = models.ManyToManyField(ContactList, verbose_name=_("static lists"), blank=True, related_name="contacts")

    # Order history, kept up to date from "Order Completed" events so segments can ask without aggregating.
    order_count = models.PositiveIntegerField(_("orders"), default=0)
    total_revenue = models.DecimalField(_("revenue"), max_digits=14, decimal_places=2, default=Decimal("0"))
    first_order_at = models.DateTimeField(_("first order"), null=True, blank=True)
    last_order_at = models.DateTimeField(_("last order"), null=True, blank=True)

    first_seen_at = models.DateTimeField(_("first seen"), null=True, blank=True)
    last_seen_at = models.DateTimeField(_("last seen"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    erased_at = models.DateTimeField(
        _("erased at"), null=True, blank=True, help_text=_("Personal data was erased on request at this time.")
    )

    objects = ContactQuerySet.as_manager()

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        ordering = ["-id"]
        permissions = [("erase_contact", _("Can erase a contact's personal data"))]
        indexes = [
            models.Index(fields=["last_seen_at"], name="crm_contact_last_seen"),
            models.Index(fields=["last_order_at"], name="crm_contact_last_order"),
        ]

    def __str__(self) -> str:
        return self.name or self.email or self.phone or self.external_id or f"#{self.pk}"


class ContactAlias(models.Model):
    """An anonymous ID (Segment's anonymousId) that belongs to a contact; merged into it on identify."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="aliases")
    anonymous_id = models.CharField(_("anonymous ID"), max_length=255, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("anonymous ID")
        verbose_name_plural = _("anonymous IDs")

    def __str__(self) -> str:
        return self.anonymous_id


class Consent(models.Model):
    """The current consent of a contact for one purpose. Its history is in ConsentChange."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consents")
    purpose = models.CharField(_("purpose"), max_length=20, choices=ConsentPurpose.choices)
    granted = models.BooleanField(_("granted"))
    changed_at = models.DateTimeField(_("changed at"))
    source = models.CharField(_("source"), max_length=100, help_text=_("Where the consent was given or withdrawn."))

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        constraints = [models.UniqueConstraint(fields=["contact", "purpose"], name="crm_consent_one_per_purpose")]
        indexes = [models.Index(fields=["purpose", "granted", "contact"], name="crm_consent_lookup")]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()}: {'✔' if self.granted else '✘'}"


class ConsentChange(models.Model):
    """Append-only history of consent: every grant and withdrawal, with its time and source."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consent_changes")
    purpose = models.CharField(_("purpose"), max_length=20, choices=ConsentPurpose.choices)
    granted = models.BooleanField(_("granted"))
    changed_at = models.DateTimeField(_("changed at"))
    source = models.CharField(_("source"), max_length=100)
    recorded_at = models.DateTimeField(_("recorded at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("consent change")
        verbose_name_plural = _("consent history")
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["contact", "-changed_at"], name="crm_consentchange_contact")]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} {'granted' if self.granted else 'withdrawn'} ({self.source})"


class Device(models.Model):
    """An app install with its push token."""

    class Platform(models.TextChoices):
        IOS = "ios", "iOS"
        ANDROID = "android", "Android"
        WEB = "web", _("Web")

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="devices")
    platform = models.CharField(_("platform"), max_length=10, choices=Platform.choices)
    token = models.CharField(_("push token"), max_length=512, unique=True)
    app_id = models.CharField(_("app"), max_length=200, blank=True)
    active = models.BooleanField(_("active"), default=True)
    deactivated_reason = models.CharField(_("deactivated because"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    last_seen_at = models.DateTimeField(_("last seen"), default=timezone.now)

    class Meta:
        verbose_name = _("device")
        verbose_name_plural = _("devices")
        indexes = [models.Index(fields=["contact", "active"], name="crm_device_contact_active")]

    def __str__(self) -> str:
        return f"{self.get_platform_display()} {self.token[:12]}…"


class Event(models.Model):
    """Something a contact did, reported by the shop. Unique per (source, message_id): retries are stored once."""

    class Type(models.TextChoices):
        TRACK = "track", "track"
        PAGE = "page", "page"
        SCREEN = "screen", "screen"
        IDENTIFY = "identify", "identify"
        GROUP = "group", "group"
        ALIAS = "alias", "alias"

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="events")
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="events")
    message_id = models.CharField(_("message ID"), max_length=255)
    type = models.CharField(_("type"), max_length=10, choices=Type.choices, default=Type.TRACK)
    name = models.CharField(_("name"), max_length=200)
    properties = models.JSONField(_("properties"), default=dict, blank=True)
    context = models.JSONField(_("context"), default=dict, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"), help_text=_("The sender's time, corrected for clock skew."))
    received_at = models.DateTimeField(_("received at"), default=timezone.now)

    objects = EventQuerySet.as_manager()

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ["-occurred_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "message_id"], name="crm_event_unique_message_per_source")
        ]
        indexes = [
            models.Index(fields=["contact", "-occurred_at", "-id"], name="crm_event_contact_timeline"),
            # The admin's event list: newest first, LIMIT 50, read from the end of this index.
            models.Index(fields=["-occurred_at", "-id"], name="crm_event_time"),
            # Segments ask "who did NAME between t1 and t2": a range scan that also yields the contact (index-only).
            models.Index(fields=["name", "occurred_at", "contact"], name="crm_event_name_time_contact"),
            models.Index(fields=["contact", "name", "occurred_at"], name="crm_event_contact_name_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class UnprocessedEvent(models.Model):
    """An event stored but not yet applied to derived state (profile, consent, devices, commerce, first/last seen).

    The API stores each new event and one of these rows in the same statement and answers; a worker
    (``crm.services.event_processing``) applies the events in id order, in batches, and deletes the rows in the same
    transaction: a row exists exactly as long as its event's derived state is outstanding. A row whose event could
    not be applied keeps ``failed_at`` and ``error`` and is skipped until an operator retries it.

    Deliberately narrow, with one index and no foreign key: it is written and deleted once per event, on the hot
    path, so it is the queue table that a flag on ``Event`` (an update of a wide row with five indexes) would not be.
    """

    event_id = models.BigIntegerField(_("event"), primary_key=True)
    failed_at = models.DateTimeField(_("failed at"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, db_default="")

    class Meta:
        verbose_name = _("unprocessed event")
        verbose_name_plural = _("unprocessed events")
        # The primary key's index serves the worker's claim (lowest ids first; failed rows are few and filtered).
        ordering = ["event_id"]

    def __str__(self) -> str:
        return f"#{self.event_id}"


class Cart(models.Model):
    """A contact's current cart, rebuilt from cart events. Emptied by an order."""

    contact = models.OneToOneField(Contact, on_delete=models.CASCADE, related_name="cart", primary_key=True)
    items = models.JSONField(_("items"), default=list, blank=True)
    value = models.DecimalField(_("value"), max_digits=14, decimal_places=2, default=Decimal("0"))
    currency = models.CharField(_("currency"), max_length=3, default="KRW")
    updated_at = models.DateTimeField(_("last changed"))
    checkout_started_at = models.DateTimeField(_("checkout started"), null=True, blank=True)

    class Meta:
        verbose_name = _("cart")
        verbose_name_plural = _("carts")
        indexes = [models.Index(fields=["updated_at"], name="crm_cart_updated")]

    def __str__(self) -> str:
        return f"{self.contact}: {len(self.items)} items"

    @property
    def is_empty(self) -> bool:
        return not self.items


class WishlistItem(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="wishlist")
    product_id = models.CharField(_("product ID"), max_length=200)
    name = models.CharField(_("product name"), max_length=300, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    added_at = models.DateTimeField(_("added at"))

    class Meta:
        verbose_name = _("wishlist item")
        verbose_name_plural = _("wishlist items")
        constraints = [models.UniqueConstraint(fields=["contact", "product_id"], name="crm_wishlist_unique_product")]
        indexes = [models.Index(fields=["product_id"], name="crm_wishlist_product")]

    def __str__(self) -> str:
        return self.name or self.product_id


class Coupon(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="coupons")
    code = models.CharField(_("code"), max_length=100)
    discount_amount = models.DecimalField(
        _("discount (amount)"), max_digits=14, decimal_places=2, null=True, blank=True
    )
    discount_percent = models.DecimalField(_("discount (%)"), max_digits=5, decimal_places=2, null=True, blank=True)
    issued_at = models.DateTimeField(_("issued at"))
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    redeemed_at = models.DateTimeField(_("redeemed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("coupon")
        verbose_name_plural = _("coupons")
        ordering = ["-issued_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["contact", "code"], name="crm_coupon_unique_code_per_contact")]
        indexes = [
            # The admin's coupon list (newest first) and its search by code.
            models.Index(fields=["-issued_at", "-id"], name="crm_coupon_issued"),
            models.Index(fields=["code"], name="crm_coupon_code"),
            models.Index(fields=["expires_at"], condition=Q(redeemed_at__isnull=True), name="crm_coupon_unused_expiry"),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def is_redeemed(self) -> bool:
        return self.redeemed_at is not None


class Order(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="orders")
    order_id = models.CharField(_("order ID"), max_length=200)
    total = models.DecimalField(_("total"), max_digits=14, decimal_places=2, default=Decimal("0"))
    currency = models.CharField(_("currency"), max_length=3, default="KRW")
    items = models.JSONField(_("items"), default=list, blank=True)
    placed_at = models.DateTimeField(_("placed at"))

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        ordering = ["-placed_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["contact", "order_id"], name="crm_order_unique_per_contact")]
        indexes = [
            models.Index(fields=["contact", "-placed_at"], name="crm_order_contact_time"),
            # The admin's order list (newest first) and its search by order ID.
            models.Index(fields=["-placed_at", "-id"], name="crm_order_placed"),
            models.Index(fields=["order_id"], name="crm_order_order_id"),
        ]

    def __str__(self) -> str:
        return self.order_id


class Heartbeat(models.Model):
    """The last time each periodic 'alive' signal ran: written by a beat-scheduled task, read by /healthz."""

    name = models.CharField(max_length=100, unique=True)
    beat_at = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = _("heartbeat")
        verbose_name_plural = _("heartbeats")

    def __str__(self) -> str:
        return f"{self.name} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"


class RejectedMessage(models.Model):
    """A tracking message refused by the API (kept so that nothing a sender posts disappears without a trace).

    The sender got the errors in the response; operators see them here to fix the integration.
    """

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="rejected_messages")
    received_at = models.DateTimeField(_("received at"), default=timezone.now, db_index=True)
    endpoint = models.CharField(_("endpoint"), max_length=50)
    index = models.PositiveIntegerField(_("index in batch"), null=True, blank=True)
    payload = models.JSONField(_("payload"))
    errors = models.JSONField(_("errors"))

    class Meta:
        verbose_name = _("rejected message")
        verbose_name_plural = _("rejected messages")
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.source} {self.endpoint} #{self.index}"


class ContactImport(models.Model):
    """One import of a contacts file: its options, what the preview found, and what was applied.

    Life: ``pending`` (uploaded; a large file waits for its preview task) → ``previewing`` → ``previewed`` (the plan
    is stored in ``plan_file``) → on confirm ``queued`` (large files) → ``running`` → ``completed``; or ``failed``
    (unreadable file, error while applying) or ``cancelled``. Counts and ``errors`` describe the preview until the
    import is applied, then what was applied; ``preview`` keeps the preview's counts, sample and notices.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting for preview")
        PREVIEWING = "previewing", _("Previewing")
        PREVIEWED = "previewed", _("Previewed")
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        COMPLETED = "completed", _("Completed")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    file_name = models.CharField(_("file name"), max_length=255)
    file = models.FileField(_("file"), upload_to="imports/%Y/%m/", blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    file_format = models.CharField(_("format"), max_length=10, blank=True)
    encoding = models.CharField(_("encoding"), max_length=30, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PENDING)
    options = models.JSONField(_("options"), default=dict, blank=True)
    column_mapping = models.JSONField(_("column mapping"), default=dict, blank=True)
    tag = models.ForeignKey(Tag, null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("tag"))
    contact_list = models.ForeignKey(
        ContactList, null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("static list")
    )
    total_rows = models.PositiveIntegerField(_("rows"), default=0)
    processed_rows = models.PositiveIntegerField(_("processed rows"), default=0)
    new_count = models.PositiveIntegerField(_("new"), default=0)
    updated_count = models.PositiveIntegerField(_("updated"), default=0)
    unchanged_count = models.PositiveIntegerField(_("unchanged"), default=0)
    skipped_count = models.PositiveIntegerField(_("skipped"), default=0)
    error_count = models.PositiveIntegerField(_("errors"), default=0)
    errors = models.JSONField(_("row errors"), default=list, blank=True)
    failure = models.TextField(_("failure"), blank=True)
    plan_file = models.FileField(_("plan"), upload_to="imports/%Y/%m/", blank=True, editable=False)
    plan_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    preview = models.JSONField(_("preview"), default=dict, blank=True, editable=False)
    previewed_at = models.DateTimeField(_("previewed at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)

    class Meta:
        verbose_name = _("contact import")
        verbose_name_plural = _("contact imports")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.get_status_display()})"


class Segment(models.Model):
    """A rule-defined audience, evaluated as one SQL query (see ``crm.segments``).

    ``rules`` is a versioned JSON document, ``{"version": 1, "root": {"type": "group", ...}}``; its schema,
    compiler and explainer live in ``crm.segments``. ``version`` counts saved changes of the rules, so snapshots
    and cached counts can tell which rules they were made from.
    """

    name = models.CharField(_("name"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)
    rules = models.JSONField(
        _("rules"),
        default=dict,
        blank=True,
        help_text=_("Conditions that decide who is in the segment. Built with the rule builder; JSON for power users."),
    )
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    last_count = models.PositiveIntegerField(_("members"), null=True, blank=True, editable=False)
    last_counted_at = models.DateTimeField(_("counted at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def contacts(self, *, now=None) -> models.QuerySet:
        """The segment's members as a queryset of contacts (erased contacts excluded), evaluated at ``now``."""
        from crm.segments import segment_contacts

        return segment_contacts(segment=self, now=now)

    def contains(self, contact: Contact, *, now=None) -> bool:
        """Whether ``contact`` is a member at ``now``; consistent with :meth:`contacts`."""
        from crm.segments import segment_contains

        return segment_contains(segment=self, contact=contact, now=now)


class SegmentSize(models.Model):
    """The member count of a segment on a day, kept by a beat task for the size-over-time chart."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="sizes", verbose_name=_("segment"))
    day = models.DateField(_("day"))
    count = models.PositiveIntegerField(_("members"))
    counted_at = models.DateTimeField(_("counted at"), default=timezone.now)

    class Meta:
        verbose_name = _("segment size")
        verbose_name_plural = _("segment sizes")
        ordering = ["segment", "day"]
        constraints = [models.UniqueConstraint(fields=["segment", "day"], name="crm_segmentsize_segment_day_uniq")]

    def __str__(self) -> str:
        return f"{self.segment} {self.day}: {self.count}"


class AuditEntryQuerySet(models.QuerySet):
    """The audit trail is append-only: a queryset refuses to update or delete its rows."""

    def update(self, **kwargs):
        raise PermissionError("audit entries are immutable")

    def delete(self):
        raise PermissionError("audit entries are immutable")

    _raw_delete = delete


class AuditEntry(models.Model):
    """Who did what to which object and when, with the changed fields (append-only; see ``crm.audit``)."""

    class Action(models.TextChoices):
        CREATED = "created", _("created")
        CHANGED = "changed", _("changed")
        DELETED = "deleted", _("deleted")
        LAUNCHED = "launched", _("launched")
        SCHEDULED = "scheduled", _("scheduled")
        PAUSED = "paused", _("paused")
        RESUMED = "resumed", _("resumed")
        CANCELLED = "cancelled", _("cancelled")
        APPROVAL_REQUESTED = "approval_requested", _("approval requested")
        APPROVED = "approved", _("approved")
        REJECTED = "rejected", _("rejected")
        REVOKED = "revoked", _("revoked")
        ERASED = "erased", _("personal data erased")
        OTHER = "other", _("other")

    at = models.DateTimeField(_("at"), default=timezone.now, editable=False, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    actor_repr = models.CharField(
        _("by (name)"), max_length=150, blank=True, editable=False, help_text=_("Kept if the user is deleted.")
    )
    via = models.CharField(
        _("via"), max_length=20, blank=True, editable=False, help_text=_("admin, api, task or shell.")
    )
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True, editable=False)
    action = models.CharField(_("action"), max_length=30, choices=Action.choices, editable=False)
    object_type = models.CharField(_("object type"), max_length=100, editable=False, db_index=True)
    object_id = models.CharField(_("object ID"), max_length=64, editable=False)
    object_repr = models.CharField(_("object"), max_length=200, editable=False)
    changes = models.JSONField(
        _("changes"), default=dict, blank=True, editable=False, help_text=_("Field: [before, after].")
    )

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit trail")
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id", "-at"], name="crm_audit_object")]

    def __str__(self) -> str:
        return f"{self.actor_repr or '-'} {self.get_action_display()} {self.object_repr}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("audit entries are immutable")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit entries are immutable")


class UserPreference(models.Model):
    """A person's own settings in the admin: the language the admin speaks to them, whatever browser they use."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="loop_preference", verbose_name=_("user")
    )
    language = models.CharField(
        _("language"),
        max_length=10,
        choices=settings.LANGUAGES,
        help_text=_("Chosen with the language switch at the top of every admin page."),
    )

    class Meta:
        verbose_name = _("user preference")
        verbose_name_plural = _("user preferences")

    def __str__(self) -> str:
        return f"{self.user}: {self.language}"
