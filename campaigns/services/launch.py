"""Safety rails around launching a campaign (schedule, send now): confirmation and approval by audience size.

- Above ``LOOP_LAUNCH_CONFIRM_THRESHOLD`` recipients the admin shows a confirmation page with the audience size and
  a rendered preview before the launch goes ahead (``launch_needs_confirmation``).
- Above ``LOOP_LAUNCH_APPROVAL_LIMIT`` recipients, a person without the ``campaigns.approve_launch`` permission (a
  Marketer) cannot launch: the launch becomes a pending ``LaunchApproval`` that an Admin approves (which performs
  the launch, in the Admin's name) or rejects with a note. One pending approval per campaign.

The audience size is the segment's current member count minus the excluded segment, before consent and the other
send-time checks (the run report gives the exact numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.models import Campaign, LaunchApproval
from campaigns.services import campaigns as lifecycle
from campaigns.services.runs import campaign_audience
from crm.audit import audit_record

APPROVE_PERMISSION = "campaigns.approve_launch"
LAUNCHES = {
    LaunchApproval.Action.SCHEDULE: lifecycle.campaign_schedule,
    LaunchApproval.Action.SEND_NOW: lifecycle.campaign_send_now,
}


def confirm_threshold() -> int:
    return int(getattr(settings, "LOOP_LAUNCH_CONFIRM_THRESHOLD", 1000))


def approval_limit() -> int:
    return int(getattr(settings, "LOOP_LAUNCH_APPROVAL_LIMIT", 50_000))


def campaign_audience_size(*, campaign: Campaign, now: datetime | None = None) -> int:
    """Members of the campaign's segment minus its excluded segment, now (0 for a triggered campaign)."""
    if campaign.kind != Campaign.Kind.BROADCAST or campaign.segment_id is None:
        return 0
    return campaign_audience(campaign, now=now or timezone.now()).count()


def launch_needs_confirmation(audience_size: int) -> bool:
    return audience_size > confirm_threshold()


def launch_needs_approval(*, user, audience_size: int) -> bool:
    return audience_size > approval_limit() and not user.has_perm(APPROVE_PERMISSION)


@dataclass(frozen=True)
class LaunchOutcome:
    launched: bool
    approval: LaunchApproval | None = None


def campaign_launch(*, campaign: Campaign, action: str, user, now: datetime | None = None) -> LaunchOutcome:
    """Launch now, or hold the launch for an Admin's approval when the audience is over the limit for ``user``."""
    if action not in LAUNCHES:
        raise ValueError(f"not a launch: {action!r}")
    size = campaign_audience_size(campaign=campaign, now=now)
    if launch_needs_approval(user=user, audience_size=size):
        return LaunchOutcome(
            launched=False, approval=launch_request(campaign=campaign, action=action, user=user, size=size)
        )
    LAUNCHES[action](campaign=campaign, user=user, now=now)
    return LaunchOutcome(launched=True)


@transaction.atomic
def launch_request(*, campaign: Campaign, action: str, user, size: int) -> LaunchApproval:
    """A pending approval for the campaign (the existing one if a launch is already waiting)."""
    problems = lifecycle.campaign_problems(campaign=campaign)
    if problems:
        raise ValidationError(problems)
    pending = LaunchApproval.objects.filter(campaign=campaign, status=LaunchApproval.Status.PENDING).first()
    if pending is not None:
        return pending
    try:
        with transaction.atomic():
            approval = LaunchApproval.objects.create(
                campaign=campaign, action=action, audience_size=size, requested_by=user
            )
    except IntegrityError:  # another request created it a moment ago
        return LaunchApproval.objects.get(campaign=campaign, status=LaunchApproval.Status.PENDING)
    audit_record(
        action="approval_requested",
        instance=campaign,
        changes={"launch": [None, action], "audience_size": [None, size]},
        user=user,
    )
    return approval


def _decide(approval_id: int, *, user, status: str, note: str, now: datetime) -> LaunchApproval:
    if not user.has_perm(APPROVE_PERMISSION):
        raise PermissionDenied(_("Only an Admin can approve or reject a launch."))
    approval = LaunchApproval.objects.select_for_update().select_related("campaign").get(pk=approval_id)
    if approval.status != LaunchApproval.Status.PENDING:
        raise ValidationError(_("This launch was already %(status)s.") % {"status": approval.get_status_display()})
    approval.status, approval.decided_by, approval.decided_at, approval.note = status, user, now, note
    approval.save(update_fields=["status", "decided_by", "decided_at", "note"])
    return approval


@transaction.atomic
def launch_approve(*, approval: LaunchApproval, user, now: datetime | None = None) -> LaunchApproval:
    """Approve and perform the launch in the approver's name (both recorded in the audit trail)."""
    now = now or timezone.now()
    approval = _decide(approval.pk, user=user, status=LaunchApproval.Status.APPROVED, note="", now=now)
    audit_record(action="approved", instance=approval.campaign, changes={"launch": [None, approval.action]}, user=user)
    LAUNCHES[approval.action](campaign=approval.campaign, user=user, now=now)
    return approval


@transaction.atomic
def launch_reject(*, approval: LaunchApproval, user, note: str = "", now: datetime | None = None) -> LaunchApproval:
    now = now or timezone.now()
    approval = _decide(approval.pk, user=user, status=LaunchApproval.Status.REJECTED, note=note, now=now)
    audit_record(action="rejected", instance=approval.campaign, changes={"note": [None, note]}, user=user)
    return approval
