"""Satisfaction surveys on a signed link: a journey's message links to ``/s/<token>``, the contact answers a score
(1–5) and a comment, and the answer becomes the run's trigger data (``#{이벤트.survey_score}``, a branch on
``event.survey_score``) and a "Survey Answered" event on the contact's timeline.

The token is ``django.core.signing`` of the enrollment id with its own salt: it cannot be forged or pointed at
another run, and expires after ``SURVEY_MAX_AGE``. A run is answered once.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.models import Event, Source, UnprocessedEvent
from journeys.models import Enrollment

SALT = "journeys.survey"
SURVEY_MAX_AGE = timedelta(days=30)
SURVEY_EVENT = "Survey Answered"


def survey_token(enrollment_id: int) -> str:
    return signing.dumps({"e": enrollment_id}, salt=SALT, compress=True)


def survey_url(enrollment_id: int) -> str:
    return f"{settings.LOOP_PUBLIC_URL}/s/{survey_token(enrollment_id)}"


def survey_enrollment(token: str) -> Enrollment:
    """The run a token belongs to; ValidationError when it is forged, expired or the run is gone."""
    try:
        data = signing.loads(token, salt=SALT, max_age=SURVEY_MAX_AGE)
    except signing.SignatureExpired:
        raise ValidationError(_("This survey link has expired.")) from None
    except signing.BadSignature:
        raise ValidationError(_("This survey link is not valid.")) from None
    enrollment = Enrollment.objects.select_related("journey", "contact").filter(pk=data.get("e")).first()
    if enrollment is None:
        raise ValidationError(_("This survey link is not valid."))
    return enrollment


def survey_answer(*, token: str, score: int, comment: str = "") -> Enrollment:
    """Record the answer: into the run's trigger data and as a "Survey Answered" event (queued for processing, so
    journeys and campaigns see it like any event). Once per run."""
    if not 1 <= score <= 5:
        raise ValidationError({"score": [_("Choose a score from 1 to 5.")]})
    comment = comment.strip()[:2000]
    with transaction.atomic():
        enrollment = survey_enrollment(token)
        enrollment = Enrollment.objects.select_for_update().get(pk=enrollment.pk)
        if "survey_score" in enrollment.context:
            raise ValidationError(_("This survey was already answered. Thank you!"))
        now = timezone.now()
        enrollment.context = {**enrollment.context, "survey_score": score, "survey_comment": comment}
        enrollment.save(update_fields=["context"])
        source, _created = Source.objects.get_or_create(name="surveys", defaults={"kind": Source.Kind.SERVER})
        event = Event.objects.create(
            contact_id=enrollment.contact_id,
            source=source,
            message_id=f"survey:{enrollment.pk}",
            name=SURVEY_EVENT,
            properties={"score": score, "comment": comment, "journey": enrollment.journey.name},
            occurred_at=now,
            received_at=now,
        )
        UnprocessedEvent.objects.create(event_id=event.pk)
    return enrollment
