"""What the team channels (Slack, webhooks) share: their channel kinds and the lookup of a message's destination.

A team message is addressed to a ``campaigns.Destination`` by name (``Message.to``); the destination holds the URL
and, for webhooks, the signing secret (or the names of environment variables holding them). Team channels need no
consent and reach no contact (``consent_purpose=None``, ``address=""``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils.translation import gettext_lazy as _

from campaigns.channels.base import ChannelKind, Message, SendResult

if TYPE_CHECKING:
    from campaigns.models import Destination

SLACK = ChannelKind(
    name="slack",
    label=_("Slack"),
    consent_purpose=None,
    address="",
    content_fields=("subject", "body", "link_url"),
)
WEBHOOK = ChannelKind(name="webhook", label=_("Webhook"), consent_purpose=None, address="", content_fields=("body",))


def destinations_for(messages: list[Message], *, kind: str) -> dict[str, Destination]:
    """The active destinations of ``kind`` the messages are addressed to, by name (one query)."""
    from campaigns.models import Destination

    names = {m.to for m in messages if isinstance(m.to, str)}
    return {d.name: d for d in Destination.objects.filter(name__in=names, kind=kind, active=True)}


def unknown_destination(message: Message) -> SendResult:
    return SendResult(
        send_id=message.send_id, ok=False, error=f"no active destination named {message.to!r} for this channel"
    )


def missing_setting(message: Message, what: str, variable: str) -> SendResult:
    where = f"environment variable {variable} is not set" if variable else "not configured"
    return SendResult(send_id=message.send_id, ok=False, error=f"destination {message.to!r}: {what} {where}")
