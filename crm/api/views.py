"""The shop's REST API: Segment-compatible tracking endpoints and native resources. Views call one service."""

from __future__ import annotations

from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.api.authentication import HasScope, WriteKeyAuthentication, view_scope
from crm.api.exceptions import error_response
from crm.api.parsers import TrackingJSONParser, TrackingTextParser
from crm.api.serializers import (
    AliasMessageSerializer,
    BatchSerializer,
    CartSerializer,
    ContactSerializer,
    ContactWriteSerializer,
    CouponSerializer,
    ErrorSerializer,
    GroupMessageSerializer,
    IdentifyMessageSerializer,
    NativeEventSerializer,
    NativeEventsSerializer,
    OrderSerializer,
    PageMessageSerializer,
    TrackingResponseSerializer,
    TrackMessageSerializer,
)
from crm.api.throttling import ApiKeyThrottle
from crm.blanks import TRIMMED_ID_PATTERN, strip_blanks
from crm.ingest.messages import MAX_BATCH_BYTES, MAX_ID_LENGTH, MAX_MESSAGE_BYTES
from crm.models import ApiKey, Cart, Consent, Contact
from crm.services.contacts import contact_erase, contact_upsert
from crm.services.tracking import MAX_BATCH_MESSAGES, PayloadError, tracking_ingest

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid body; errors by field or by message index."),
    401: OpenApiResponse(ErrorSerializer, description="Missing, invalid or revoked API key."),
    403: OpenApiResponse(ErrorSerializer, description="The key lacks the scope."),
    429: OpenApiResponse(ErrorSerializer, description="Rate limited; retry after the Retry-After seconds."),
}
CONTACT_ERRORS = {**ERRORS, 404: OpenApiResponse(ErrorSerializer, description="No contact has this external id.")}
#: The id ``PUT /contacts/{external_id}`` accepts (anything else is answered 400).
NEW_EXTERNAL_ID = OpenApiParameter(
    "external_id",
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": TRIMMED_ID_PATTERN},
    OpenApiParameter.PATH,
    description="The shop's id of the contact: 1 to 255 characters, without NUL, neither starting nor ending with a "
    "blank (what \\s matches in JSON Schema patterns, i.e. what JavaScript's trim() removes).",
)


class ScopedAutoSchema(AutoSchema):
    """Each operation's description ends with the API key scope it needs."""

    def get_description(self):
        description = super().get_description()
        scope = view_scope(self.view, self.method)
        if scope is None:
            return description
        needs = f"Needs an API key with the scope `{scope}`."
        return f"{description}\n\n{needs}" if description else needs


class BodyRequiredAutoSchema(ScopedAutoSchema):
    """The request body is required even when no single field of it is (a message needs userId *or* anonymousId)."""

    def _get_request_body(self, direction="request"):
        body = super()._get_request_body(direction)
        if body is not None:
            body["required"] = True
        return body


class ApiKeyView(APIView):
    schema = ScopedAutoSchema()
    authentication_classes = [WriteKeyAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyThrottle]


class TrackingView(ApiKeyView):
    """Base of the Segment HTTP Tracking API endpoints."""

    schema = BodyRequiredAutoSchema()
    required_scope = ApiKey.Scope.WRITE_EVENTS
    parser_classes = [TrackingJSONParser, TrackingTextParser]
    message_type: str | None = None
    max_body_bytes = MAX_MESSAGE_BYTES

    def post(self, request):
        try:
            result = tracking_ingest(
                source=request.auth.source,
                payload=request.data,
                endpoint=self.message_type or "batch",
                message_type=self.message_type,
            )
        except PayloadError as exc:
            return error_response(message=exc.message, errors=exc.errors)
        return Response(result.as_response(), status=status.HTTP_200_OK)


def _tracking_schema(serializer, summary: str):
    return extend_schema(
        request=serializer,
        responses={200: TrackingResponseSerializer, **ERRORS},
        summary=summary,
        tags=["tracking"],
    )


@_tracking_schema(BatchSerializer, "Send many messages at once (Segment batch).")
class BatchView(TrackingView):
    max_body_bytes = MAX_BATCH_BYTES


