"""Personalization: the seeds' ``#{고객명}`` syntax and Django template logic in a sandbox.

``#{name}``, ``#{name|fallback}``, ``#{name:number}``, ``#{name:date|fallback}``: a variable, an optional format
(``number`` → 5,000; ``date`` → 2024-09-29; ``datetime`` → 2024-09-29 20:00 in the contact's time zone) and an
optional fallback used when the value is missing or empty. Variables (Korean and English names, see ``VARIABLES``)
come from the contact's fields, attributes (``#{속성.등급}``), the triggering event's properties
(``#{이벤트.product_name}``, from the context journeys pass), commerce state (cart, best unused coupon) and the
variant's own variables (``{"할인 금액": 5000}`` makes ``#{할인 금액}``).

Richer logic uses Django template syntax (``{% if cart.items %}…{% endif %}``) evaluated by a sandboxed engine:
no loaders (no include/extends), no ``load``/``debug``/``url``/``csrf_token`` tags, and a context of plain data
only (dicts, lists, strings, numbers, dates): nothing of the models is reachable, and the dicts and lists are
read-only copies (a method that would change them, ``{{ cart.items.pop }}``, renders nothing). Names starting with
``_`` are refused by Django itself. HTML content is autoescaped.

Rendering happens in one pass: each ``#{...}`` in the *template* is replaced by a placeholder variable before the
Django engine parses it, and its value goes in the context, so a value that contains ``{{ }}``, ``{% %}`` or
``#{}`` (a contact named ``{{ secret }}``) is output as text, never evaluated.

Unknown variables and syntax errors are found by ``template_errors`` when the marketer saves.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.template import Context, Engine, Library, TemplateSyntaxError, defaultfilters, defaulttags
from django.template.base import Template
from django.utils import timezone
from django.utils.html import conditional_escape
from django.utils.translation import gettext as _

#: ``#{ name [:format] [|fallback] }``; names may contain spaces and Korean, not ``{ } | :``.
TOKEN = re.compile(r"#\{(?P<name>[^{}|:]+?)\s*(?::\s*(?P<format>[A-Za-z]+)\s*)?(?:\|(?P<fallback>[^{}]*))?\}")
FORMATS = ("number", "date", "datetime")
PLACEHOLDER = "loopvar{}"
ATTRIBUTE_PREFIXES = ("속성.", "attributes.", "attribute.")
EVENT_PREFIXES = ("이벤트.", "event.")

#: Built-in variables: every accepted name → the path of its value in the render data.
VARIABLES: dict[str, str] = {}
for _names, _path in [
    (("고객명", "이름", "name", "customer_name"), "contact.name"),
    (("이메일", "email"), "contact.email"),
    (("전화번호", "phone"), "contact.phone"),
    (("고객 ID", "external_id"), "contact.external_id"),
    (("주문 수", "order_count"), "contact.order_count"),
    (("총 구매액", "total_revenue"), "contact.total_revenue"),
    (("마지막 주문일", "last_order_at"), "contact.last_order_at"),
    (("상품명", "product_name"), "product_name"),
    (("할인 금액", "discount_amount"), "discount_amount"),
    (("할인율", "discount_percent"), "coupon.discount_percent"),
    (("쿠폰 코드", "coupon_code"), "coupon.code"),
    (("쿠폰 만료일", "coupon_expires_at"), "coupon.expires_at"),
    (("장바구니 금액", "cart_value"), "cart.value"),
    (("장바구니 상품 수", "cart_item_count"), "cart.item_count"),
    (("수신설정 링크", "수신 설정 링크", "preferences_url"), "links.preferences"),
]:
    for _name in _names:
        VARIABLES[_name] = _path


class Missing:
    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()


# --- The sandbox ---------------------------------------------------------------------------------------------------

#: Tags a template may use: logic and formatting only.
ALLOWED_TAGS = (
    "autoescape",
    "comment",
    "cycle",
    "filter",
    "firstof",
    "for",
    "if",
    "ifchanged",
    "now",
    "regroup",
    "resetcycle",
    "spaceless",
    "templatetag",
    "verbatim",
    "widthratio",
    "with",
)


def _sandbox_library() -> Library:
    library = Library()
    for name in ALLOWED_TAGS:
        library.tags[name] = defaulttags.register.tags[name]
    library.filters.update(defaultfilters.register.filters)
    return library


@lru_cache(maxsize=2)
def sandbox_engine(*, html: bool) -> Engine:
    """A template engine with no loaders, no libraries and only the tags above; autoescape for HTML."""
    engine = Engine(dirs=[], app_dirs=False, loaders=[], libraries={}, autoescape=html, debug=False)
    engine.template_builtins = [_sandbox_library()]
    return engine


def _refuse(self, *args, **kwargs):
    raise TypeError("personalization data is read-only")


# Django's templates never call a method marked ``alters_data`` (they render it as an empty string).
_refuse.alters_data = True  # type: ignore[attr-defined]


class ReadOnlyDict(dict):
    """A dict a template can read but not change: ``{{ attributes.clear }}`` or ``{{ vars.popitem }}`` renders
    nothing and changes nothing."""

    clear = pop = popitem = setdefault = update = __setitem__ = __delitem__ = __ior__ = _refuse


class ReadOnlyList(list):
    """A list a template can read but not change (``{{ cart.items.pop }}``)."""

    append = extend = insert = pop = remove = reverse = sort = clear = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


def read_only(value: Any) -> Any:
    """``value`` with every dict and list in it replaced by a read-only copy (strings, numbers, dates are
    immutable already)."""
    if isinstance(value, Mapping):
        return ReadOnlyDict((key, read_only(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return ReadOnlyList(read_only(item) for item in value)
    return value


# --- Parsing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    format: str
    fallback: str | None


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    source: str
    template: Template | None  # None for text without any template syntax (the common SMS case)
    tokens: tuple[Token, ...]
    html: bool
    #: For text whose only template syntax is ``#{…}`` variables (the common case): the literal pieces and the
    #: variables' indexes in order, rendered by joining them, which is what the Django engine would output (the
    #: same escaping for HTML) at a fraction of its cost. None when the text has any other ``{`` or ``}``.
    parts: tuple[str | int, ...] | None = None


def _split(source: str) -> tuple[str, tuple[Token, ...]]:
    tokens: list[Token] = []

    def replace(match: re.Match) -> str:
        tokens.append(Token(match["name"].strip(), (match["format"] or "").lower(), match["fallback"]))
        return "{{ " + PLACEHOLDER.format(len(tokens) - 1) + " }}"

    return TOKEN.sub(replace, source), tuple(tokens)


PLACEHOLDER_TAG = re.compile(r"\{\{ loopvar(\d+) \}\}")


def _parts(text: str) -> tuple[str | int, ...] | None:
    """The literal pieces and placeholder indexes of ``text``, when nothing else in it is template syntax."""
    pieces = PLACEHOLDER_TAG.split(text)
    literals = pieces[0::2]
    if any("{" in literal or "}" in literal for literal in literals):
        return None
    return tuple(int(piece) if index % 2 else piece for index, piece in enumerate(pieces) if piece != "")


@lru_cache(maxsize=256)
def compile_template(source: str, *, html: bool = False) -> CompiledTemplate:
    """Parse once; raises ``TemplateSyntaxError`` for bad Django syntax."""
    text, tokens = _split(source or "")
    if "{" not in text:
        return CompiledTemplate(source, None, (), html)
    template = sandbox_engine(html=html).from_string(text)
    return CompiledTemplate(source, template, tokens, html, _parts(text))


def is_known_variable(name: str, *, extra: Iterable[str] = ()) -> bool:
    if name in VARIABLES or name in set(extra):
        return True
    return any(name.startswith(prefix) and len(name) > len(prefix) for prefix in ATTRIBUTE_PREFIXES + EVENT_PREFIXES)


def template_errors(source: str, *, html: bool = False, extra_variables: Iterable[str] = ()) -> list[str]:
    """Problems a marketer must fix before saving: unknown variables, unknown formats, template syntax errors."""
    errors: list[str] = []
    extra = list(extra_variables)
    for match in TOKEN.finditer(source or ""):
        name = match["name"].strip()
        fmt = (match["format"] or "").lower()
        if not is_known_variable(name, extra=extra):
            errors.append(_("Unknown variable #{%(name)s}.") % {"name": name})
        if fmt and fmt not in FORMATS:
            errors.append(
                _("Unknown format “%(format)s” in #{%(name)s}; use one of: %(formats)s.")
                % {"format": fmt, "name": name, "formats": ", ".join(FORMATS)}
            )
    leftover = TOKEN.sub("", source or "")
    if "#{" in leftover:
        errors.append(_("A #{...} variable is not closed or contains { or }."))
    try:
        compile_template(source or "", html=html)
    except TemplateSyntaxError as exc:
        errors.append(_("Template error: %(error)s") % {"error": exc})
    return errors


# --- Values --------------------------------------------------------------------------------------------------------


def _dig(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return MISSING
    return value


def resolve(name: str, data: Mapping[str, Any]) -> Any:
    """The value of variable ``name`` in the render data (``MISSING`` when there is none)."""
    variables = data.get("vars") or {}
    if name in variables:
        return variables[name]
    for prefix in ATTRIBUTE_PREFIXES:
        if name.startswith(prefix):
            return _dig(data.get("attributes") or {}, name[len(prefix) :])
    for prefix in EVENT_PREFIXES:
        if name.startswith(prefix):
            return _dig(data.get("event") or {}, name[len(prefix) :])
    path = VARIABLES.get(name)
    if path is None:
        return MISSING
    if path == "product_name":
        event = data.get("event") or {}
        for key in ("product_name", "name", "product"):
            if isinstance(event.get(key), str) and event[key]:
                return event[key]
        items = (data.get("cart") or {}).get("items") or []
        if items and isinstance(items[0], Mapping):
            return items[0].get("name") or MISSING
        return MISSING
    if path == "links.preferences":
        return preferences_link(data)
    if path == "discount_amount":
        event = data.get("event") or {}
        if event.get("discount_amount") not in (None, ""):
            return event["discount_amount"]
        return _dig(data, "coupon.discount_amount")
    return _dig(data, path)


def preferences_link(data: Mapping[str, Any]) -> Any:
    """The contact's signed preference-center link (``#{수신설정 링크}``), made only when a template uses it."""
    given = _dig(data, "links.preferences")
    if given is not MISSING:
        return given
    contact_id = (data.get("contact") or {}).get("id")
    if contact_id is None or not settings.LOOP_PUBLIC_URL:
        return MISSING
    from crm.preference_center import preference_center_url

    return preference_center_url(contact_id)


