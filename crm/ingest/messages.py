"""Parsing and validating Segment-spec messages (track, page, screen, identify, group, alias).

The ingest hot path validates with plain Python rather than DRF serializers: a batch of 100 messages is checked in
well under a millisecond. Every problem is reported per field, in the user's language, and a message with problems
is never stored half-way.

The rules follow Segment's HTTP Tracking API spec:

- ``userId`` or ``anonymousId`` is required (``userId`` and ``previousId`` for alias); ``event`` for track.
- ``messageId`` identifies a message for idempotency. A message without one gets a deterministic id derived from
  its content, so an SDK retry of the same message is still stored once.
- The time the event happened (``occurred_at``) is the message's ``timestamp`` when the sender gave one; otherwise
  ``originalTimestamp`` corrected for the sender's clock skew as ``receivedAt - (sentAt - originalTimestamp)``;
  otherwise the time we received it.
- Each message may be at most 32 KB of (compact) JSON; a batch at most 500 KB (checked by the API before parsing).
"""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext as _

from crm.blanks import strip_blanks
from crm.emails import email_domain_lowercased
from crm.phones import InvalidPhoneNumber, normalize_phone

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 200

MESSAGE_TYPES = ("track", "page", "screen", "identify", "group", "alias")
DEFAULT_NAMES = {
    "page": "Page Viewed",
    "screen": "Screen Viewed",
    "identify": "Identify",
    "group": "Group",
    "alias": "Alias",
}
#: Traits that map to contact fields; every other trait becomes a contact attribute with its JSON type kept.
PROFILE_TRAITS = {
    "email",
    "phone",
    "name",
    "firstName",
    "first_name",
    "lastName",
    "last_name",
    "locale",
    "timezone",
    "time_zone",
    "consent",
    "consents",
}
CONSENT_ALIASES = {
    "email": "email",
    "sms": "sms",
    "push": "push",
    "kakao": "kakao",
    "kakaotalk": "kakao",
    "ads": "ads",
    "advertising": "ads",
    "ads_night": "ads_night",
    "night_ads": "ads_night",
    "advertising_night": "ads_night",
}
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


class MessageError(Exception):
    """A message failed validation: ``errors`` maps field names to lists of messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


@dataclass(slots=True)
class Profile:
    """Contact fields and attributes carried by a message's traits (identify traits or context.traits)."""

    email: str | None = None
    phone: str | None = None
    name: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    consents: dict[str, bool] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (
            self.email or self.phone or self.name or self.locale or self.time_zone or self.attributes or self.consents
        )


@dataclass(slots=True)
class Message:
    index: int
    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    name: str
    properties: dict[str, Any]
    context: dict[str, Any]
    occurred_at: datetime
    profile: Profile
    previous_id: str | None = None
    group_id: str | None = None


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (what the 32 KB limit counts): orjson, ~10x faster than json, which
    serves what orjson refuses (integers beyond 64 bits, lone surrogates)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode(errors="replace"))


#: A time on the first day datetime can hold with an offset ahead of UTC, or on the last day with one behind it, may
#: lie outside the years 1-9999 in UTC (``9999-12-31T23:00:00-05:00`` is year 10000) and is refused even when it
#: does not: a rule on the text, which the schema states with this pattern, rather than on arithmetic.
EDGE_DAYS_PATTERN = r"^(?!0001-01-01.[^+]*\+(?!00:00)|9999-12-31.[^-]*-(?!00:00))"


def on_an_edge_day(parsed: datetime) -> bool:
    """The rule of ``EDGE_DAYS_PATTERN`` on a parsed time."""
    offset = parsed.utcoffset() or timedelta(0)
    return (parsed.date() == date.min and offset > timedelta(0)) or (
        parsed.date() == date.max and offset < timedelta(0)
    )


def parse_timestamp(value: Any) -> datetime:
    """An ISO 8601 date and time as an aware datetime in UTC; ValueError when it is not one or lies on an edge day
    (``on_an_edge_day``)."""
    if not isinstance(value, str) or not value:
        raise ValueError
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if on_an_edge_day(parsed):
        raise ValueError(value)
    try:
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError(value) from None


