"""Serializers: validation and shape only. The tracking messages are validated by ``crm.ingest.messages`` (the hot
path); the serializers below for them exist to describe the API in the OpenAPI schema, which must say exactly what
the validation accepts (the schema fuzz test, ``crm/tests/test_api_fuzz.py``, checks both directions)."""

from __future__ import annotations

import datetime
import zoneinfo

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crm.blanks import NON_BLANK_PATTERN, strip_blanks
from crm.emails import email_domain_lowercased
from crm.ingest.messages import EDGE_DAYS_PATTERN, MAX_ID_LENGTH, MAX_NAME_LENGTH, on_an_edge_day
from crm.models import Cart, ConsentPurpose, Contact, Coupon, Order
from crm.phones import InvalidPhoneNumber, normalize_phone
from crm.services.tracking import MAX_BATCH_MESSAGES

# --- Strict fields: JSON types as the schema states them (DRF would turn 5 into "5" and "0" into False) -----------


class StrictCharField(serializers.CharField):
    """A JSON string; ``max_length`` counts the characters as sent, before surrounding blanks are trimmed. Blanks
    are the API's (``crm.blanks``), not ``str.strip()``'s: DRF's own trimming is off."""

    default_error_messages = {"invalid": _("Must be a string.")}

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "trim_whitespace": False})

    def run_validation(self, data=serializers.empty):
        if isinstance(data, str):
            if self.max_length is not None and len(data) > self.max_length:
                self.fail("max_length", max_length=self.max_length)
            data = strip_blanks(data)
        return super().run_validation(data)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class NonBlankCharField(StrictCharField):
    """A string with at least one non-blank character (the schema says so with a pattern)."""


class NonBlankScheme(OpenApiSerializerFieldExtension):
    target_class = NonBlankCharField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "pattern": NON_BLANK_PATTERN}


class StrictEmailField(serializers.EmailField):
    default_error_messages = {"invalid_type": _("Must be a string.")}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_type")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": _("Must be true or false.")}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


# --- Segment-compatible tracking messages (schema only) ------------------------------------------------------------
# The schema states what ``crm.ingest.messages`` accepts, leniencies included: ids may be numbers; null, and a blank
# id or timestamp, count as not given; objects may be null.

#: An id that must be given: a string with a non-blank character (blanks around it are trimmed), or an integer.
ID_SCHEMA = {
    "oneOf": [{"type": "string", "maxLength": MAX_ID_LENGTH, "pattern": NON_BLANK_PATTERN}, {"type": "integer"}]
}
#: An id that may be left out: also null or blank.
OPTIONAL_ID_SCHEMA = {"oneOf": [{"type": "string", "maxLength": MAX_ID_LENGTH, "nullable": True}, {"type": "integer"}]}
#: A time that may be left out: an ISO 8601 date and time, null or "".
TIMESTAMP_SCHEMA = {
    "oneOf": [
        {"type": "string", "format": "date-time", "pattern": EDGE_DAYS_PATTERN, "nullable": True},
        {"type": "string", "maxLength": 0},
    ]
}


@extend_schema_field(ID_SCHEMA)
class SegmentIdField(serializers.Field):
    """A Segment id (``userId``, ``groupId``, ...): a string or an integer."""


@extend_schema_field(OPTIONAL_ID_SCHEMA)
class OptionalSegmentIdField(serializers.Field):
    pass


@extend_schema_field(TIMESTAMP_SCHEMA)
class TimestampField(serializers.Field):
    pass


def _object(**kwargs):
    return serializers.DictField(required=False, allow_null=True, **kwargs)


class _MessageBase(serializers.Serializer):
    #: The message needs userId or anonymousId (the schema says so with ``anyOf``).
    needs_identity = True

    userId = OptionalSegmentIdField(
        required=False, help_text="The shop's user id, the contact's external id. userId or anonymousId is required."
    )
    anonymousId = OptionalSegmentIdField(required=False, help_text="A device's or browser's id before login.")
    messageId = OptionalSegmentIdField(
        required=False,
        help_text="Unique per source; a message sent again with it is stored once. Derived from the content when "
        "not given.",
    )
    timestamp = TimestampField(required=False, help_text="When it happened.")
    originalTimestamp = TimestampField(
        required=False, help_text="When it happened by the device's clock; corrected with sentAt."
    )
    sentAt = TimestampField(required=False, help_text="When the device sent it.")
    context = _object()
    integrations = _object()


class _SingleMessage(_MessageBase):
    writeKey = serializers.CharField(
        required=False, allow_blank=True, help_text="The write key, if not sent as HTTP Basic user name."
    )


@extend_schema_field({"type": "string", "maxLength": MAX_NAME_LENGTH, "pattern": NON_BLANK_PATTERN})
class EventNameField(serializers.CharField):
    pass


