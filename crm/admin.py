"""The crm models in the admin: read-mostly screens for marketers and operators.

Rows are written by ``crm.services`` (the ingest API, imports, commands); here marketers look them up, curate tags
and static lists and correct a contact's profile. There is no business logic in this module: commerce state,
consent, events and API keys are shown read-only because only their services may change them.

Big tables (contacts, events, orders, coupons, devices, consent history) use ``LoopModelAdmin``'s capped count and
``list_select_related``, so that a list page costs a fixed number of queries whatever the number of rows.
"""

from __future__ import annotations

import json
import zoneinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import phonenumbers
from django import forms
from django.contrib import admin, messages
from django.contrib.humanize.templatetags.humanize import intcomma
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models import Q
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator, format_lazy
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from config.admin_base import LoopModelAdmin, ReadOnlyModelAdmin, ReadOnlyTabularInline, json_block
from config.formatting import money
from crm import admin_segments  # noqa: F401 (registers the segment admin)
from crm.admin_import import (
    ContactImportAdmin,
    ContactImportExportAdminMixin,
    export_events_csv,
    export_events_xlsx,
)
from crm.models import (
    ApiKey,
    AuditEntry,
    Cart,
    Consent,
    ConsentChange,
    ConsentPurpose,
    Contact,
    ContactImport,
    ContactList,
    Coupon,
    Device,
    Event,
    Heartbeat,
    Order,
    RejectedMessage,
    Source,
    Tag,
    UnprocessedEvent,
    WishlistItem,
)
from crm.phones import DEFAULT_REGION, InvalidPhoneNumber, normalize_phone, phone_search_variants
from crm.roles import ERASE_PERMISSION
from crm.services.apikeys import api_key_create, api_key_remove_scope, api_key_revoke
from crm.services.contacts import contact_erase
from crm.services.event_processing import events_backlog, events_retry_failed
from crm.services.ingest import events_process_soon

#: How many of a contact's events its page shows (newest first); the rest are one link away.
RECENT_EVENTS = 20


# --- Display helpers -------------------------------------------------------------------------------------------


def phone_display(e164: str) -> str:
    """``+821012345678`` → ``010-1234-5678`` for Korean numbers, the international format for others."""
    if not e164:
        return ""
    try:
        number = phonenumbers.parse(e164, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return e164
    if number.country_code == phonenumbers.country_code_for_region(DEFAULT_REGION):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def admin_link(obj: Any, text: Any = None) -> str:
    """A link to ``obj``'s admin page, or its text when there is no object."""
    if obj is None:
        return "-"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj if text is None else text)


def changelist_link(model: type, text: Any, **params: Any) -> str:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(params), text)