@_tracking_schema(TrackMessageSerializer, "Record an action (Segment track).")
class TrackView(TrackingView):
    message_type = "track"


@_tracking_schema(IdentifyMessageSerializer, "Identify a contact and set traits (Segment identify).")
class IdentifyView(TrackingView):
    message_type = "identify"


@_tracking_schema(PageMessageSerializer, "Record a page view (Segment page).")
class PageView(TrackingView):
    message_type = "page"


@_tracking_schema(PageMessageSerializer, "Record an app screen view (Segment screen).")
class ScreenView(TrackingView):
    message_type = "screen"


@_tracking_schema(AliasMessageSerializer, "Merge a previous id into a user (Segment alias).")
class AliasView(TrackingView):
    message_type = "alias"


@_tracking_schema(GroupMessageSerializer, "Associate a contact with a group (Segment group).")
class GroupView(TrackingView):
    message_type = "group"


@extend_schema(
    request=NativeEventsSerializer,
    responses={200: TrackingResponseSerializer, **ERRORS},
    summary="Record one event or a list of events in the native format.",
    tags=["events"],
)
class EventsView(ApiKeyView):
    schema = BodyRequiredAutoSchema()
    required_scope = ApiKey.Scope.WRITE_EVENTS
    parser_classes = [TrackingJSONParser]
    max_body_bytes = MAX_BATCH_BYTES

    def post(self, request):
        data = request.data
        items = data if isinstance(data, list) else [data]
        if not items or len(items) > MAX_BATCH_MESSAGES:
            return error_response(
                message=_("Send one event or a list of 1 to %(n)d events.") % {"n": MAX_BATCH_MESSAGES}
            )
        serializer = NativeEventSerializer(data=items, many=True)
        if not serializer.is_valid():
            found = serializer.errors
            pairs = found.items() if isinstance(found, dict) else enumerate(found)
            errors = [{"index": i, "errors": e} for i, e in sorted(pairs) if e]
            return error_response(message=_("Some events are invalid; nothing was stored."), errors=errors)
        batch = []
        for item in serializer.validated_data:
            message = {
                "type": "track",
                "messageId": item["message_id"],
                "event": item["name"],
                "properties": item.get("properties", {}),
            }
            if item.get("external_id"):
                message["userId"] = item["external_id"]
            if item.get("anonymous_id"):
                message["anonymousId"] = item["anonymous_id"]
            if item.get("occurred_at"):
                message["timestamp"] = item["occurred_at"].isoformat()
            batch.append(message)
        try:
            result = tracking_ingest(source=request.auth.source, payload={"batch": batch}, endpoint="events")
        except PayloadError as exc:
            return error_response(message=exc.message, errors=exc.errors)
        return Response(result.as_response())


class ContactCursorPagination(CursorPagination):
    """A page size that is not a positive integer is answered 400 (DRF would silently use the default size). A
    cursor this API did not hand out is answered 404, as DRF does."""

    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "page_size"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
            raise ValidationError({self.page_size_query_param: [_("Must be a positive integer.")]})
        return min(int(raw), self.max_page_size)


def _contacts():
    return Contact.objects.not_erased().prefetch_related(
        Prefetch("consents", queryset=Consent.objects.order_by("purpose")), "tags"
    )


def _not_erased_contact(queryset, external_id: str) -> Contact:
    # No stored external id contains NUL (PostgreSQL cannot even compare with one): such a path names no contact.
    if "\x00" in external_id:
        raise Http404
    return get_object_or_404(queryset, external_id=external_id)


@extend_schema(
    tags=["contacts"],
    parameters=[
        OpenApiParameter("email", str, description="Exact email."),
        OpenApiParameter("phone", str, description="Phone in any format (normalized to E.164)."),
        OpenApiParameter("updated_since", OpenApiTypes.DATETIME, description="ISO 8601; contacts changed since then."),
        OpenApiParameter(
            "page_size", {"type": "integer", "minimum": 1}, description="Contacts per page (at most 1000; 100)."
        ),
    ],
    responses={
        200: ContactSerializer(many=True),
        **ERRORS,
        404: OpenApiResponse(ErrorSerializer, description="The cursor is not one this API handed out."),
    },
)
class ContactListView(ApiKeyView, generics.ListAPIView):
    required_scope = ApiKey.Scope.READ_CONTACTS
    serializer_class = ContactSerializer
    pagination_class = ContactCursorPagination

    def get_queryset(self):
        from crm.selectors import contact_filter

        params = self.request.query_params
        if "updated_since" in params and not params["updated_since"].strip():
            raise ValidationError({"updated_since": [_("Must be an ISO 8601 date and time.")]})
        if any("\x00" in value for _name, values in params.lists() for value in values):
            # No stored email or id contains NUL (PostgreSQL cannot even compare with one): nothing matches.
            return _contacts().none()
        return contact_filter(queryset=_contacts(), params=params)