def format_number(value: Any) -> str:
    try:
        number = Decimal(str(value).replace(",", "").strip())
    except (InvalidOperation, ValueError):
        return str(value)
    if not number.is_finite():
        return str(value)
    if number == number.to_integral_value():
        return f"{int(number):,}"
    return f"{number.normalize():,f}"


def _as_datetime(value: Any) -> datetime | date | None:
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def format_value(value: Any, fmt: str, *, zone: zoneinfo.ZoneInfo) -> str:
    if fmt == "number":
        return format_number(value)
    if fmt in ("date", "datetime"):
        moment = _as_datetime(value)
        if moment is None:
            return str(value)
        if isinstance(moment, datetime):
            if timezone.is_aware(moment):
                moment = moment.astimezone(zone)
            return f"{moment:%Y-%m-%d %H:%M}" if fmt == "datetime" else f"{moment:%Y-%m-%d}"
        return f"{moment:%Y-%m-%d}"
    if isinstance(value, Decimal):
        return format_number(value)
    if isinstance(value, datetime):
        return f"{value.astimezone(zone):%Y-%m-%d %H:%M}" if timezone.is_aware(value) else f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def render(compiled: CompiledTemplate, data: Mapping[str, Any]) -> str:
    """Render for one contact's data (see ``build_render_data``)."""
    if compiled.template is None:
        return compiled.source
    zone = _zone(data)
    if compiled.parts is not None:
        values = [_token_text(token, data, zone) for token in compiled.tokens]
        if compiled.html:
            values = [conditional_escape(value) for value in values]
        return "".join(values[part] if isinstance(part, int) else part for part in compiled.parts)
    # The data as read-only copies: the sandbox reaches plain data only, and cannot change it through a method.
    context: dict[str, Any] = {
        name: read_only(data.get(name) or {}) for name in ("contact", "attributes", "event", "cart", "coupon", "vars")
    }
    for index, token in enumerate(compiled.tokens):
        context[PLACEHOLDER.format(index)] = _token_text(token, data, zone)
    return compiled.template.render(Context(context, autoescape=compiled.html))