def price_display(value: Any) -> str:
    """A price from an event's JSON: a number when it is one, the text as sent otherwise."""
    if value is None or value == "":
        return "-"
    try:
        return money(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return str(value)


def items_table(items: list[dict[str, Any]] | None) -> str:
    """Cart or order lines as a small table: product, quantity, price."""
    if not items:
        return "-"
    rows = format_html_join(
        "",
        '<tr><td>{}</td><td>{}</td><td class="loop-num">{}</td><td class="loop-num">{}</td></tr>',
        (
            (
                item.get("name") or "-",
                item.get("product_id") or item.get("sku") or "-",
                item.get("quantity", 1),
                price_display(item.get("price")),
            )
            for item in items
            if isinstance(item, dict)
        ),
    )
    return format_html(
        '<table class="loop-items"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>'
        "<tbody>{}</tbody></table>",
        _("product"),
        _("product ID"),
        _("quantity"),
        _("price"),
        rows,
    )


def properties_summary(properties: dict[str, Any] | None, *, limit: int = 3, width: int = 80) -> str:
    """The first few properties of an event as ``key: value`` on one line."""
    if not properties or not isinstance(properties, dict):
        return ""
    parts = [f"{key}: {value}" for key, value in list(properties.items())[:limit] if not isinstance(value, dict | list)]
    return Truncator(", ".join(parts)).chars(width)


class ContactColumnMixin:
    """A translated, linked "contact" column for models that belong to a contact."""

    @admin.display(description=_("contact"))
    def contact_column(self, obj) -> str:
        return admin_link(obj.contact)


def contact_search_q(term: str) -> Q:
    """Contacts whose name or email contains ``term`` (trigram indexes on PostgreSQL), whose external ID is
    ``term``, or whose phone number is ``term`` typed in any format (``010-1234-5678`` finds ``+821012345678``).

    Every branch is answered by an index, so a search reads what it finds, not the whole table.
    """
    condition = Q(name__icontains=term) | Q(email__icontains=term) | Q(external_id=term)
    if any(ch.isdigit() for ch in term):
        variants = phone_search_variants(term)
        if variants:
            condition |= Q(phone__in=variants)
    return condition


class PhoneSearchMixin:
    """The contact list's search: the whole term, see ``contact_search_q`` (``search_fields`` only shows the box)."""

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(contact_search_q(term)), False


#: A search of rows that belong to contacts looks at the rows of at most this many matching contacts.
CONTACT_SEARCH_LIMIT = 1000

#: Shown as the search fields of rows that belong to a contact; the search itself is ``ContactRowSearchMixin``.
CONTACT_SEARCH_FIELDS = ["contact__email", "contact__name", "=contact__external_id"]


class ContactRowSearchMixin:
    """For rows that belong to a contact: the term finds the rows of the contacts it finds (``contact_search_q``),
    or rows whose ``search_exact_fields`` equal it or whose ``search_text_fields`` contain it (small tables only)."""

    search_exact_fields: tuple[str, ...] = ()
    search_text_fields: tuple[str, ...] = ()

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # The matching contacts first (index scans, at most CONTACT_SEARCH_LIMIT), then their rows by contact id:
        # one subquery joined into a big table would read all of it.
        contact_ids = list(
            Contact.objects.filter(contact_search_q(term)).values_list("pk", flat=True)[:CONTACT_SEARCH_LIMIT]
        )
        condition = Q(contact_id__in=contact_ids)
        for field in self.search_exact_fields:
            condition |= Q(**{field: term})
        for field in self.search_text_fields:
            condition |= Q(**{f"{field}__icontains": term})
        return queryset.filter(condition), False


class TitledRelatedFilter(admin.RelatedFieldListFilter):
    """A related-field filter whose title is given here, for foreign keys without a (translated) verbose name."""

    filter_title: Any = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.filter_title is not None:
            self.title = self.filter_title


class SourceFilter(TitledRelatedFilter):
    filter_title = _("source")


# --- Contacts --------------------------------------------------------------------------------------------------


class HasOrdersFilter(admin.SimpleListFilter):
    title = _("purchases")
    parameter_name = "ordered"

    def lookups(self, request, model_admin):
        return [("yes", _("Has ordered")), ("no", _("Never ordered"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(order_count__gt=0)
        if self.value() == "no":
            return queryset.filter(order_count=0)
        return queryset


class ConsentFilter(admin.SimpleListFilter):
    """Contacts whose current consent for a purpose is granted."""

    title = _("consented to")
    parameter_name = "consent"

    def lookups(self, request, model_admin):
        return ConsentPurpose.choices

    def queryset(self, request, queryset):
        if self.value() in ConsentPurpose.values:
            return queryset.consented(self.value())
        return queryset


class ErasedFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "erased"

    def lookups(self, request, model_admin):
        return [("no", _("Active")), ("yes", _("Erased on request"))]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(erased_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(erased_at__isnull=False)
        return queryset


class ContactForm(forms.ModelForm):
    """The editable profile: phone numbers are stored in E.164, whatever format the marketer types."""

    class Meta:
        model = Contact
        fields = ["name", "external_id", "email", "phone", "locale", "time_zone", "tags", "lists"]

    def clean_email(self) -> str:
        email = (self.cleaned_data.get("email") or "").strip()
        if email:
            validate_email(email)
        return email

    def clean_phone(self) -> str:
        phone = (self.cleaned_data.get("phone") or "").strip()
        if not phone:
            return ""
        try:
            return normalize_phone(phone)
        except InvalidPhoneNumber as exc:
            raise ValidationError(str(exc)) from exc

    def clean_time_zone(self) -> str:
        name = (self.cleaned_data.get("time_zone") or "").strip()
        if name and name not in zoneinfo.available_timezones():
            raise ValidationError(_("Unknown time zone: use an IANA name such as Asia/Seoul."))
        return name


class ConsentInline(ReadOnlyTabularInline):
    model = Consent
    fields = ["purpose", "granted", "changed_at", "source"]
    readonly_fields = fields
    show_change_link = False
    verbose_name = _("consent")
    verbose_name_plural = _("consent (current)")


class CartInline(ReadOnlyTabularInline):
    model = Cart
    fields = ["items_table", "cart_value", "updated_at", "checkout_started_at"]
    readonly_fields = fields

    @admin.display(description=_("items"))
    def items_table(self, obj: Cart) -> str:
        return items_table(obj.items)

    @admin.display(description=_("value"))
    def cart_value(self, obj: Cart) -> str:
        return money(obj.value, obj.currency)


class CouponInline(ReadOnlyTabularInline):
    model = Coupon
    fields = ["code", "discount", "issued_at", "expires_at", "redeemed_at"]
    readonly_fields = fields

    @admin.display(description=_("discount"))
    def discount(self, obj: Coupon) -> str:
        return coupon_discount(obj)


class OrderInline(ReadOnlyTabularInline):
    model = Order
    fields = ["order_id", "order_total", "item_count", "placed_at"]
    readonly_fields = fields

    @admin.display(description=_("total"))
    def order_total(self, obj: Order) -> str:
        return money(obj.total, obj.currency)

    @admin.display(description=_("items"))
    def item_count(self, obj: Order) -> int:
        return len(obj.items or [])


class DeviceInline(ReadOnlyTabularInline):
    model = Device
    fields = ["platform", "short_token", "app_id", "active", "last_seen_at"]
    readonly_fields = fields

    @admin.display(description=_("push token"))
    def short_token(self, obj: Device) -> str:
        return Truncator(obj.token).chars(24)


class WishlistInline(ReadOnlyTabularInline):
    model = WishlistItem
    fields = ["name", "product_id", "added_at"]
    readonly_fields = fields


@admin.register(Contact)
class ContactAdmin(ContactImportExportAdminMixin, PhoneSearchMixin, LoopModelAdmin):
    form = ContactForm
    list_display = [
        "display_name",
        "email",
        "phone_column",
        "external_id",
        "order_count",
        "revenue",
        "last_seen_at",
    ]
    list_display_links = ["display_name"]
    # Every column is on the contact row itself: no related object to select, no query per row.
    list_select_related = False
    search_fields = ["name", "email", "phone", "external_id"]
    search_help_text = _("Name, email, phone number (in any format) or external ID.")
    list_filter = [
        ConsentFilter,
        HasOrdersFilter,
        "last_seen_at",
        "last_order_at",
        "tags",
        "lists",
        ErasedFilter,
    ]
    autocomplete_fields = ["tags", "lists"]
    actions = ["erase_personal_data"]
    #: At most this many contacts are erased by one action (each is its own transaction).
    erase_limit = 500
    inlines = [ConsentInline, CartInline, CouponInline, OrderInline, DeviceInline, WishlistInline]
    profile_fields = [("name", "external_id"), ("email", "phone"), ("locale", "time_zone"), "tags", "lists"]
    fieldsets = [
        (_("Profile"), {"fields": profile_fields}),
        (
            _("Attributes"),
            {
                "fields": ["attributes_table"],
                "description": _("Free-form properties sent by the shop (traits of identify calls) or imported."),
            },
        ),
        (
            _("Order history"),
            {
                "fields": [("order_count", "revenue"), ("first_order_at", "last_order_at")],
                "description": _("Kept up to date from the shop's orders; used by segments."),
            },
        ),
        (
            _("Activity"),
            {"fields": [("first_seen_at", "last_seen_at"), ("created_at", "updated_at"), "erased_at"]},
        ),
    ]
    readonly_fields = [
        "attributes_table",
        "order_count",
        "revenue",
        "first_order_at",
        "last_order_at",
        "first_seen_at",
        "last_seen_at",
        "created_at",
        "updated_at",
        "erased_at",
    ]

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(_("Profile"), {"fields": self.profile_fields})]
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        # The external ID is the shop's key for this contact: set once, never retyped by hand.
        if obj is not None and obj.external_id:
            return [*self.readonly_fields, "external_id"]
        return self.readonly_fields

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def has_delete_permission(self, request, obj=None) -> bool:
        # Contacts are erased through crm.services.contact_erase (which keeps reports consistent), never deleted
        # here: a delete would also cascade to every event of the contact.
        return False

    def has_erase_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{ERASE_PERMISSION}")

    @admin.action(description=_("Erase personal data"), permissions=["erase"])
    def erase_personal_data(self, request, queryset):
        """Right to erasure: a confirmation page, then ``contact_erase`` for each selected contact (Admin role)."""
        contacts = list(queryset.filter(erased_at__isnull=True).order_by("pk")[: self.erase_limit + 1])
        if len(contacts) > self.erase_limit:
            self.message_user(
                request,
                gettext("Select at most %(limit)d contacts to erase at once.") % {"limit": self.erase_limit},
                messages.ERROR,
            )
            return None
        if not contacts:
            self.message_user(request, gettext("The selected contacts are already erased."), messages.WARNING)
            return None
        if request.POST.get("confirm") == "yes":
            for contact in contacts:
                contact_erase(contact=contact, actor=f"admin:{request.user.get_username()}")
            self.message_user(
                request,
                ngettext(
                    "The personal data of %(count)d contact was erased.",
                    "The personal data of %(count)d contacts were erased.",
                    len(contacts),
                )
                % {"count": len(contacts)},
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": gettext("Erase personal data"),
            "contacts": contacts,
            "action_name": "erase_personal_data",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "changelist_url": reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"),
        }
        return TemplateResponse(request, "admin/crm/contact/erase_confirmation.html", context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk:
            events = list(Event.objects.filter(contact=obj).select_related("source").timeline()[:RECENT_EVENTS])
            for event in events:
                event.summary = properties_summary(event.properties)
            context["recent_events"] = events
            context["recent_events_limit"] = RECENT_EVENTS
            context["all_events_link"] = changelist_link(
                Event, _("All events of this contact"), contact__id__exact=obj.pk
            )
            context["consent_history_link"] = changelist_link(
                ConsentChange, _("Consent history"), contact__id__exact=obj.pk
            )
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.display(description=_("name"), ordering="name")
    def display_name(self, obj: Contact) -> str:
        return obj.name or _("(no name)")

    @admin.display(description=_("phone"), ordering="phone")
    def phone_column(self, obj: Contact) -> str:
        return phone_display(obj.phone)

    @admin.display(description=_("revenue"), ordering="total_revenue")
    def revenue(self, obj: Contact) -> str:
        return money(obj.total_revenue)

    @admin.display(description=_("attributes"))
    def attributes_table(self, obj: Contact) -> str:
        if not obj.attributes:
            return "-"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td></tr>",
            (
                (key, json_block(value) if isinstance(value, dict | list) else value)
                for key, value in obj.attributes.items()
            ),
        )
        return format_html('<table class="loop-attributes"><tbody>{}</tbody></table>', rows)


# --- Events ----------------------------------------------------------------------------------------------------


@admin.register(Event)
class EventAdmin(ContactColumnMixin, ReadOnlyModelAdmin):
    """Events are the biggest table: exact-match search on indexed columns, sorting by time only, capped count."""

    actions = [export_events_csv, export_events_xlsx]  # ReadOnlyModelAdmin sets actions = None

    list_display = ["occurred_at", "name", "type", "contact_column", "source_column", "summary"]
    list_select_related = ["contact", "source"]
    list_filter = ["type", ("source", SourceFilter), "occurred_at"]
    search_fields = ["name", "message_id"]
    search_help_text = _("The exact event name (e.g. Order Completed) or message ID.")
    sortable_by = ["occurred_at"]
    raw_id_fields = ["contact", "source"]
    fields = [
        "occurred_at",
        "received_at",
        "name",
        "type",
        "contact_column",
        "source_column",
        "message_id",
        "properties_block",
        "context_block",
    ]
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        # Whole-term exact matches only: the (name, occurred_at) index and the (source, message_id) unique index
        # answer them; a substring search would read every event.
        term = search_term.strip()
        if not term:
            return queryset, False
        sources = list(Source.objects.values_list("pk", flat=True))  # a handful: (source, message_id) index scans
        return queryset.filter(Q(name=term) | Q(source_id__in=sources, message_id=term)), False

    @admin.display(description=_("source"))
    def source_column(self, obj: Event) -> str:
        return str(obj.source)

    @admin.display(description=_("properties"))
    def summary(self, obj: Event) -> str:
        return properties_summary(obj.properties)

    @admin.display(description=_("properties"))
    def properties_block(self, obj: Event) -> str:
        return json_block(obj.properties)

    @admin.display(description=_("context"))
    def context_block(self, obj: Event) -> str:
        return json_block(obj.context)


# --- Curation: tags and static lists ---------------------------------------------------------------------------


@admin.register(Tag)
class TagAdmin(LoopModelAdmin):
    list_display = ["name", "contacts_link"]
    search_fields = ["name"]

    @admin.display(description=_("contacts"))
    def contacts_link(self, obj: Tag) -> str:
        return changelist_link(Contact, _("Show contacts"), tags__id__exact=obj.pk)


@admin.register(ContactList)
class ContactListAdmin(LoopModelAdmin):
    list_display = ["name", "description_short", "created_at", "contacts_link"]
    search_fields = ["name", "description"]
    list_filter = ["created_at"]
    fields = ["name", "description", "created_at"]
    readonly_fields = ["created_at"]

    @admin.display(description=_("description"))
    def description_short(self, obj: ContactList) -> str:
        return Truncator(obj.description).chars(80)

    @admin.display(description=_("contacts"))
    def contacts_link(self, obj: ContactList) -> str:
        return changelist_link(Contact, _("Show contacts"), lists__id__exact=obj.pk)


# --- Commerce state (derived from events by crm.services.commerce: read-only) ------------------------------------


def coupon_discount(coupon: Coupon) -> str:
    if coupon.discount_percent is not None:
        return f"{coupon.discount_percent.normalize():f}%"
    return money(coupon.discount_amount)


class CouponStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("usable", _("Usable")), ("redeemed", _("Redeemed")), ("expired", _("Expired unused"))]

    def queryset(self, request, queryset):
        now = timezone.now()
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        if self.value() == "usable":
            return queryset.filter(unexpired, redeemed_at__isnull=True)
        if self.value() == "redeemed":
            return queryset.filter(redeemed_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(redeemed_at__isnull=True, expires_at__lte=now)
        return queryset


@admin.register(Coupon)
class CouponAdmin(ContactRowSearchMixin, ContactColumnMixin, ReadOnlyModelAdmin):
    list_display = ["code", "contact_column", "discount", "issued_at", "expires_at", "redeemed_at"]
    list_select_related = ["contact"]
    list_filter = [CouponStatusFilter, "issued_at", "expires_at"]
    search_fields = ["=code", *CONTACT_SEARCH_FIELDS]
    search_exact_fields = ("code",)
    search_help_text = _("The exact coupon code, or the contact's email, name, phone or external ID.")
    fields = ["code", "contact_column", "discount", "issued_at", "expires_at", "redeemed_at"]
    readonly_fields = fields

    @admin.display(description=_("discount"))
    def discount(self, obj: Coupon) -> str:
        return coupon_discount(obj)


@admin.register(Order)
class OrderAdmin(ContactRowSearchMixin, ContactColumnMixin, ReadOnlyModelAdmin):
    list_display = ["order_id", "contact_column", "order_total", "item_count", "placed_at"]
    list_select_related = ["contact"]
    list_filter = ["placed_at"]
    search_fields = ["=order_id", *CONTACT_SEARCH_FIELDS]
    search_exact_fields = ("order_id",)
    search_help_text = _("Order ID, or the contact's email, name, phone or external ID.")
    fields = ["order_id", "contact_column", "order_total", "placed_at", "items_table"]
    readonly_fields = fields

    @admin.display(description=_("total"), ordering="total")
    def order_total(self, obj: Order) -> str:
        return money(obj.total, obj.currency)

    @admin.display(description=_("items"))
    def item_count(self, obj: Order) -> int:
        return len(obj.items or [])

    @admin.display(description=_("items"))
    def items_table(self, obj: Order) -> str:
        return items_table(obj.items)


class CheckoutFilter(admin.SimpleListFilter):
    title = _("checkout")
    parameter_name = "checkout"

    def lookups(self, request, model_admin):
        return [("started", _("Checkout started")), ("browsing", _("No checkout yet"))]

    def queryset(self, request, queryset):
        if self.value() == "started":
            return queryset.filter(checkout_started_at__isnull=False)
        if self.value() == "browsing":
            return queryset.filter(checkout_started_at__isnull=True)
        return queryset


@admin.register(Cart)
class CartAdmin(ContactRowSearchMixin, ContactColumnMixin, ReadOnlyModelAdmin):
    list_display = ["contact_column", "item_count", "cart_value", "updated_at", "checkout_started_at"]
    list_display_links = ["item_count"]
    list_select_related = ["contact"]
    list_filter = [CheckoutFilter, "updated_at"]
    ordering = ["-updated_at"]
    search_fields = CONTACT_SEARCH_FIELDS
    search_help_text = _("The contact's email, name, phone or external ID.")
    fields = ["contact_column", "items_table", "cart_value", "updated_at", "checkout_started_at"]
    readonly_fields = fields

    @admin.display(description=_("items"))
    def item_count(self, obj: Cart) -> int:
        return len(obj.items or [])

    @admin.display(description=_("value"), ordering="value")
    def cart_value(self, obj: Cart) -> str:
        return money(obj.value, obj.currency)

    @admin.display(description=_("items"))
    def items_table(self, obj: Cart) -> str:
        return items_table(obj.items)


@admin.register(WishlistItem)
class WishlistItemAdmin(ContactRowSearchMixin, ContactColumnMixin, ReadOnlyModelAdmin):
    list_display = ["product", "product_id", "contact_column", "added_at"]
    list_select_related = ["contact"]
    list_filter = ["added_at"]
    search_fields = ["=product_id", "name", *CONTACT_SEARCH_FIELDS]
    search_exact_fields = ("product_id",)
    search_text_fields = ("name",)
    search_help_text = _("Product ID or name, or the contact's email, name, phone or external ID.")
    fields = ["product", "product_id", "contact_column", "added_at", "properties_block"]
    readonly_fields = fields

    @admin.display(description=_("product name"), ordering="name")
    def product(self, obj: WishlistItem) -> str:
        return obj.name or obj.product_id

    @admin.display(description=_("properties"))
    def properties_block(self, obj: WishlistItem) -> str:
        return json_block(obj.properties)


# --- Devices and consent history -------------------------------------------------------------------------------


@admin.register(Device)
class DeviceAdmin(ContactRowSearchMixin, ContactColumnMixin, LoopModelAdmin):
    """Devices come from the apps; an operator may only switch a push token off (or on again)."""

    list_display = ["short_token", "platform", "app_id", "contact_column", "active", "last_seen_at"]
    list_select_related = ["contact"]
    list_filter = ["platform", "active", "last_seen_at"]
    search_fields = ["=token", "app_id", *CONTACT_SEARCH_FIELDS]
    search_exact_fields = ("token",)
    search_text_fields = ("app_id",)
    search_help_text = _("The whole push token, app, or the contact's email, name, phone or external ID.")
    fields = [
        "contact_column",
        "platform",
        "app_id",
        "token",
        "active",
        "deactivated_reason",
        "created_at",
        "last_seen_at",
    ]
    readonly_fields = ["contact_column", "platform", "app_id", "token", "created_at", "last_seen_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("push token"))
    def short_token(self, obj: Device) -> str:
        return Truncator(obj.token).chars(24)


@admin.register(ConsentChange)
class ConsentChangeAdmin(ContactRowSearchMixin, ContactColumnMixin, ReadOnlyModelAdmin):
    """The append-only history of consent: nobody adds, changes or deletes a row of it here."""

    list_display = ["changed_at", "contact_column", "purpose", "granted", "source", "recorded_at"]
    list_select_related = ["contact"]
    list_filter = ["purpose", "granted", "changed_at"]
    search_fields = ["source", *CONTACT_SEARCH_FIELDS]
    search_text_fields = ("source",)
    search_help_text = _("Where the consent came from, or the contact's email, name, phone or external ID.")
    fields = ["contact_column", "purpose", "granted", "changed_at", "source", "recorded_at"]
    readonly_fields = fields


# --- Settings: sources, API keys, operations -------------------------------------------------------------------


@admin.register(Source)
class SourceAdmin(LoopModelAdmin):
    list_display = ["name", "kind", "created_at", "api_keys_link"]
    list_filter = ["kind"]
    search_fields = ["name"]
    fields = ["name", "kind", "created_at"]
    readonly_fields = ["created_at"]

    def has_delete_permission(self, request, obj=None) -> bool:
        # A source's events and API keys protect it; the delete page would list every one of its events.
        return False

    @admin.display(description=_("API keys"))
    def api_keys_link(self, obj: Source) -> str:
        return changelist_link(ApiKey, _("Show API keys"), source__id__exact=obj.pk)


class ApiKeyStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", _("Active")), ("revoked", _("Revoked"))]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


#: What each scope allows, shown next to it when a key is created.
SCOPE_HELP = {
    ApiKey.Scope.WRITE_EVENTS: _(
        "the tracking endpoints (track, identify, page, …), POST /events and journey enrollments. The only scope for "
        "a key embedded in a web page or an app, where anyone can extract it."
    ),
    ApiKey.Scope.WRITE_CONTACTS: _(
        "PUT and DELETE /contacts/{external_id}: overwrite or erase any contact. Server-side keys only."
    ),
    ApiKey.Scope.READ_CONTACTS: _(
        "every contact with profile, consent, cart, coupons and orders. Server-side keys you trust with the whole "
        "customer base only."
    ),
}


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(label=_("name"), max_length=100, help_text=_("What uses the key, e.g. 'shop backend'."))
    source = forms.ModelChoiceField(
        label=_("source"), queryset=Source.objects.all(), help_text=_("Events sent with the key are stored under it.")
    )
    scopes = forms.MultipleChoiceField(
        label=_("scopes"),
        choices=[(value, format_lazy("{}: {}", label, SCOPE_HELP[value])) for value, label in ApiKey.Scope.choices],
        initial=[ApiKey.Scope.WRITE_EVENTS],
        widget=forms.CheckboxSelectMultiple,
        help_text=_("A key in a web page or an app can be read by anyone who looks: give it Write events only."),
    )


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyModelAdmin):
    """API keys: created here (or by ``manage.py create_api_key``) and shown exactly once; only a hash is stored."""

    list_display = ["name", "source", "prefix_display", "scopes_display", "created_at", "last_used_at", "status"]
    list_select_related = ["source"]
    list_filter = [ApiKeyStatusFilter, "source"]
    search_fields = ["name", "=prefix"]
    fields = [
        "name",
        "source",
        "prefix_display",
        "scopes_display",
        "created_at",
        "created_by_display",
        "last_used_at",
        "revoked_at",
    ]
    readonly_fields = fields
    exclude = ["key_hash"]
    actions = ["revoke_keys", "remove_write_contacts"]

    def has_add_permission(self, request) -> bool:
        return request.user.has_perm("crm.add_apikey")

    def add_view(self, request, form_url="", extra_context=None):
        """Create a key through the service and show its secret on this one response; it is never stored."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiKeyCreateForm(request.POST or None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Add API key"),
            "form": form,
            "raw_key": None,
        }
        if request.method == "POST" and form.is_valid():
            key, raw_key = api_key_create(
                source=form.cleaned_data["source"],
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                created_by=request.user,
            )
            self.log_addition(request, key, [{"added": {}}])
            context.update(raw_key=raw_key, key=key, title=_("API key created"))
        response = TemplateResponse(request, "admin/crm/apikey/add.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description=_("Revoke the selected API keys"), permissions=["change"])
    def revoke_keys(self, request, queryset):
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(key=key)
            self.log_change(request, key, [{"changed": {"fields": ["revoked_at"]}}])
            revoked += 1
        self.message_user(request, _("%(n)d API key(s) revoked.") % {"n": revoked}, messages.SUCCESS)

    @admin.action(description=_("Remove the scope Write contacts from the selected API keys"), permissions=["change"])
    def remove_write_contacts(self, request, queryset):
        changed = 0
        for key in queryset.filter(revoked_at__isnull=True):
            if api_key_remove_scope(key=key, scope=ApiKey.Scope.WRITE_CONTACTS):
                self.log_change(request, key, [{"changed": {"fields": ["scopes"]}}])
                changed += 1
        self.message_user(
            request, _("Write contacts removed from %(n)d API key(s).") % {"n": changed}, messages.SUCCESS
        )

    def has_change_permission(self, request, obj=None) -> bool:
        # Only the actions (revoke, remove a scope) change a key; there is no edit form.
        return obj is None and request.user.has_perm("crm.change_apikey")

    @admin.display(description=_("prefix"), ordering="prefix")
    def prefix_display(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description=_("scopes"))
    def scopes_display(self, obj: ApiKey) -> str:
        labels = dict(ApiKey.Scope.choices)
        return ", ".join(str(labels.get(scope, scope)) for scope in obj.scopes) or "-"

    @admin.display(description=_("created by"))
    def created_by_display(self, obj: ApiKey) -> str:
        return str(obj.created_by) if obj.created_by else "-"

    @admin.display(description=_("status"))
    def status(self, obj: ApiKey) -> str:
        return _("Active") if obj.is_active else _("Revoked")


@admin.register(RejectedMessage)
class RejectedMessageAdmin(ReadOnlyModelAdmin):
    """Tracking messages the API refused, kept so that an integration can be fixed."""

    list_display = ["received_at", "source_column", "endpoint", "index", "errors_summary"]
    list_select_related = ["source"]
    list_filter = ["endpoint", ("source", SourceFilter), "received_at"]
    search_fields = ["=endpoint"]
    fields = ["received_at", "source_column", "endpoint", "index", "errors_block", "payload_block"]
    readonly_fields = fields

    @admin.display(description=_("source"))
    def source_column(self, obj: RejectedMessage) -> str:
        return str(obj.source)

    @admin.display(description=_("errors"))
    def errors_summary(self, obj: RejectedMessage) -> str:
        return Truncator(str(obj.errors)).chars(100)

    @admin.display(description=_("errors"))
    def errors_block(self, obj: RejectedMessage) -> str:
        return json_block(obj.errors)

    @admin.display(description=_("payload"))
    def payload_block(self, obj: RejectedMessage) -> str:
        return json_block(obj.payload)


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyModelAdmin):
    """When each periodic "alive" task last ran (beat → worker → database); /healthz reads the same rows."""

    list_display = ["heartbeat_name", "beat_at_display", "beat_count"]
    ordering = ["name"]
    fields = ["heartbeat_name", "beat_at_display", "beat_count"]
    readonly_fields = fields

    @admin.display(description=_("name"), ordering="name")
    def heartbeat_name(self, obj: Heartbeat) -> str:
        return obj.name

    @admin.display(description=_("last beat"), ordering="beat_at")
    def beat_at_display(self, obj: Heartbeat):
        return obj.beat_at

    @admin.display(description=_("beats"))
    def beat_count(self, obj: Heartbeat) -> str:
        return intcomma(obj.count)


@admin.register(UnprocessedEvent)
class UnprocessedEventAdmin(ReadOnlyModelAdmin):
    """Events stored but not yet applied to profiles, consent, commerce state and first/last seen: normally empty
    or a second's worth; failed ones stay here with their error until retried."""

    list_display = ["event_link", "status", "failed_at", "error_summary"]
    list_filter = [("failed_at", admin.EmptyFieldListFilter)]
    fields = ["event_link", "status", "failed_at", "error"]
    readonly_fields = fields
    actions = ["retry_events"]

    def changelist_view(self, request, extra_context=None):
        backlog = events_backlog()
        age = backlog.oldest_age()
        summary = _("%(pending)s events waiting (oldest %(age)s s), %(failed)s failed.") % {
            "pending": intcomma(backlog.pending),
            "age": f"{age.total_seconds():.1f}" if age is not None else "0",
            "failed": intcomma(backlog.failed),
        }
        self.message_user(request, summary, messages.WARNING if backlog.failed else messages.INFO)
        return super().changelist_view(request, extra_context)

    @admin.display(description=_("event"), ordering="event_id")
    def event_link(self, obj: UnprocessedEvent) -> str:
        url = reverse("admin:crm_event_change", args=[obj.event_id])
        return format_html('<a href="{}">#{}</a>', url, obj.event_id)

    @admin.display(description=_("status"))
    def status(self, obj: UnprocessedEvent) -> str:
        return _("failed") if obj.failed_at else _("waiting")

    @admin.display(description=_("error"))
    def error_summary(self, obj: UnprocessedEvent) -> str:
        return Truncator(obj.error).chars(120)

    def has_change_permission(self, request, obj=None) -> bool:
        # Only the retry action changes a row; there is no edit form.
        return obj is None and request.user.has_perm("crm.change_unprocessedevent")

    @admin.action(description=_("Retry the selected failed events"), permissions=["change"])
    def retry_events(self, request, queryset):
        retried = events_retry_failed(event_ids=queryset.values_list("event_id", flat=True))
        if retried:
            events_process_soon()
        self.message_user(request, _("%(n)d event(s) queued again.") % {"n": retried}, messages.SUCCESS)


admin.site.register(ContactImport, ContactImportAdmin)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyModelAdmin):
    """The audit trail: searchable, filterable, never editable (the model refuses updates and deletes too)."""

    list_display = ["at", "actor_repr", "via", "action", "object_type", "object_link", "changed_fields"]
    list_filter = ["action", "object_type", "via", ("at", admin.DateFieldListFilter)]
    search_fields = ["actor_repr", "object_repr", "=object_id", "object_type"]
    date_hierarchy = "at"
    fields = [
        "at",
        "actor_repr",
        "via",
        "ip_address",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "changes_display",
    ]
    readonly_fields = fields

    @admin.display(description=_("object"))
    def object_link(self, obj: AuditEntry) -> str:
        app_label, _sep, model = obj.object_type.partition(".")
        try:
            url = reverse(f"admin:{app_label}_{model}_change", args=[obj.object_id])
        except NoReverseMatch:  # a model without an admin page
            return obj.object_repr
        if obj.action == AuditEntry.Action.DELETED:
            return obj.object_repr
        return format_html('<a href="{}">{}</a>', url, obj.object_repr)

    @admin.display(description=_("changed fields"))
    def changed_fields(self, obj: AuditEntry) -> str:
        return Truncator(", ".join(sorted(obj.changes))).chars(80) if isinstance(obj.changes, dict) else ""

    @admin.display(description=_("changes"))
    def changes_display(self, obj: AuditEntry) -> str:
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            (
                (
                    field,
                    json_text(values[0] if isinstance(values, list) and values else ""),
                    json_text(values[1] if isinstance(values, list) and len(values) > 1 else ""),
                )
                for field, values in sorted(obj.changes.items())
            ),
        )
        return format_html(
            '<table class="loop-audit-diff"><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            _("field"),
            _("before"),
            _("after"),
            rows,
        )


def json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
