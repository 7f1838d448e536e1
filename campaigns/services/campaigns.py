"""Campaign lifecycle: draft → scheduled → running → paused / completed / cancelled, with a change log.

Every transition is a service here; the admin's buttons and actions call them. Each records a
``CampaignChange`` (who, when, what) and keeps the campaign's PeriodicTask in step
(``schedules.campaign_schedule_sync``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.channels import channel
from campaigns.models import Campaign, CampaignChange, Run, Send, SkipReason, Variant
from campaigns.personalization import template_errors
from campaigns.services import schedules
from campaigns.services.runs import run_create
from crm.audit import audit_record
from crm.audit import diff as audit_diff

#: Fields whose changes are logged.
TRACKED_FIELDS = [
    f.name
    for f in Campaign._meta.concrete_fields
    if f.name not in {"id", "created_at", "updated_at", "periodic_task", "created_by"}
]


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value if isinstance(value, str | int | float | bool | type(None) | dict | list) else str(value)


def campaign_snapshot(campaign: Campaign) -> dict[str, Any]:
    return {
        name: _json(getattr(campaign, f"{name}_id" if name.endswith("segment") else name)) for name in TRACKED_FIELDS
    }


def campaign_record_change(
    *, campaign: Campaign, user=None, action: str, diff: dict | None = None, now: datetime | None = None
) -> CampaignChange:
    """The campaign's own change log (shown on its page; ``now``: when, default now) and the audit trail (kept after
    the campaign is deleted, recorded when it happens)."""
    audit_record(action=action, instance=campaign, changes=diff or {}, user=user if getattr(user, "pk", None) else None)
    return CampaignChange.objects.create(
        campaign=campaign,
        changed_by=user if getattr(user, "pk", None) else None,
        changed_at=now or timezone.now(),
        action=action,
        diff=diff or {},
    )


def variant_errors(*, campaign: Campaign, variant: Variant) -> dict[str, list[str]]:
    """Template problems per content field of a variant (unknown variables, syntax)."""
    errors: dict[str, list[str]] = {}
    for name in channel(campaign.channel).content_fields:
        text = getattr(variant, name, "") or ""
        found = template_errors(text, html=name == "html", extra_variables=(variant.variables or {}).keys())
        if found:
            errors[name] = found
    return errors


def campaign_problems(*, campaign: Campaign, now: datetime | None = None) -> list[str]:
    """Why the campaign cannot be scheduled yet (empty when it can)."""
    now = now or timezone.now()
    problems = []
    if campaign.kind == Campaign.Kind.BROADCAST and campaign.segment_id is None:
        problems.append(_("Choose an audience segment."))
    variants = list(campaign.variants.all())
    if not variants:
        problems.append(_("Add at least one variant."))
    for variant in variants:
        for field, errors in variant_errors(campaign=campaign, variant=variant).items():
            problems.extend(f"{variant.name} / {field}: {error}" for error in errors)
        if not (variant.body or variant.html):
            problems.append(_("Variant %(name)s has no text.") % {"name": variant.name})
    if campaign.schedule == Campaign.Schedule.ONCE and campaign.send_at is None:
        problems.append(_("Set the date and time to send at."))
    if campaign.schedule == Campaign.Schedule.RECURRING:
        try:
            schedules.parse_cron(campaign)
        except ValidationError as exc:
            problems.extend(str(m) for m in exc.messages)
    if campaign.local_time and campaign.schedule == Campaign.Schedule.NOW:
        problems.append(_("Per-contact local time needs a one-time or recurring schedule."))
    if campaign.auto_winner and len(variants) < 2:
        problems.append(_("An automatic winner needs at least two variants."))
    if campaign.auto_winner and not campaign.goal_event:
        problems.append(_("An automatic winner needs a goal event."))
    from campaigns.content_rules import campaign_content_errors

    problems.extend(campaign_content_errors(campaign))
    return problems


def _set_status(
    campaign: Campaign, status: str, *, user, action: str, extra: dict | None = None, now: datetime | None = None
) -> Campaign:
    before = campaign.status
    campaign.status = status
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    schedules.campaign_schedule_sync(campaign=campaign)
    campaign_record_change(
        campaign=campaign, user=user, action=action, diff={"status": [before, status], **(extra or {})}, now=now
    )
    return campaign


def _require(campaign: Campaign, allowed: set[str], action: str) -> None:
    if campaign.status not in allowed:
        raise ValidationError(
            _("%(action)s: not possible while the campaign is %(status)s.")
            % {"action": action, "status": campaign.get_status_display()}
        )


@transaction.atomic
def campaign_schedule(*, campaign: Campaign, user=None, now: datetime | None = None) -> Campaign:
    """Draft → scheduled (recurring: its PeriodicTask is created; send now: the run starts at once)."""
    now = now or timezone.now()
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _require(campaign, {Campaign.Status.DRAFT}, _("Schedule"))
    problems = campaign_problems(campaign=campaign, now=now)
    if problems:
        raise ValidationError(problems)
    if campaign.kind == Campaign.Kind.TRIGGERED:
        return _set_status(campaign, Campaign.Status.RUNNING, user=user, action="activated", now=now)
    _set_status(campaign, Campaign.Status.SCHEDULED, user=user, action="scheduled", now=now)
    if campaign.schedule == Campaign.Schedule.NOW:
        _start_now(campaign, now=now)
    return campaign


def _start_now(campaign: Campaign, *, now: datetime) -> Run:
    from campaigns.tasks import start_run

    run, _created = run_create(campaign=campaign, scheduled_for=now)
    transaction.on_commit(lambda: start_run.delay(run.pk))
    return run


@transaction.atomic
def campaign_send_now(*, campaign: Campaign, user=None, now: datetime | None = None) -> Run:
    """An extra run right now, whatever the schedule (a draft is scheduled first)."""
    now = now or timezone.now()
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _require(campaign, {Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.COMPLETED}, _("Send now"))
    if campaign.kind != Campaign.Kind.BROADCAST:
        raise ValidationError(_("Only broadcasts are sent to a segment."))
    problems = campaign_problems(campaign=campaign, now=now)
    if problems:
        raise ValidationError(problems)
    if campaign.status != Campaign.Status.SCHEDULED:
        _set_status(campaign, Campaign.Status.SCHEDULED, user=user, action="send_now")
    else:
        campaign_record_change(campaign=campaign, user=user, action="send_now")
    return _start_now(campaign, now=now)


@transaction.atomic
def campaign_pause(*, campaign: Campaign, user=None) -> Campaign:
    """Stop: no new runs (the PeriodicTask is disabled), unsent sends wait in the queue."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _require(campaign, {Campaign.Status.SCHEDULED, Campaign.Status.RUNNING}, _("Pause"))
    return _set_status(campaign, Campaign.Status.PAUSED, user=user, action="paused")


