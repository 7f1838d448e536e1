"""Dry run: which steps a contact would go through, when, and the messages they would get, without writing anything.

The path is simulated from ``now`` with the trigger data given: waits advance the simulated clock, branches are
decided on the contact's data as it is now (events since entering: none yet, unless already recorded after
``now``; opened/clicked: assumed not, nothing was sent), splits by the contact's stable bucket, messages rendered with
the campaigns personalization in their final (advertising) form. Consent, quiet hours and the frequency cap are
decided when a message is really sent; the dry run says which consent the channel needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from campaigns.channels import channel
from campaigns.models import Campaign, Variant
from campaigns.services.sending import render_content
from crm.models import Consent, Contact, Event
from journeys.conditions import conditions_hold
from journeys.models import Journey, Step
from journeys.services.engine import (
    MAX_STEPS_PER_MOVE,
    Graph,
    _zone,
    split_bucket,
    wait_until_due,
    wait_until_problem,
)


@dataclass(frozen=True, slots=True)
class DryStep:
    at: datetime
    step: str
    kind: str
    outcome: str
    message: dict[str, str] | None = None


def _message_parts(step: Step) -> tuple[Campaign, Variant | None]:
    if step.campaign_id:
        return step.campaign, step.campaign.variants.order_by("id").first()
    campaign = Campaign(
        name=step.name,
        kind=Campaign.Kind.TRIGGERED,
        channel=step.channel,
        purpose="advertising" if step.advertising else "informational",
    )
    variant = Variant(subject=step.subject, body=step.body, link_url=step.link_url, variables=step.variables or {})
    return campaign, variant


def journey_dry_run(
    *, journey: Journey, contact: Contact, context: dict[str, Any] | None = None, now: datetime | None = None
) -> list[DryStep]:
    from campaigns.personalization import build_render_data

    now = now or timezone.now()
    context = dict(context or {})
    steps = list(journey.steps.select_related("campaign", "condition_segment"))
    graph = Graph(steps)
    first = journey.first_step_id or (min(steps, key=lambda s: (s.position, s.pk)).pk if steps else None)
    zone = _zone(contact.time_zone)
    consents = set(Consent.objects.filter(contact=contact, granted=True).values_list("purpose", flat=True))
    result: list[DryStep] = []
    at, step_id = now, first
    for _n in range(MAX_STEPS_PER_MOVE):
        step = graph.steps.get(step_id) if step_id is not None else None
        if step is None:
            result.append(DryStep(at, "", "", "completed"))
            return result
        kind = step.get_kind_display()
        following = graph.next_of(step)
        if step.kind == Step.Kind.WAIT_DURATION:
            at += timedelta(minutes=step.wait_minutes)
            result.append(DryStep(at, step.name, kind, f"waited {step.wait_minutes} min"))
        elif step.kind == Step.Kind.WAIT_UNTIL:
            data = {"event": context, "attributes": contact.attributes or {}}
            due = wait_until_due(step, base=at, zone=zone, data=data)
            problem = wait_until_problem(step, due, base=at, zone=zone)
            if problem:
                result.append(DryStep(at, step.name, kind, f"exited: {problem}"))
                return result
            at = max(at, due)
            result.append(DryStep(at, step.name, kind, "waited"))
        elif step.kind == Step.Kind.SEND:
            campaign, variant = _message_parts(step)
            variables = variant.variables if variant else {}
            data = build_render_data([contact.pk], variables=variables, contexts={contact.pk: context}, now=at)
            content = render_content(campaign=campaign, variant=variant, data=data[contact.pk])
            needs = channel(campaign.channel).consent_purpose
            missing = [
                p for p in (needs, "ads" if campaign.purpose == "advertising" else None) if p and p not in consents
            ]
            outcome = f"{campaign.channel}" + (f" (no consent: {', '.join(missing)})" if missing else "")
            result.append(DryStep(at, step.name, kind, outcome, {k: v for k, v in content.items() if v}))
        elif step.kind == Step.Kind.BRANCH:
            yes = _decide(step, contact, context, since=now, at=at)
            result.append(DryStep(at, step.name, kind, "yes" if yes else "no"))
            following = following if yes else step.no_step_id
        elif step.kind == Step.Kind.RANDOM_SPLIT:
            a = split_bucket(step.pk, contact.pk) < step.split_percent
            result.append(DryStep(at, step.name, kind, "A" if a else "B"))
            following = following if a else step.no_step_id
        elif step.kind == Step.Kind.ACTION:
            target = step.webhook_url if step.action == Step.Action.WEBHOOK else step.action_name
            result.append(DryStep(at, step.name, kind, f"{step.get_action_display()}: {target}"))
        else:
            result.append(DryStep(at, step.name, kind, "completed"))
            return result
        step_id = following
    return result


def _decide(step: Step, contact: Contact, context: dict[str, Any], *, since: datetime, at: datetime) -> bool:
    if step.condition == Step.Condition.SEGMENT:
        return step.condition_segment.contains(contact, now=at)
    if step.condition == Step.Condition.EVENT_SINCE_ENTRY:
        return Event.objects.filter(
            contact=contact, name=step.condition_event, occurred_at__gte=since, occurred_at__lte=at
        ).exists()
    if step.condition == Step.Condition.DATA:
        row = Contact.objects.filter(pk=contact.pk).values().first() or {}
        data = {"event": context, "attributes": contact.attributes or {}, "contact": row}
        return conditions_hold(step.condition_rules, data)
    return False  # opened / clicked: nothing was sent in a dry run
