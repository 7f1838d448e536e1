"""The channel interface: what a message is, what a backend must do with a batch of them, and what it can do.

Two ideas, kept apart:

- A **channel** (``ChannelKind``) is the kind of message a contact receives: email, SMS/LMS, KakaoTalk, push. It
  decides which consent is needed, where the contact is reached (email address, phone number, push tokens) and
  which quiet hours apply to advertising. Campaigns pick a channel.
- A **backend** (``ChannelBackend``) is what delivers messages of one or more channels: the outbox (stores them,
  for development and tests), anymail for email, a Korean SMS provider, FCM... Settings choose the backend of
  each channel (``LOOP_CHANNEL_BACKENDS``); ``LOOP_CHANNEL_DRY_RUN`` routes every channel to the outbox.

The send pipeline (``campaigns.services.sending``) is the only caller of ``send_batch``: it has already checked
consent, suppression, reachability, frequency cap and quiet hours, rendered the content and applied the Korean
advertising form. A backend only delivers and reports, one ``SendResult`` per message, never raising for a
per-message problem (a raised exception means "the whole batch is in an unknown state": its sends are released and
retried).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True, slots=True)
class ChannelKind:
    """A kind of message a contact can receive."""

    name: str
    label: Any
    #: ``crm.models.ConsentPurpose`` value a contact must have granted; None for team channels (Slack, webhooks).
    consent_purpose: str | None
    #: Where the contact is reached: "email", "phone", "device" (active push tokens) or "" (no contact address).
    address: str
    #: Content fields a variant uses on this channel (the admin shows them; others are ignored).
    content_fields: tuple[str, ...] = ("body",)
    #: Local hours (start, end) during which advertising is not sent without night-time consent.
    ads_quiet_hours: tuple[int, int] = (21, 8)


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered message to one recipient, ready to deliver."""

    send_id: int
    channel: str
    contact_id: int
    #: The address: an email address, an E.164 phone number, or a list of push tokens.
    to: str | list[str]
    body: str
    subject: str = ""
    preheader: str = ""
    html: str = ""
    link_url: str = ""
    advertising: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Stable per send: a backend whose provider deduplicates on a key passes this one."""
        return f"loop-send-{self.send_id}"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one message of a batch."""

    send_id: int
    ok: bool
    provider_message_id: str = ""
    error: str = ""
    #: For a failure: True when trying again later may succeed (rate limit, timeout, 5xx); False for a permanent
    #: failure (invalid number, rejected content), which is recorded and never retried.
    transient: bool = False
    #: For a transient failure: seconds the provider asked us to wait (``Retry-After``); the retry is not due sooner.
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    #: The most messages one ``send_batch`` call accepts; the pipeline splits larger batches.
    max_batch_size: int = 500
    #: True when delivering the same message twice (same ``send_id``) has no second effect. The pipeline then
    #: re-delivers sends whose worker died mid-call; otherwise it marks them failed ("delivery unknown") rather
    #: than risk a duplicate.
    idempotent: bool = False
    #: Channels this backend can deliver.
    channels: frozenset[str] = frozenset()


class ChannelBackend:
    """Base class of every backend. Subclasses set ``name`` and ``capabilities`` and implement ``send_batch``."""

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        """Deliver ``messages`` (at most ``capabilities.max_batch_size``), one result per message, any order."""
        raise NotImplementedError


EMAIL = ChannelKind(
    name="email",
    label=_("Email"),
    consent_purpose="email",
    address="email",
    content_fields=("subject", "preheader", "body", "html", "link_url"),
)
SMS = ChannelKind(
    name="sms", label=_("SMS/LMS"), consent_purpose="sms", address="phone", content_fields=("subject", "body")
)
KAKAO = ChannelKind(
    name="kakao",
    label=_("KakaoTalk"),
    consent_purpose="kakao",
    address="phone",
    content_fields=("body", "link_url"),
    # FriendTalk/brand messages: never 20:00–08:00.
    ads_quiet_hours=(20, 8),
)
PUSH = ChannelKind(
    name="push",
    label=_("App push"),
    consent_purpose="push",
    address="device",
    content_fields=("subject", "body", "link_url"),
)
