"""Serializers: validation and shape only. The tracking messages are validated by ``crm.ingest.messages`` (the hot
path); the serializers below for them exist to describe the API in the OpenAPI schema."""

from __future__ import annotations

import zoneinfo

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from crm.models import Cart, ConsentPurpose, Contact, Coupon, Order
from crm.phones import InvalidPhoneNumber, normalize_phone

# --- Segment-compatible tracking messages (schema only) ------------------------------------------------------------


class _MessageBase(serializers.Serializer):
    userId = serializers.CharField(
        required=False, max_length=255, help_text="The shop's user id. userId or anonymousId is required."
    )
    anonymousId = serializers.CharField(required=False, max_length=255)
    messageId = serializers.CharField(
        required=False, max_length=255, help_text="Unique per source; a message sent again with it is stored once."
    )
    timestamp = serializers.DateTimeField(required=False)
    originalTimestamp = serializers.DateTimeField(required=False)
    sentAt = serializers.DateTimeField(required=False)
    context = serializers.DictField(required=False)
    integrations = serializers.DictField(required=False)


class TrackMessageSerializer(_MessageBase):
    event = serializers.CharField(max_length=200)
    properties = serializers.DictField(required=False)


class PageMessageSerializer(_MessageBase):
    name = serializers.CharField(required=False, max_length=200)
    category = serializers.CharField(required=False)
    properties = serializers.DictField(required=False)


class IdentifyMessageSerializer(_MessageBase):
    traits = serializers.DictField(
        required=False,
        help_text="email, phone, name/firstName/lastName, locale, timezone, consents {sms: true, ...}; "
        "any other trait becomes a contact attribute.",
    )


class GroupMessageSerializer(_MessageBase):
    groupId = serializers.CharField(max_length=255)
    traits = serializers.DictField(required=False)


class AliasMessageSerializer(_MessageBase):
    previousId = serializers.CharField(max_length=255)


class BatchItemSerializer(_MessageBase):
    type = serializers.ChoiceField(choices=["track", "page", "screen", "identify", "group", "alias"])
    event = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    properties = serializers.DictField(required=False)
    traits = serializers.DictField(required=False)
    groupId = serializers.CharField(required=False)
    previousId = serializers.CharField(required=False)


class BatchSerializer(serializers.Serializer):
    batch = BatchItemSerializer(many=True)
    context = serializers.DictField(required=False, help_text="Merged into each message's context.")
    integrations = serializers.DictField(required=False)
    sentAt = serializers.DateTimeField(required=False)
    writeKey = serializers.CharField(required=False, help_text="The write key, if not sent as HTTP Basic user name.")


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


class NativeEventSerializer(serializers.Serializer):
    """The shop's own event format for POST /api/v1/events (one object or a list)."""

    message_id = serializers.CharField(max_length=255, help_text=_("Unique per source: the idempotency key."))
    external_id = serializers.CharField(required=False, max_length=255)
    anonymous_id = serializers.CharField(required=False, max_length=255)
    name = serializers.CharField(max_length=200)
    properties = serializers.DictField(required=False)
    occurred_at = serializers.DateTimeField(required=False)

    def validate(self, attrs):
        if not attrs.get("external_id") and not attrs.get("anonymous_id"):
            raise serializers.ValidationError({"external_id": [_("external_id or anonymous_id is required.")]})
        return attrs


class ContactWriteSerializer(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    locale = serializers.CharField(required=False, allow_blank=True, max_length=20)
    time_zone = serializers.CharField(required=False, allow_blank=True, max_length=64)
    attributes = serializers.DictField(required=False)
    consents = serializers.DictField(
        child=serializers.BooleanField(),
        required=False,
        help_text=_("Consent per purpose: email, sms, push, kakao, ads, ads_night."),
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
        local, _sep, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}"

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
