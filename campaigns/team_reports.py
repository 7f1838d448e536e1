"""The product's team notifications, laid out for Slack (and sent as data to webhooks): a campaign run's report,
a new lead, a digest. Each builder returns ``(text, blocks, data)``; ``*_notify`` queue them to a destination.

Campaign reports go to ``CAMPAIGN_REPORT_DESTINATION`` (a destination's name) when a run completes, once per run
(the notification key is the run). Journeys call ``new_lead_notify`` and ``digest_notify`` for their own steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.channels.slack import blocks
from campaigns.models import Destination, Notification, Run
from campaigns.services.notifications import slack_notify, webhook_notify

Layout = tuple[str, list[dict[str, Any]], dict[str, Any]]


def admin_link(name: str, pk: int) -> str | None:
    """An absolute link to an admin page, when ``PUBLIC_URL`` is set."""
    if not settings.LOOP_PUBLIC_URL:
        return None
    return settings.LOOP_PUBLIC_URL + reverse(name, args=[pk])


def _number(value: int) -> str:
    return f"{value:,}"


def run_report(run: Run) -> Layout:
    status = (run.counts or {}).get("status", {})
    reasons = (run.counts or {}).get("skip_reason", {})
    sent, failed, skipped = status.get("sent", 0), status.get("failed", 0), status.get("skipped", 0)
    title = _("Campaign finished: %(name)s") % {"name": run.campaign.name}
    fields = [
        (_("Sent"), _number(sent)),
        (_("Failed"), _number(failed)),
        (_("Skipped"), _number(skipped)),
        (_("Audience"), _number(run.audience_count or 0)),
    ]
    if reasons:
        top = sorted(reasons.items(), key=lambda item: -item[1])[:3]
        fields.append((_("Top skip reasons"), ", ".join(f"{reason} {_number(n)}" for reason, n in top)))
    finished = timezone.localtime(run.finished_at or timezone.now()).strftime("%Y-%m-%d %H:%M")
    link = admin_link("admin:campaigns_run_change", run.pk)
    layout = blocks(
        header=title,
        fields=fields,
        context=_("Run #%(run)s · finished %(time)s") % {"run": run.pk, "time": finished},
        button=(_("Open the report"), link) if link else None,
    )
    data = {
        "campaign_id": run.campaign_id,
        "campaign": run.campaign.name,
        "run_id": run.pk,
        "finished_at": (run.finished_at or timezone.now()).isoformat(),
        "counts": run.counts or {},
        "audience": run.audience_count,
    }
    text = f"{title} — {_('Sent')} {_number(sent)}, {_('Failed')} {_number(failed)}, {_('Skipped')} {_number(skipped)}"
    return text, layout, data


def new_lead(contact: Any, *, source: str = "") -> Layout:
    name = contact.name or contact.email or contact.phone or f"#{contact.pk}"
    title = _("New lead: %(name)s") % {"name": name}
    fields = [(label, value) for label, value in ((_("Email"), contact.email), (_("Phone"), contact.phone)) if value]
    if source:
        fields.append((_("Lead source"), source))
    link = admin_link("admin:crm_contact_change", contact.pk)
    layout = blocks(header=title, fields=fields, button=(_("Open the contact"), link) if link else None)
    data = {"contact_id": contact.pk, "name": contact.name, "email": contact.email, "phone": contact.phone}
    if source:
        data["source"] = source
    return title, layout, data


def digest(title: str, rows: Sequence[tuple[str, str]], *, summary: str = "", link: str = "") -> Layout:
    """A periodic digest (e.g. survey answers of the week): a title, a summary and label/value rows."""
    layout = blocks(header=title, text=summary, fields=list(rows), button=(_("Open"), link) if link else None)
    return title, layout, {"title": title, "summary": summary, "rows": [list(row) for row in rows]}


def send_layout(destination: Destination | str, layout: Layout, *, event: str, key: str | None) -> Notification:
    """Queue ``layout`` to a Slack or webhook destination, whichever kind it is."""
    target = destination if isinstance(destination, Destination) else Destination.objects.get(name=destination)
    text, layout_blocks, data = layout
    if target.kind == Destination.Kind.SLACK:
        return slack_notify(target, text=text, blocks=layout_blocks, key=key)
    return webhook_notify(target, event=event, data=data, key=key)


def run_report_notify(*, run: Run) -> Notification | None:
    """Queue the report of a completed run to ``CAMPAIGN_REPORT_DESTINATION`` (nothing when unset); once per run."""
    name = settings.LOOP_CAMPAIGN_REPORT_DESTINATION
    if not name:
        return None
    destination = Destination.objects.filter(name=name, active=True).first()
    if destination is None:
        return None
    return send_layout(destination, run_report(run), event="campaign.run_completed", key=f"run-report:{run.pk}")


def new_lead_notify(destination: Destination | str, *, contact: Any, source: str = "", key: str | None = None):
    return send_layout(destination, new_lead(contact, source=source), event="lead.created", key=key)


def digest_notify(
    destination: Destination | str,
    *,
    title: str,
    rows: Sequence[tuple[str, str]],
    summary: str = "",
    link: str = "",
    key: str | None = None,
):
    return send_layout(destination, digest(title, rows, summary=summary, link=link), event="digest", key=key)