class ContactDetailView(ApiKeyView):
    parser_classes = [TrackingJSONParser]
    required_scopes = {
        "GET": ApiKey.Scope.READ_CONTACTS,
        # Not write_events: a key embedded in a web page or app (extractable) must not overwrite or erase contacts.
        "PUT": ApiKey.Scope.WRITE_CONTACTS,
        "DELETE": ApiKey.Scope.WRITE_CONTACTS,
    }

    @extend_schema(tags=["contacts"], responses={200: ContactSerializer, **CONTACT_ERRORS})
    def get(self, request, external_id: str):
        contact = _not_erased_contact(_contacts(), external_id)
        return Response(ContactSerializer(contact).data)

    @extend_schema(
        tags=["contacts"],
        parameters=[NEW_EXTERNAL_ID],
        request=ContactWriteSerializer,
        responses={200: ContactSerializer, 201: ContactSerializer, **ERRORS},
        summary="Create or update the contact with this external id.",
    )
    def put(self, request, external_id: str):
        if len(external_id) > MAX_ID_LENGTH:
            return error_response(message=_("The external id is longer than 255 characters."))
        if external_id != strip_blanks(external_id) or not external_id:
            return error_response(message=_("The external id must not be blank or start or end with spaces."))
        if "\x00" in external_id:
            return error_response(message=_("The external id may not contain NUL characters."))
        serializer = ContactWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        consents = values.pop("consents", None)
        contact, created = contact_upsert(
            external_id=external_id, values=values, consents=consents, source=f"api:{request.auth.source.name}"
        )
        contact = _contacts().get(pk=contact.pk)
        return Response(ContactSerializer(contact).data, status=201 if created else 200)

    @extend_schema(
        tags=["contacts"],
        responses={204: None, **CONTACT_ERRORS},
        summary="Erase the contact's personal data (right to erasure).",
    )
    def delete(self, request, external_id: str):
        contact = _not_erased_contact(Contact.objects.not_erased(), external_id)
        contact_erase(contact=contact, actor=f"api:{request.auth.source.name}")
        return Response(status=status.HTTP_204_NO_CONTENT)


class ContactCartView(ApiKeyView):
    required_scope = ApiKey.Scope.READ_CONTACTS

    @extend_schema(tags=["contacts"], responses={200: CartSerializer, **CONTACT_ERRORS})
    def get(self, request, external_id: str):
        contact = _not_erased_contact(Contact.objects.not_erased(), external_id)
        cart = Cart.objects.filter(contact=contact).first()
        if cart is None:
            return Response(
                {"items": [], "value": "0.00", "currency": "KRW", "updated_at": None, "checkout_started_at": None}
            )
        return Response(CartSerializer(cart).data)


class ContactCouponsView(ApiKeyView, generics.ListAPIView):
    required_scope = ApiKey.Scope.READ_CONTACTS
    serializer_class = CouponSerializer
    pagination_class = None

    @extend_schema(tags=["contacts"], responses={200: CouponSerializer(many=True), **CONTACT_ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        contact = _not_erased_contact(Contact.objects.not_erased(), self.kwargs["external_id"])
        return contact.coupons.order_by("-issued_at")[:500]


class ContactOrdersView(ContactCouponsView):
    serializer_class = OrderSerializer

    @extend_schema(tags=["contacts"], responses={200: OrderSerializer(many=True), **CONTACT_ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        contact = _not_erased_contact(Contact.objects.not_erased(), self.kwargs["external_id"])
        return contact.orders.order_by("-placed_at")[:500]
