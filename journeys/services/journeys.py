"""Journey lifecycle (activate, pause, resume, archive), graph edits and retrying failed enrollments."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from journeys.models import Enrollment, EnrollmentLog, Journey


def journey_problems(*, journey: Journey) -> list[str]:
    """What prevents the journey from running (empty when it can be activated)."""
    problems: list[str] = []
    try:
        journey.full_clean()
    except ValidationError as exc:
        problems.extend(exc.messages)
    steps = list(journey.steps.all())
    if not steps:
        problems.append(_("The journey has no steps."))
    for step in steps:
        try:
            step.full_clean(exclude=["journey"])
        except ValidationError as exc:
            problems.extend(f"{step.name}: {message}" for message in exc.messages)
        for target in (step.next_step, step.no_step):
            if target is not None and target.journey_id != journey.pk:
                problems.append(_("%(step)s: an edge leads to another journey's step.") % {"step": step.name})
    return problems


def _require(journey: Journey, allowed: set[str], action: str) -> None:
    if journey.status not in allowed:
        raise ValidationError(
            _("%(action)s: not possible while the journey is %(status)s.")
            % {"action": action, "status": journey.get_status_display()}
        )


@transaction.atomic
def journey_activate(*, journey: Journey) -> Journey:
    """Draft or paused → active (after checking it can run). Held enrollments continue from where they are."""
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    _require(journey, {Journey.Status.DRAFT, Journey.Status.PAUSED}, _("Activate"))
    problems = journey_problems(journey=journey)
    if problems:
        raise ValidationError(problems)
    journey.status = Journey.Status.ACTIVE
    journey.save(update_fields=["status", "updated_at"])
    return journey


@transaction.atomic
def journey_pause(*, journey: Journey) -> Journey:
    """Active → paused: nobody enters, and enrollments stay where they are until the journey is resumed."""
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    _require(journey, {Journey.Status.ACTIVE}, _("Pause"))
    journey.status = Journey.Status.PAUSED
    journey.save(update_fields=["status", "updated_at"])
    return journey


def journey_resume(*, journey: Journey) -> Journey:
    return journey_activate(journey=journey)


@transaction.atomic
def journey_archive(*, journey: Journey, now: datetime | None = None) -> Journey:
    """End the journey: open enrollments exit ("journey archived")."""
    from journeys.services.enrollment import enrollments_end

    now = now or timezone.now()
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    journey.status = Journey.Status.ARCHIVED
    journey.save(update_fields=["status", "updated_at"])
    ids = list(journey.enrollments.filter(status__in=Enrollment.OPEN).values_list("id", flat=True))
    enrollments_end(ids=ids, status=Enrollment.Status.EXITED, reason="journey archived", now=now)
    return journey


def journey_steps_changed(*, journey: Journey) -> None:
    """Count a saved change of the graph (enrollments and log lines record the version they ran with)."""
    Journey.objects.filter(pk=journey.pk).update(version=F("version") + 1)


@transaction.atomic
def enrollments_retry(*, ids: Iterable[int], now: datetime | None = None) -> int:
    """Failed enrollments run their failed step again at the next tick (attempts reset). A contact who meanwhile
    entered the journey again keeps that enrollment: the failed one is then left as it is. Returns how many."""
    now = now or timezone.now()
    retried = 0
    for enrollment in Enrollment.objects.select_for_update().filter(id__in=list(ids), status=Enrollment.Status.FAILED):
        key = None
        if enrollment.journey.reentry != Journey.Reentry.EVERY_TIME:
            key = f"c:{enrollment.contact_id}"
            if Enrollment.objects.filter(journey_id=enrollment.journey_id, entry_key=key).exists():
                continue
        else:
            key = f"r:{enrollment.pk}"
        Enrollment.objects.filter(pk=enrollment.pk).update(
            status=Enrollment.Status.ACTIVE,
            next_run_at=now,
            attempts=0,
            finished_at=None,
            exit_reason="",
            entry_key=key,
            claim="",
            claimed_at=None,
        )
        EnrollmentLog.objects.create(
            enrollment=enrollment,
            step=enrollment.current_step,
            step_name=enrollment.current_step.name if enrollment.current_step else "",
            version=enrollment.version,
            action="retry",
            detail="retried by an operator",
            at=now,
        )
        retried += 1
    return retried