def _token_text(token: Token, data: Mapping[str, Any], zone: zoneinfo.ZoneInfo) -> str:
    value = resolve(token.name, data)
    if value is MISSING or value is None or value == "":
        return token.fallback if token.fallback is not None else ""
    return format_value(value, token.format, zone=zone)


def render_text(source: str, data: Mapping[str, Any], *, html: bool = False) -> str:
    return render(compile_template(source or "", html=html), data)


def _zone(data: Mapping[str, Any]) -> zoneinfo.ZoneInfo:
    name = (data.get("contact") or {}).get("time_zone") or settings.TIME_ZONE
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(settings.TIME_ZONE)


# --- Render data ---------------------------------------------------------------------------------------------------

CONTACT_FIELDS = (
    "id",
    "external_id",
    "name",
    "email",
    "phone",
    "locale",
    "time_zone",
    "order_count",
    "total_revenue",
    "first_order_at",
    "last_order_at",
)


def build_render_data(
    contact_ids: Iterable[int],
    *,
    variables: Mapping[str, Any] | None = None,
    contexts: Mapping[int, Mapping[str, Any]] | None = None,
    now: datetime | None = None,
    contacts: Iterable[Mapping[str, Any]] | None = None,
) -> dict[int, dict[str, Any]]:
    """The render data of many contacts in three queries: contact fields and attributes, cart, best unused coupon.

    ``contexts`` maps a contact id to its triggering event's data (``{"event": {...properties}}`` or the
    properties themselves); ``variables`` are the variant's. ``contacts``: the contacts' rows (``CONTACT_FIELDS``
    and ``attributes``) when the caller has them already. Everything is plain data.
    """
    from crm.models import Cart, Contact, Coupon

    ids = list(contact_ids)
    now = now or timezone.now()
    result: dict[int, dict[str, Any]] = {}
    if not ids:
        return result
    if contacts is None:
        contacts = Contact.objects.filter(pk__in=ids).values(*CONTACT_FIELDS, "attributes")
    for contact in contacts:
        row = {name: contact[name] for name in CONTACT_FIELDS}
        attributes = contact["attributes"] or {}
        result[row["id"]] = {
            "contact": row,
            "attributes": attributes if isinstance(attributes, dict) else {},
            "cart": {},
            "coupon": {},
            "event": {},
            "vars": dict(variables or {}),
        }
    for cart in Cart.objects.filter(contact_id__in=ids).values("contact_id", "items", "value", "currency"):
        items = cart["items"] if isinstance(cart["items"], list) else []
        result[cart["contact_id"]]["cart"] = {
            "items": items,
            "value": cart["value"],
            "currency": cart["currency"],
            "item_count": len(items),
        }
    coupons = (
        Coupon.objects.filter(contact_id__in=ids, redeemed_at__isnull=True)
        .exclude(expires_at__lt=now)
        .order_by("contact_id", "expires_at", "-issued_at")
        .values("contact_id", "code", "discount_amount", "discount_percent", "expires_at")
    )
    for coupon in coupons:
        data = result[coupon["contact_id"]]
        if not data["coupon"]:  # the one expiring soonest
            data["coupon"] = {k: v for k, v in coupon.items() if k != "contact_id"}
    for contact_id, context in (contexts or {}).items():
        if contact_id in result and context:
            result[contact_id]["event"] = event_data(context)
    return result


def event_data(context: Any) -> dict[str, Any]:
    """The event properties of a send's context (``{"event": {...}}`` or the properties themselves)."""
    event = context.get("event", context) if isinstance(context, Mapping) else {}
    return dict(event) if isinstance(event, Mapping) else {}


def sample_render_data() -> dict[str, Any]:
    """Data with every built-in variable set, for checking templates in the admin."""
    return {
        "contact": {"name": "김민준", "email": "minjun@example.com", "phone": "+821012345678", "time_zone": ""},
        "attributes": {},
        "cart": {"items": [{"name": "캐시미어 니트", "price": 39000, "quantity": 1}], "value": 39000, "item_count": 1},
        "coupon": {"code": "WELCOME", "discount_amount": Decimal("5000"), "discount_percent": None},
        "event": {},
        "vars": {},
        "links": {"preferences": f"{settings.LOOP_PUBLIC_URL or 'https://crm.example.com'}/p/sample/"},
    }