class TrackMessageSerializer(_SingleMessage):
    event = EventNameField(help_text="The action, e.g. Order Completed.")
    properties = _object()


class PageMessageSerializer(_SingleMessage):
    name = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="Names longer than 200 characters are cut."
    )
    category = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    properties = _object()


IDENTIFY_TRAITS_HELP = (
    "email, phone, name/firstName/lastName, locale, timezone, consents {sms: true, ...}; "
    "any other trait becomes a contact attribute."
)


class IdentifyMessageSerializer(_SingleMessage):
    traits = _object(help_text=IDENTIFY_TRAITS_HELP)


class GroupMessageSerializer(_SingleMessage):
    groupId = SegmentIdField()
    traits = _object()


class AliasMessageSerializer(_SingleMessage):
    needs_identity = False

    userId = SegmentIdField(help_text="The user the previous id is merged into.")
    previousId = SegmentIdField()


# In a batch, each message has its type; the write key is the batch's (a message's own is not read).


class TrackBatchMessage(TrackMessageSerializer):
    type = serializers.ChoiceField(choices=["track"])
    writeKey = None


class PageBatchMessage(PageMessageSerializer):
    type = serializers.ChoiceField(choices=["page"])
    writeKey = None


class ScreenBatchMessage(PageMessageSerializer):
    type = serializers.ChoiceField(choices=["screen"])
    writeKey = None


class IdentifyBatchMessage(IdentifyMessageSerializer):
    type = serializers.ChoiceField(choices=["identify"])
    writeKey = None


class GroupBatchMessage(GroupMessageSerializer):
    type = serializers.ChoiceField(choices=["group"])
    writeKey = None


class AliasBatchMessage(AliasMessageSerializer):
    type = serializers.ChoiceField(choices=["alias"])
    writeKey = None


BATCH_MESSAGES = {
    "track": TrackBatchMessage,
    "page": PageBatchMessage,
    "screen": ScreenBatchMessage,
    "identify": IdentifyBatchMessage,
    "group": GroupBatchMessage,
    "alias": AliasBatchMessage,
}


class BatchSerializer(serializers.Serializer):
    batch = serializers.ListField(
        child=serializers.DictField(),
        help_text="The messages, each with its type. The valid ones are stored even when others are refused.",
    )
    context = _object(help_text="Merged into each message's context.")
    integrations = _object(help_text="Merged into each message's integrations.")
    sentAt = TimestampField(required=False, help_text="When the batch was sent; corrects originalTimestamp.")
    writeKey = serializers.CharField(
        required=False, allow_blank=True, help_text="The write key, if not sent as HTTP Basic user name."
    )


class TrackingMessageScheme(OpenApiSerializerExtension):
    """A message needs userId or anonymousId; JSON Schema says that with ``anyOf``."""

    target_class = _MessageBase
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if self.target.needs_identity:
            schema["anyOf"] = [{"required": [key], "properties": {key: ID_SCHEMA}} for key in ("userId", "anonymousId")]
        return schema


class BatchScheme(OpenApiSerializerExtension):
    """``batch`` is a list of messages of any type, told apart by ``type``."""

    target_class = BatchSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        refs = {kind: auto_schema.resolve_serializer(cls, direction).ref for kind, cls in BATCH_MESSAGES.items()}
        schema["properties"]["batch"] = {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH_MESSAGES,
            "items": {
                "oneOf": list(refs.values()),
                "discriminator": {"propertyName": "type", "mapping": {k: r["$ref"] for k, r in refs.items()}},
            },
            "description": schema["properties"]["batch"].get("description", ""),
        }
        return schema


class RejectedItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class TrackingResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    stored = serializers.IntegerField(help_text="Messages stored now.")
    duplicates = serializers.IntegerField(help_text="Messages already stored before (retries), not stored again.")
    rejected = RejectedItemSerializer(many=True, required=False)


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    errors = serializers.JSONField(required=False)


# --- Native resources ------------------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "format": "date-time", "pattern": EDGE_DAYS_PATTERN})
class EventTimeField(serializers.DateTimeField):
    """A time converted to UTC (not ``TIME_ZONE``: whether a time fits the years 1-9999 must not depend on the
    deployment), refused on an edge day as the tracking endpoints do (``crm.ingest.messages.on_an_edge_day``)."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=datetime.UTC, **kwargs)

    def enforce_timezone(self, value):
        if on_an_edge_day(value):
            self.fail("overflow")
        return super().enforce_timezone(value)


class NativeEventSerializer(serializers.Serializer):
    """The shop's own event format for POST /api/v1/events (one object or a list)."""

    message_id = NonBlankCharField(max_length=MAX_ID_LENGTH, help_text=_("Unique per source: the idempotency key."))
    external_id = NonBlankCharField(required=False, max_length=MAX_ID_LENGTH)
    anonymous_id = NonBlankCharField(required=False, max_length=MAX_ID_LENGTH)
    name = NonBlankCharField(max_length=MAX_NAME_LENGTH)
    properties = serializers.DictField(required=False)
    occurred_at = EventTimeField(required=False)

    def validate(self, attrs):
        if not attrs.get("external_id") and not attrs.get("anonymous_id"):
            raise serializers.ValidationError({"external_id": [_("external_id or anonymous_id is required.")]})
        return attrs