def _identifier(raw: dict, key: str, errors: dict[str, list[str]]) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors.setdefault(key, []).append(_("Must be a string."))
        return None
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        errors.setdefault(key, []).append(_("At most %(n)d characters.") % {"n": MAX_ID_LENGTH})
        return None
    return strip_blanks(text) or None


def _object(raw: dict, key: str, errors: dict[str, list[str]]) -> dict:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.setdefault(key, []).append(_("Must be a JSON object."))
        return {}
    return value


def _content_message_id(raw: dict) -> str:
    """A deterministic id for a message sent without one, so that resending it is still idempotent."""
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:40]
    return f"auto-{digest}"


def parse_profile(traits: dict, errors: dict[str, list[str]], prefix: str) -> Profile:
    profile = Profile()
    email = traits.get("email")
    if email not in (None, ""):
        if not isinstance(email, str):
            errors.setdefault(f"{prefix}.email", []).append(_("Must be a string."))
        else:
            candidate = email_domain_lowercased(email)
            try:
                validate_email(candidate)
                profile.email = candidate
            except ValidationError:
                errors.setdefault(f"{prefix}.email", []).append(
                    _("'%(value)s' is not a valid email address.") % {"value": email[:100]}
                )
    phone = traits.get("phone")
    if phone not in (None, ""):
        try:
            profile.phone = normalize_phone(str(phone))
        except InvalidPhoneNumber as exc:
            errors.setdefault(f"{prefix}.phone", []).append(str(exc))
    name = traits.get("name")
    first = traits.get("firstName", traits.get("first_name"))
    last = traits.get("lastName", traits.get("last_name"))
    full_name = strip_blanks(name) if isinstance(name, str) else ""
    if full_name:
        profile.name = full_name[:200]
    elif isinstance(first, str) or isinstance(last, str):
        first_s, last_s = strip_blanks(first or ""), strip_blanks(last or "")
        # Korean names are written family name first, without a space (홍 + 길동 → 홍길동).
        if _HANGUL.search(first_s + last_s):
            profile.name = f"{last_s}{first_s}"[:200] or None
        else:
            profile.name = " ".join(p for p in (first_s, last_s) if p)[:200] or None
    locale = traits.get("locale")
    locale = strip_blanks(locale) if isinstance(locale, str) else ""
    if locale:
        profile.locale = locale[:20]
    tz = traits.get("timezone", traits.get("time_zone"))
    if tz not in (None, ""):
        try:
            zoneinfo.ZoneInfo(str(tz))
            profile.time_zone = str(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            errors.setdefault(f"{prefix}.timezone", []).append(
                _("'%(value)s' is not an IANA time zone such as Asia/Seoul.") % {"value": str(tz)[:64]}
            )
    consents = traits.get("consents", traits.get("consent"))
    if consents is not None:
        if not isinstance(consents, dict):
            errors.setdefault(f"{prefix}.consents", []).append(_('Must be an object such as {"sms": true}.'))
        else:
            for key, value in consents.items():
                purpose = CONSENT_ALIASES.get(str(key).lower())
                if purpose is None or not isinstance(value, bool):
                    errors.setdefault(f"{prefix}.consents", []).append(
                        _("'%(key)s' must be one of %(names)s with a true/false value.")
                        % {"key": key, "names": ", ".join(sorted(set(CONSENT_ALIASES.values())))}
                    )
                    continue
                profile.consents[purpose] = value
    profile.attributes = {k: v for k, v in traits.items() if k not in PROFILE_TRAITS and isinstance(k, str)}
    return profile


def parse_message(
    raw: Any,
    *,
    index: int = 0,
    received_at: datetime,
    default_type: str | None = None,
    batch_context: dict | None = None,
    batch_integrations: dict | None = None,
    batch_sent_at: datetime | None = None,
    size: int | None = None,
) -> Message:
    """Validate one message and return it normalized, or raise MessageError with every problem found."""
    if not isinstance(raw, dict):
        raise MessageError({"non_field_errors": [_("Each message must be a JSON object.")]})
    errors: dict[str, list[str]] = {}
    if size is None:
        size = json_size(raw)
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(
            {"non_field_errors": [_("The message is %(size)d bytes; at most 32 KB is accepted.") % {"size": size}]}
        )

    kind = raw.get("type", default_type) if default_type is None else default_type
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        errors.setdefault("type", []).append(_("Must be one of %(types)s.") % {"types": ", ".join(MESSAGE_TYPES)})
        kind = None

    user_id = _identifier(raw, "userId", errors)
    anonymous_id = _identifier(raw, "anonymousId", errors)
    previous_id = _identifier(raw, "previousId", errors) if kind == "alias" else None
    group_id = _identifier(raw, "groupId", errors) if kind == "group" else None
    if kind == "alias":
        if not user_id:
            errors.setdefault("userId", []).append(_("An alias needs userId."))
        if not previous_id:
            errors.setdefault("previousId", []).append(_("An alias needs previousId."))
    elif not user_id and not anonymous_id and "userId" not in errors and "anonymousId" not in errors:
        errors.setdefault("userId", []).append(_("userId or anonymousId is required."))
    if kind == "group" and not group_id:
        errors.setdefault("groupId", []).append(_("A group call needs groupId."))

    message_id = _identifier(raw, "messageId", errors)

    if kind == "track":
        event = raw.get("event")
        name = strip_blanks(event) if isinstance(event, str) else ""
        if not name:
            errors.setdefault("event", []).append(_("A track call needs the event name."))
        elif len(event) > MAX_NAME_LENGTH:
            errors.setdefault("event", []).append(_("At most %(n)d characters.") % {"n": MAX_NAME_LENGTH})
            name = ""
    else:
        page_name = raw.get("name") if kind in ("page", "screen") else None
        if page_name is not None and not isinstance(page_name, str):
            errors.setdefault("name", []).append(_("Must be a string."))
            page_name = None
        name = strip_blanks(page_name or "")[:MAX_NAME_LENGTH] or DEFAULT_NAMES.get(kind or "", "")

    properties = _object(raw, "properties", errors)
    # Only identify and group carry traits (Segment's spec); other types' schemas do not name the key: ignored.
    traits = _object(raw, "traits", errors) if kind in ("identify", "group") else {}
    context = {**(batch_context or {}), **_object(raw, "context", errors)}
    integrations = _object(raw, "integrations", errors)
    if batch_integrations or integrations:
        context["integrations"] = {**(batch_integrations or {}), **integrations}
    if kind in ("page", "screen"):
        category = raw.get("category")
        if category is not None and not isinstance(category, str):
            errors.setdefault("category", []).append(_("Must be a string."))
        properties = {**properties, **({"name": name} if raw.get("name") else {})}
        if isinstance(category, str) and category:
            properties.setdefault("category", category)
    context_traits = context.get("traits") if isinstance(context.get("traits"), dict) else {}
    if kind == "group":
        properties = {"groupId": group_id, "traits": traits}
    elif kind == "identify":
        # RudderStack's SDKs send identify traits in context.traits only; Segment's in traits. Both count.
        traits = {**context_traits, **traits}
        properties = traits

    # Every time the sender gave must be valid, also the ones the rule below does not use.
    times: dict[str, datetime] = {}
    for key in ("timestamp", "originalTimestamp", "sentAt"):
        if raw.get(key) not in (None, ""):
            try:
                times[key] = parse_timestamp(raw[key])
            except (ValueError, TypeError):
                errors.setdefault(key, []).append(
                    _("Must be an ISO 8601 date and time, e.g. 2026-11-24T20:00:00+09:00.")
                )
    occurred_at = received_at
    try:
        if "timestamp" in times:
            occurred_at = times["timestamp"]
        elif "originalTimestamp" in times:
            sent_at = times.get("sentAt", batch_sent_at)
            original = times["originalTimestamp"]
            occurred_at = received_at - (sent_at - original) if sent_at else original
    except OverflowError:
        # The device's clock is so far off that the correction leaves the calendar: trust our own clock instead.
        occurred_at = received_at

    profile_source = traits if kind == "identify" else context_traits
    profile = parse_profile(profile_source, errors, "traits" if kind == "identify" else "context.traits")

    if errors:
        raise MessageError(errors)
    return Message(
        index=index,
        type=kind,
        message_id=message_id or _content_message_id(raw),
        user_id=user_id,
        anonymous_id=anonymous_id,
        name=name,
        properties=properties,
        context=context,
        occurred_at=occurred_at,
        profile=profile,
        previous_id=previous_id,
        group_id=group_id,
    )