@transaction.atomic
def campaign_resume(*, campaign: Campaign, user=None) -> Campaign:
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _require(campaign, {Campaign.Status.PAUSED}, _("Resume"))
    active = campaign.runs.filter(status=Run.Status.SENDING).exists() or campaign.kind == Campaign.Kind.TRIGGERED
    return _set_status(
        campaign, Campaign.Status.RUNNING if active else Campaign.Status.SCHEDULED, user=user, action="resumed"
    )


@transaction.atomic
def campaign_cancel(*, campaign: Campaign, user=None, now: datetime | None = None) -> Campaign:
    """Stop for good: the PeriodicTask is deleted, unsent sends are skipped ("cancelled"), open runs end."""
    now = now or timezone.now()
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _require(
        campaign,
        {Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.PAUSED},
        _("Cancel"),
    )
    skipped = Send.objects.filter(
        campaign=campaign, status__in=[Send.Status.WAITING, Send.Status.QUEUED, Send.Status.HELD]
    ).update(status=Send.Status.SKIPPED, skip_reason=SkipReason.CANCELLED, finished_at=now)
    _set_status(campaign, Campaign.Status.CANCELLED, user=user, action="cancelled", extra={"skipped": skipped})
    from campaigns.services.runs import run_counts

    for run in campaign.runs.filter(status__in=[Run.Status.PENDING, Run.Status.SENDING]):
        if not run.sends.filter(status=Send.Status.SENDING).exists():
            run.status, run.finished_at = Run.Status.CANCELLED, now
            run.counts = run_counts(run=run)
            run.save(update_fields=["status", "finished_at", "counts"])
    return campaign


@transaction.atomic
def campaign_rerandomize(*, campaign: Campaign, user=None) -> Campaign:
    """New variant/holdout assignment for the next runs."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    before = campaign.assignment_seed
    campaign.assignment_seed = before + 1
    Campaign.objects.filter(pk=campaign.pk).update(assignment_seed=campaign.assignment_seed)
    campaign_record_change(
        campaign=campaign,
        user=user,
        action="rerandomized",
        diff={"assignment_seed": [before, campaign.assignment_seed]},
    )
    return campaign


@transaction.atomic
def campaign_save(
    *, campaign: Campaign, user=None, before: dict[str, Any] | None = None, now: datetime | None = None
) -> Campaign:
    """Save the campaign's edited fields, log what changed, and bring its PeriodicTask in line. ``now`` is when
    (default: now): a new campaign's creation time and the change log's time."""
    now = now or timezone.now()
    created = campaign.pk is None
    if created:
        campaign.created_by = user if getattr(user, "pk", None) else None
        campaign.created_at = now
    if campaign.schedule == Campaign.Schedule.RECURRING:
        schedules.parse_cron(campaign)
    campaign.save()
    after = campaign_snapshot(campaign)
    diff = after if created else audit_diff(before or {}, after)
    if created or diff:
        campaign_record_change(
            campaign=campaign, user=user, action="created" if created else "changed", diff=diff, now=now
        )
    schedules.campaign_schedule_sync(campaign=campaign)
    return campaign


@transaction.atomic
def campaign_delete(*, campaign: Campaign) -> None:
    """Delete a campaign with its runs, sends and its PeriodicTask/CrontabSchedule."""
    campaign_id = campaign.pk
    audit_record(action="deleted", instance=campaign, changes=audit_diff(campaign_snapshot(campaign), {}))
    campaign.delete()
    schedules.campaign_schedule_remove(campaign_id=campaign_id)