class NativeEventsSerializer(serializers.Serializer):
    """Schema only: the body of POST /api/v1/events is one event or a list of 1 to 2,000 events."""


class NativeEventsScheme(OpenApiSerializerExtension):
    target_class = NativeEventsSerializer

    def map_serializer(self, auto_schema, direction):
        event = auto_schema.resolve_serializer(NativeEventSerializer, direction).ref
        listed = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_MESSAGES, "items": event}
        return {"oneOf": [event, listed]}


class NativeEventScheme(OpenApiSerializerExtension):
    target_class = NativeEventSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["anyOf"] = [{"required": ["external_id"]}, {"required": ["anonymous_id"]}]
        return schema


@extend_schema_field(
    {
        "type": "object",
        "properties": {purpose: {"type": "boolean"} for purpose in ConsentPurpose.values},
        "additionalProperties": False,
    }
)
class ConsentsField(serializers.DictField):
    child = StrictBooleanField()


def _or_blank(schema: dict) -> dict:
    # anyOf, not the oneOf drf-spectacular writes for blank-able fields: a validator that does not know a custom
    # format finds "" in both branches, which oneOf forbids.
    return {"anyOf": [{"type": "string", **schema}, {"type": "string", "maxLength": 0}]}


@extend_schema_field(_or_blank({"format": "phone", "maxLength": 40}))
class PhoneField(StrictCharField):
    """A phone number in any format (Korean by default) or blank; stored in E.164. The schema's custom format
    ``phone`` means a number libphonenumber calls valid."""


@extend_schema_field(_or_blank({"enum": sorted(zoneinfo.available_timezones())}))
class TimeZoneField(StrictCharField):
    """An IANA time zone name such as Asia/Seoul, or blank."""


class ContactWriteSerializer(serializers.Serializer):
    email = StrictEmailField(required=False, allow_blank=True, max_length=254)
    phone = PhoneField(required=False, allow_blank=True, max_length=40, help_text=_("Any format; stored in E.164."))
    name = StrictCharField(required=False, allow_blank=True, max_length=200)
    locale = StrictCharField(required=False, allow_blank=True, max_length=20)
    time_zone = TimeZoneField(
        required=False, allow_blank=True, max_length=64, help_text=_("IANA time zone such as Asia/Seoul.")
    )
    attributes = serializers.DictField(required=False, help_text=_("Merged into the contact's attributes."))
    consents = ConsentsField(
        required=False, help_text=_("Consent per purpose: email, sms, push, kakao, ads, ads_night.")
    )

    def validate_phone(self, value):
        if not value:
            return value
        try:
            return normalize_phone(value)
        except InvalidPhoneNumber as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_email(self, value):
        if not value:
            return value
        return email_domain_lowercased(value)

    def validate_time_zone(self, value):
        if value:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise serializers.ValidationError(_("Not an IANA time zone such as Asia/Seoul.")) from None
        return value

    def validate_consents(self, value):
        unknown = set(value) - set(ConsentPurpose.values)
        if unknown:
            raise serializers.ValidationError(
                _("Unknown purpose(s): %(names)s.") % {"names": ", ".join(sorted(unknown))}
            )
        return value


class ConsentStateSerializer(serializers.Serializer):
    purpose = serializers.CharField()
    granted = serializers.BooleanField()
    changed_at = serializers.DateTimeField()
    source = serializers.CharField()


class ContactSerializer(serializers.ModelSerializer):
    consents = ConsentStateSerializer(many=True, read_only=True)
    tags = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Contact
        fields = [
            "external_id",
            "email",
            "phone",
            "name",
            "locale",
            "time_zone",
            "attributes",
            "consents",
            "tags",
            "order_count",
            "total_revenue",
            "first_order_at",
            "last_order_at",
            "first_seen_at",
            "last_seen_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class CartSerializer(serializers.ModelSerializer):
    updated_at = serializers.DateTimeField(allow_null=True, help_text="null when the contact has no cart yet.")

    class Meta:
        model = Cart
        fields = ["items", "value", "currency", "updated_at", "checkout_started_at"]


class CouponSerializer(serializers.ModelSerializer):
    class Meta:
        model = Coupon
        fields = ["code", "discount_amount", "discount_percent", "issued_at", "expires_at", "redeemed_at"]


class OrderSerializer(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = ["order_id", "total", "currency", "items", "placed_at"]
