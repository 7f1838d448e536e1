"""Celery tasks of the journeys app: thin wrappers around services (idempotent)."""

from __future__ import annotations

from celery import shared_task

from journeys.services.engine import journeys_tick


@shared_task(name="journeys.tick", ignore_result=True)
def tick() -> None:
    """From beat every JOURNEYS_TICK_SECONDS (and on commit after contacts entered): advance due enrollments."""
    journeys_tick()


@shared_task(name="journeys.survey_digest", ignore_result=True)
def survey_digest() -> None:
    """Weekly from beat: the survey answers of the last 7 days, summarized, to the team."""
    from journeys.services.digest import survey_digest_post

    survey_digest_post()
