"""``POST /api/v1/journeys/<id>/enrollments``: the "API call" trigger (scope ``write_events``).

Body: ``{"external_ids": ["user-1", …], "data": {…}}`` (at most 1,000 ids; ``data``: the trigger data, available
to messages as ``#{이벤트.…}``). Contacts enter by the journey's entry rules (audience, re-entry); the answer says
who entered, who was left out by the rules and which ids are unknown.
"""

from __future__ import annotations

from django.db import transaction
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from crm.api.exceptions import error_response
from crm.api.serializers import ErrorSerializer
from crm.api.views import ERRORS, ApiKeyView
from crm.models import ApiKey, Contact
from journeys.models import Enrollment, Journey
from journeys.services.enrollment import journey_enroll_contacts

MAX_IDS = 1000


class EnrollSerializer(serializers.Serializer):
    external_ids = serializers.ListField(
        child=serializers.CharField(max_length=255, trim_whitespace=False),
        min_length=1,
        max_length=MAX_IDS,
        help_text=gettext_lazy("The contacts' external ids (at most 1,000)."),
    )
    data = serializers.DictField(
        required=False, default=dict, help_text=gettext_lazy('Trigger data, e.g. {"product_name": "니트"}.')
    )


class JourneyEnrollView(ApiKeyView):
    required_scope = ApiKey.Scope.WRITE_EVENTS

    @extend_schema(
        tags=["journeys"],
        request=EnrollSerializer,
        responses={
            201: inline_serializer(
                "EnrollResult",
                {
                    "entered": serializers.ListField(child=serializers.CharField()),
                    "not_entered": serializers.ListField(child=serializers.CharField()),
                    "unknown": serializers.ListField(child=serializers.CharField()),
                },
            ),
            **ERRORS,
            404: OpenApiResponse(ErrorSerializer, description="No journey with this id."),
            409: OpenApiResponse(ErrorSerializer, description="The journey is not active or not API-triggered."),
        },
        summary="Enroll contacts in a journey triggered by API calls.",
    )
    def post(self, request, journey_id: int):
        journey = Journey.objects.filter(pk=journey_id).select_related("entry_segment", "first_step").first()
        if journey is None:
            return error_response(message=_("No journey with this id."), status_code=404, code="not_found")
        if journey.trigger != Journey.Trigger.API or journey.status != Journey.Status.ACTIVE:
            return error_response(
                message=_("This journey is not an active journey triggered by API calls."),
                status_code=409,
                code="conflict",
            )
        serializer = EnrollSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ids = list(dict.fromkeys(serializer.validated_data["external_ids"]))
        contacts = dict(Contact.objects.not_erased().filter(external_id__in=ids).values_list("external_id", "id"))
        with transaction.atomic():
            entered_ids = journey_enroll_contacts(
                journey=journey, contact_ids=list(contacts.values()), context=serializer.validated_data["data"]
            )
            entered_contacts = set(Enrollment.objects.filter(id__in=entered_ids).values_list("contact_id", flat=True))
        by_id = {cid: ext for ext, cid in contacts.items()}
        entered = sorted(by_id[c] for c in entered_contacts)
        return Response(
            {
                "entered": entered,
                "not_entered": sorted(set(contacts) - set(entered)),
                "unknown": [i for i in ids if i not in contacts],
            },
            status=status.HTTP_201_CREATED,
        )


urlpatterns = [path("<int:journey_id>/enrollments", JourneyEnrollView.as_view(), name="journey-enrollments")]
