"""Channels and their backends: the registry the send pipeline asks.

Public API (see docs/channels.md):

- ``register_channel(kind)`` / ``channel(name)`` / ``channel_choices()``: kinds of message (email, sms, kakao, push).
- ``register_backend(cls)`` / ``backend_for(channel_name)``: who delivers a channel, chosen by settings
  (``LOOP_CHANNEL_BACKENDS``, ``LOOP_CHANNEL_DRY_RUN``).
- ``ChannelBackend``, ``Message``, ``SendResult``, ``Capabilities``: the interface a backend implements.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from campaigns.channels.base import (
    EMAIL,
    KAKAO,
    PUSH,
    SMS,
    Capabilities,
    ChannelBackend,
    ChannelKind,
    Message,
    SendResult,
)
from campaigns.channels.team import SLACK, WEBHOOK

__all__ = [
    "Capabilities",
    "ChannelBackend",
    "ChannelKind",
    "Message",
    "SendResult",
    "backend_for",
    "channel",
    "channel_choices",
    "register_backend",
    "register_channel",
]

_CHANNELS: dict[str, ChannelKind] = {}
_BACKENDS: dict[str, type[ChannelBackend]] = {}
#: The backend every channel uses unless settings say otherwise.
DEFAULT_BACKEND = "outbox"


def register_channel(kind: ChannelKind) -> ChannelKind:
    _CHANNELS[kind.name] = kind
    return kind


def channel(name: str) -> ChannelKind:
    try:
        return _CHANNELS[name]
    except KeyError:
        raise ValueError(f"unknown channel {name!r}") from None


def channel_choices() -> list[tuple[str, object]]:
    """Choices for model fields (a callable, so new channels need no migration): the channels that reach
    contacts. Team channels (Slack, webhooks) are used through ``campaigns.services.notifications``."""
    return [(kind.name, kind.label) for kind in _CHANNELS.values() if kind.address]


def register_backend(cls: type[ChannelBackend]) -> type[ChannelBackend]:
    """Class decorator: make a backend selectable by its ``name`` in ``LOOP_CHANNEL_BACKENDS``."""
    if not cls.name:
        raise ImproperlyConfigured(f"{cls.__qualname__} has no name")
    _BACKENDS[cls.name] = cls
    return cls


def backend_name_for(channel_name: str, *, test: bool = False) -> str:
    if test or getattr(settings, "LOOP_CHANNEL_DRY_RUN", False):
        return "outbox"
    return getattr(settings, "LOOP_CHANNEL_BACKENDS", {}).get(channel_name, DEFAULT_BACKEND)


def backend_for(channel_name: str, *, test: bool = False) -> ChannelBackend:
    """The backend that delivers ``channel_name`` now (test sends always go to the outbox)."""
    channel(channel_name)
    name = backend_name_for(channel_name, test=test)
    try:
        cls = _BACKENDS[name]
    except KeyError:
        raise ImproperlyConfigured(
            f"LOOP_CHANNEL_BACKENDS names backend {name!r} for channel {channel_name!r}; known: "
            f"{', '.join(sorted(_BACKENDS))}"
        ) from None
    if cls.capabilities.channels and channel_name not in cls.capabilities.channels:
        raise ImproperlyConfigured(f"backend {name!r} cannot deliver channel {channel_name!r}")
    return cls()


for _kind in (EMAIL, SMS, KAKAO, PUSH, SLACK, WEBHOOK):
    register_channel(_kind)

from campaigns.channels import (  # noqa: E402, F401  (register the backends)
    email,
    kakao,
    outbox,
    push,
    slack,
    sms,
    webhook,
)
