"""Signed unsubscribe links: ``/u/<token>/``, where the token alone is the authority (no login, no CSRF token).

The token is ``django.core.signing`` over ``{"c": contact id, "ch": channel, "s": send id}`` with its own salt, so it
cannot be forged or altered without ``SECRET_KEY``, and a token made for another purpose (another salt) is refused.
It does not expire: the law requires an opt-out that works for as long as the message can be read.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

SALT = "loop.campaigns.unsubscribe"


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    contact_id: int
    channel: str
    send_id: int | None


def make_token(*, contact_id: int, channel: str, send_id: int | None) -> str:
    payload: dict[str, object] = {"c": contact_id, "ch": channel}
    if send_id is not None:
        payload["s"] = send_id
    return signing.dumps(payload, salt=SALT, compress=True)


def read_token(token: str) -> UnsubscribeRequest:
    """The request a token stands for; ``signing.BadSignature`` for a forged, altered or malformed one."""
    payload = signing.loads(token, salt=SALT)
    try:
        contact_id, channel, send_id = payload["c"], payload["ch"], payload.get("s")
    except (KeyError, TypeError):
        raise signing.BadSignature("unsubscribe token without contact and channel") from None
    if not isinstance(contact_id, int) or not isinstance(channel, str) or not isinstance(send_id, int | None):
        raise signing.BadSignature("unsubscribe token with malformed values")
    return UnsubscribeRequest(contact_id=contact_id, channel=channel, send_id=send_id)


def public_url(path: str) -> str:
    base = settings.LOOP_PUBLIC_URL
    if not base:
        raise ImproperlyConfigured("PUBLIC_URL must be set to build links in messages (e.g. https://crm.example.com).")
    return f"{base}{path}"


def unsubscribe_url(*, contact_id: int, channel: str, send_id: int | None) -> str:
    token = make_token(contact_id=contact_id, channel=channel, send_id=send_id)
    return public_url(reverse("unsubscribe", kwargs={"token": token}))


def unsubscribe_mailto(*, contact_id: int, channel: str, send_id: int | None) -> str:
    """``mailto:`` form of List-Unsubscribe (empty when ``UNSUBSCRIBE_MAILTO`` is not set); the token is the subject."""
    if not settings.LOOP_UNSUBSCRIBE_MAILTO:
        return ""
    token = make_token(contact_id=contact_id, channel=channel, send_id=send_id)
    return f"mailto:{settings.LOOP_UNSUBSCRIBE_MAILTO}?subject=unsubscribe%20{token}"
