"""The segment rule document: its versioned schema, the validator, and a description a rule builder can read.

A rule document (version 1)::

    {"version": 1, "root": <group>}

    group      {"type": "group", "op": "and" | "or", "negate": false, "children": [<node>, ...]}
    field      {"type": "field", "field": "email", "op": "contains", "value": "@example.com"}
    attribute  {"type": "attribute", "key": "city", "value_type": "text", "op": "eq", "value": "서울"}
    event      {"type": "event", "op": "did" | "did_not", "name": "Order Completed",
                "where": [{"property": "products[].category", "value_type": "text", "op": "eq", "value": "가방"}],
                "count": {"op": "at_least" | "at_most" | "exactly", "value": 3},
                "when": {"op": "within_last", "value": 7, "unit": "days"}}
    cart       {"type": "cart", "field": "items" | "value" | "updated_at" | "checkout_started_at", "op": ..., ...}
    coupon     {"type": "coupon", "state": "unused" | "redeemed" | "expired" | "any",
                "where": [{"field": "expires_at", "op": "today"}]}
    wishlist   {"type": "wishlist", "where": [{"field": "product_id", "op": "in", "value": ["P1", "P2"]}]}
    orders     {"type": "orders", "field": "count" | "revenue" | "days_since_last" | "last_order_at" |
                "first_order_at", "op": ..., "value": ...}
    reachable  {"type": "reachable", "channel": "email" | "sms" | "push" | "kakao"}
    consent    {"type": "consent", "purpose": "email" | "sms" | "push" | "kakao" | "ads" | "ads_night",
                "state": "granted" | "withdrawn" | "unknown"}
    list       {"type": "list", "list": <static list id>}
    tag        {"type": "tag", "tag": "<tag name>"}
    segment    {"type": "segment", "segment": <segment id>}

Every node may also carry ``"negate": true`` (NOT) and an ``"id"`` (any short string, for a builder's bookkeeping).
A predicate is ``"op"`` plus, depending on the operator, ``"value"`` (a scalar, a list for ``in``, a pair for
``between``, a count for relative times) and ``"unit"`` (``minutes``/``hours``/``days`` for relative times).
Operators per value type are in ``TYPE_OPS``; the negative ones (``neq``, ``not_in``, ``not_contains``,
``not_set``) are exactly NOT of their positive twin, so "is not 서울" includes contacts with no city at all.

``validate_rules`` refuses anything else with a list of :class:`RuleError` (``path`` such as
``root.children[2].count.value``, a ``code`` and a translated ``message``). ``schema_description`` describes all of
it as JSON (kinds, fields with their types, operators per type, labels in Korean and English) from the same tables
the validator uses. The marketer's guide and the full reference are in ``docs/segments.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from crm.models import ConsentPurpose

SCHEMA_VERSION = 1
#: The document that matches every (non-erased) contact.
EMPTY_RULES = {"version": SCHEMA_VERSION, "root": {"type": "group", "op": "and", "negate": False, "children": []}}

MAX_DEPTH = 10
MAX_NODES = 300
MAX_LIST_VALUES = 1000
MAX_TEXT = 1000
MAX_KEY = 200
MAX_AMOUNT = {"minutes": 60 * 24 * 366 * 10, "hours": 24 * 366 * 10, "days": 366 * 100}
MAX_COUNT = 1_000_000
LANGUAGES = ("ko", "en")

# --- Value types and operators ------------------------------------------------------------------------------------

TEXT, NUMBER, DATE, DATETIME, BOOLEAN, PRESENCE = "text", "number", "date", "datetime", "boolean", "presence"

#: How an operator takes its value: none, one scalar of the field's type, a list, a [low, high] pair, or a relative
#: amount with a unit.
NONE, SCALAR, LIST, PAIR, AMOUNT = "none", "scalar", "list", "pair", "amount"


@dataclass(frozen=True)
class Op:
    label: Promise
    value: str = SCALAR
    negates: str | None = None  # a negative operator is exactly NOT of this positive one
    phrase: Promise | None = None  # for relative times: the operator with %(amount)s and %(unit)s in place


OPS: dict[str, Op] = {
    "eq": Op(_("is")),
    "neq": Op(_("is not"), negates="eq"),
    "contains": Op(_("contains")),
    "not_contains": Op(_("does not contain"), negates="contains"),
    "starts_with": Op(_("starts with")),
    "in": Op(_("is one of"), LIST),
    "not_in": Op(_("is none of"), LIST, negates="in"),
    "gt": Op(_("is greater than")),
    "gte": Op(_("is at least")),
    "lt": Op(_("is less than")),
    "lte": Op(_("is at most")),
    "between": Op(_("is between"), PAIR),
    "before": Op(_("is before")),
    "after": Op(_("is after")),
    "on": Op(_("is on")),
    "within_last": Op(_("is within the last"), AMOUNT, phrase=_("within the last %(amount)s %(unit)s")),
    "more_than_ago": Op(_("is more than … ago"), AMOUNT, phrase=_("more than %(amount)s %(unit)s ago")),
    "in_next": Op(_("is within the next"), AMOUNT, phrase=_("within the next %(amount)s %(unit)s")),
    "today": Op(_("is today"), NONE),
    "this_week": Op(_("is this week (Monday to Sunday)"), NONE),
    "this_month": Op(_("is this month"), NONE),
    "is_true": Op(_("is true"), NONE),
    "is_false": Op(_("is false"), NONE),
    "is_set": Op(_("is set"), NONE),
    "not_set": Op(_("is not set"), NONE, negates="is_set"),
    "not_empty": Op(_("is not empty"), NONE),
    "empty": Op(_("is empty"), NONE, negates="not_empty"),
}
SET_OPS = ("is_set", "not_set")
TEXT_OPS = ("eq", "neq", "contains", "not_contains", "starts_with", "in", "not_in")
NUMBER_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "between")
TIME_OPS = ("before", "after", "on", "between", "within_last", "more_than_ago", "in_next", "today", "this_week")
TIME_OPS += ("this_month",)
TYPE_OPS: dict[str, tuple[str, ...]] = {
    TEXT: TEXT_OPS + SET_OPS,
    NUMBER: NUMBER_OPS + SET_OPS,
    DATE: TIME_OPS + SET_OPS,
    DATETIME: TIME_OPS + SET_OPS,
    BOOLEAN: ("is_true", "is_false", *SET_OPS),
    PRESENCE: ("not_empty", "empty"),
}
TYPE_LABELS = {
    TEXT: _("text"),
    NUMBER: _("number"),
    DATE: _("date"),
    DATETIME: _("date and time"),
    BOOLEAN: _("yes/no"),
    PRESENCE: _("presence"),
}
#: Types a free-form JSON value (an attribute, an event property) can be compared as.
JSON_TYPES = (TEXT, NUMBER, DATE, BOOLEAN)

UNITS = {"minutes": _("minutes"), "hours": _("hours"), "days": _("days")}
TYPE_UNITS = {DATETIME: ("minutes", "hours", "days"), DATE: ("days",)}

COUNT_OPS = {"at_least": _("at least"), "at_most": _("at most"), "exactly": _("exactly")}
EVENT_OPS = {"did": _("did"), "did_not": _("did not do")}
WHEN_OPS = ("ever", *TIME_OPS)
WHEN_LABELS = {"ever": _("ever")}

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PROPERTY_STEP = re.compile(r"^[^\x00-\x1f.\[\]]+(\[\])?$")


@dataclass(frozen=True)
class FieldSpec:
    """A field a condition can test: its value type, label, and where the value lives."""

    name: str
    type: str
    label: Promise
    nullable: bool = False
    column: str = ""  # the model field; defaults to name
    json_path: tuple[str, ...] = ()  # the value is inside this JSON field (column) at this path
    help: Promise | str = ""
    integer: bool = False

    @property
    def ops(self) -> tuple[str, ...]:
        ops = TYPE_OPS[self.type]
        if not self.nullable and self.type in (NUMBER, DATE, DATETIME, BOOLEAN):
            ops = tuple(op for op in ops if op not in SET_OPS)
        return ops

    @property
    def units(self) -> tuple[str, ...]:
        return TYPE_UNITS.get(self.type, ())


def _fields(*specs: FieldSpec) -> dict[str, FieldSpec]:
    return {spec.name: spec for spec in specs}


CONTACT_FIELDS = _fields(
    FieldSpec("email", TEXT, _("email")),
    FieldSpec("phone", TEXT, _("phone"), help=_("Stored as +821012345678; 010-1234-5678 is understood too.")),
    FieldSpec("name", TEXT, _("name")),
    FieldSpec("external_id", TEXT, _("external ID"), nullable=True),
    FieldSpec("locale", TEXT, _("locale")),
    FieldSpec("time_zone", TEXT, _("time zone")),
    FieldSpec("created_at", DATETIME, _("created at")),
    FieldSpec("first_seen_at", DATETIME, _("first seen"), nullable=True),
    FieldSpec("last_seen_at", DATETIME, _("last seen"), nullable=True),
)
CART_FIELDS = _fields(
    FieldSpec("items", PRESENCE, _("items")),
    FieldSpec("value", NUMBER, _("value")),
    FieldSpec("updated_at", DATETIME, _("last changed")),
    FieldSpec("checkout_started_at", DATETIME, _("checkout started"), nullable=True),
)
COUPON_FIELDS = _fields(
    FieldSpec("code", TEXT, _("code")),
    FieldSpec("discount_amount", NUMBER, _("discount (amount)"), nullable=True),
    FieldSpec("discount_percent", NUMBER, _("discount (%)"), nullable=True),
    FieldSpec("issued_at", DATETIME, _("issued at")),
    FieldSpec("expires_at", DATETIME, _("expires at"), nullable=True),
    FieldSpec("redeemed_at", DATETIME, _("redeemed at"), nullable=True),
)
COUPON_STATES = {
    "unused": _("unused and not expired"),
    "redeemed": _("redeemed"),
    "expired": _("expired unused"),
    "any": _("any"),
}
WISHLIST_FIELDS = _fields(
    FieldSpec("product_id", TEXT, _("product ID")),
    FieldSpec("name", TEXT, _("product name")),
    FieldSpec("category", TEXT, _("category"), nullable=True, column="properties", json_path=("category",)),
    FieldSpec("added_at", DATETIME, _("added at")),
)
ORDER_FIELDS = _fields(
    FieldSpec("count", NUMBER, _("number of orders"), column="order_count", integer=True),
    FieldSpec("revenue", NUMBER, _("revenue"), column="total_revenue"),
    FieldSpec(
        "days_since_last",
        NUMBER,
        _("days since the last order"),
        nullable=True,
        column="last_order_at",
        integer=True,
        help=_("Calendar days in the workspace time zone: an order yesterday is 1 day ago. Never ordered: not set."),
    ),
    FieldSpec("last_order_at", DATETIME, _("last order"), nullable=True),
    FieldSpec("first_order_at", DATETIME, _("first order"), nullable=True),
)
CHANNELS = {
    "email": _("has a valid email address"),
    "sms": _("has a phone number (SMS/LMS)"),
    "kakao": _("is reachable on KakaoTalk (Korean mobile number)"),
    "push": _("has an active push token"),
}
CONSENT_STATES = {
    "granted": _("granted"),
    "withdrawn": _("withdrawn"),
    "unknown": _("never given nor withdrawn"),
}


@dataclass(frozen=True)
class Kind:
    label: Promise
    help: Promise
    category: str
    keys: tuple[str, ...]
    required: tuple[str, ...] = ()


COMMON_KEYS = ("type", "negate", "id")
CATEGORIES = {
    "logic": _("Logic"),
    "profile": _("Profile"),
    "behaviour": _("Behaviour"),
    "commerce": _("Commerce"),
    "reachability": _("Reachability and consent"),
    "membership": _("Membership"),
}
KINDS: dict[str, Kind] = {
    "group": Kind(
        _("group"),
        _("All (AND) or any (OR) of the conditions inside; NOT inverts the whole group."),
        "logic",
        ("op", "children"),
        ("children",),
    ),
    "field": Kind(
        _("contact field"),
        _("A field of the contact's profile: email, phone, name, dates."),
        "profile",
        ("field", "op", "value", "unit"),
        ("field", "op"),
    ),
    "attribute": Kind(
        _("attribute"),
        _("A free-form property of the contact (sent by the shop or imported); say which type to compare it as."),
        "profile",
        ("key", "value_type", "op", "value", "unit"),
        ("key", "value_type", "op"),
    ),
    "event": Kind(
        _("behaviour"),
        _("Did or did not do an event, optionally with conditions on its properties, a number of times, and when."),
        "behaviour",
        ("op", "name", "where", "count", "when"),
        ("op",),
    ),
    "cart": Kind(
        _("cart"),
        _("The contact's current cart. Value and times only match a cart that is not empty."),
        "commerce",
        ("field", "op", "value", "unit"),
        ("field", "op"),
    ),
    "coupon": Kind(
        _("coupon"),
        _("Has at least one coupon in this state that matches every condition (e.g. unused, expiring today)."),
        "commerce",
        ("state", "where"),
        ("state",),
    ),
    "wishlist": Kind(
        _("wishlist"),
        _("Has at least one wishlist item that matches every condition (no condition: the wishlist is not empty)."),
        "commerce",
        ("where",),
    ),
    "orders": Kind(
        _("order history"),
        _("Number of orders, revenue, days since the last order."),
        "commerce",
        ("field", "op", "value", "unit"),
        ("field", "op"),
    ),
    "reachable": Kind(
        _("reachable on a channel"),
        _("Has an address the channel can deliver to. Consent is a separate condition."),
        "reachability",
        ("channel",),
        ("channel",),
    ),
    "consent": Kind(
        _("consent"),
        _("The contact's current consent for a channel, for advertising, or for night-time advertising."),
        "reachability",
        ("purpose", "state"),
        ("purpose",),
    ),
    "list": Kind(_("static list"), _("Is in a static list."), "membership", ("list",), ("list",)),
    "tag": Kind(_("tag"), _("Has a tag."), "membership", ("tag",), ("tag",)),
    "segment": Kind(
        _("another segment"),
        _("Is a member of another segment (NOT: excluded from it). Segments may not refer to each other in a cycle."),
        "membership",
        ("segment",),
        ("segment",),
    ),
}
FIELDS_BY_KIND = {"field": CONTACT_FIELDS, "cart": CART_FIELDS, "orders": ORDER_FIELDS}
WHERE_FIELDS_BY_KIND = {"coupon": COUPON_FIELDS, "wishlist": WISHLIST_FIELDS}

# --- Errors -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleError:
    """One problem in a rule document: where (``root.children[2].count``), what (a stable code), and a message in
    the active language."""

    path: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RulesInvalid(ValueError):
    """Raised by ``validate_rules``; ``errors`` lists every problem found (not only the first)."""

    def __init__(self, errors: list[RuleError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

    def as_json(self) -> dict[str, Any]:
        return {"errors": [e.as_dict() for e in self.errors]}


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


class _Validator:
    def __init__(self, *, segment_id: int | None, resolve_refs: bool):
        self.errors: list[RuleError] = []
        self.segment_id = segment_id
        self.resolve_refs = resolve_refs
        self.nodes = 0
        self.list_ids: dict[int, str] = {}
        self.tag_names: dict[str, str] = {}
        self.segment_ids: dict[int, str] = {}

    def error(self, path: str, code: str, message: str) -> None:
        self.errors.append(RuleError(path, code, message))

    # -- document and nodes --

    def document(self, rules: Any) -> None:
        if not isinstance(rules, dict):
            self.error("", "not_object", gettext("The rules must be a JSON object."))
            return
        for key in rules:
            if key not in ("version", "root"):
                self.error(str(key), "unknown_key", gettext("Unknown key “%(key)s”.") % {"key": key})
        version = rules.get("version")
        if version != SCHEMA_VERSION:
            self.error(
                "version",
                "version",
                gettext("Unsupported rule version %(version)s: this CRM reads version %(supported)d.")
                % {"version": "(none)" if version is None else repr(version), "supported": SCHEMA_VERSION},
            )
        root = rules.get("root")
        if root is None:
            self.error("root", "required", gettext("The root group is missing."))
            return
        if not isinstance(root, dict) or root.get("type") != "group":
            self.error("root", "root_group", gettext("The root must be a group."))
            return
        self.node(root, "root", depth=1)
        if self.resolve_refs:
            self.check_references()

    def node(self, node: Any, path: str, *, depth: int) -> None:
        self.nodes += 1
        if self.nodes == MAX_NODES + 1:
            self.error(
                path, "too_many", gettext("Too many conditions: at most %(max)d in one segment.") % {"max": MAX_NODES}
            )
        if not isinstance(node, dict):
            self.error(path, "not_object", gettext("A condition must be a JSON object."))
            return
        kind_name = node.get("type")
        kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            self.error(
                _join(path, "type"),
                "unknown_type",
                gettext("Unknown condition type “%(type)s”; use one of: %(types)s.")
                % {"type": kind_name, "types": ", ".join(KINDS)},
            )
            return
        for key in node:
            if key not in COMMON_KEYS and key not in kind.keys:
                self.error(_join(path, key), "unknown_key", gettext("Unknown key “%(key)s”.") % {"key": key})
        missing = [key for key in kind.required if node.get(key) is None]
        for key in missing:
            self.error(_join(path, key), "required", gettext("This is required."))
        if "negate" in node and not isinstance(node["negate"], bool):
            self.error(_join(path, "negate"), "type", gettext("Must be true or false."))
        if "id" in node and not (isinstance(node["id"], str | int) and len(str(node["id"])) <= 64):
            self.error(_join(path, "id"), "type", gettext("Must be a short text (at most 64 characters)."))
        if missing:
            return
        getattr(self, f"kind_{kind_name}")(node, path, depth=depth)

    def kind_group(self, node: dict, path: str, *, depth: int) -> None:
        op = node.get("op", "and")
        if op not in ("and", "or"):
            self.error(_join(path, "op"), "choice", gettext("A group's operator is “and” or “or”."))
        children = node["children"]
        if not isinstance(children, list):
            self.error(_join(path, "children"), "type", gettext("Must be a list of conditions."))
            return
        if depth >= MAX_DEPTH and children:
            self.error(
                _join(path, "children"),
                "too_deep",
                gettext("Groups are nested too deeply: at most %(max)d levels.") % {"max": MAX_DEPTH},
            )
            return
        for index, child in enumerate(children):
            self.node(child, f"{path}.children[{index}]", depth=depth + 1)

    def kind_field(self, node: dict, path: str, *, depth: int) -> None:
        spec = self.field_spec(node, path, FIELDS_BY_KIND[node["type"]])
        if spec is not None:
            self.predicate(node, path, spec)

    kind_cart = kind_field
    kind_orders = kind_field

    def kind_attribute(self, node: dict, path: str, *, depth: int) -> None:
        key = node["key"]
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY or _has_control(key):
            self.error(
                _join(path, "key"),
                "key",
                gettext("An attribute key is a non-empty text of at most %(max)d characters.") % {"max": MAX_KEY},
            )
        value_type = node["value_type"]
        if value_type not in JSON_TYPES:
            self.error(
                _join(path, "value_type"),
                "choice",
                gettext("Compare an attribute as one of: %(types)s.") % {"types": ", ".join(JSON_TYPES)},
            )
            return
        self.predicate(node, path, json_spec(value_type))

    def kind_event(self, node: dict, path: str, *, depth: int) -> None:
        if not _choice(node["op"], EVENT_OPS):
            self.error(_join(path, "op"), "choice", gettext("Use “did” or “did_not”."))
        name = node.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 200):
            self.error(
                _join(path, "name"),
                "name",
                gettext("An event name is a non-empty text of at most 200 characters (or leave it out for any event)."),
            )
        where = node.get("where")
        if where is not None:
            if not isinstance(where, list):
                self.error(_join(path, "where"), "type", gettext("Must be a list of conditions."))
            else:
                for index, item in enumerate(where):
                    self.property_condition(item, f"{path}.where[{index}]")
        count = node.get("count")
        if count is not None:
            self.count(count, _join(path, "count"))
        when = node.get("when")
        if when is not None:
            self.when(when, _join(path, "when"))

    def property_condition(self, item: Any, path: str) -> None:
        if not isinstance(item, dict):
            self.error(path, "not_object", gettext("A condition must be a JSON object."))
            return
        for key in item:
            if key not in ("property", "value_type", "op", "value", "unit", "id"):
                self.error(_join(path, key), "unknown_key", gettext("Unknown key “%(key)s”.") % {"key": key})
        prop = item.get("property")
        if prop is None:
            self.error(_join(path, "property"), "required", gettext("This is required."))
        elif parse_property_path(prop) is None:
            self.error(
                _join(path, "property"),
                "property",
                gettext(
                    "A property is a name, or a path of names separated by dots, such as “products[].category”; "
                    "“[]” after one name means any item of that list."
                ),
            )
        value_type = item.get("value_type")
        if value_type not in JSON_TYPES:
            self.error(
                _join(path, "value_type"),
                "choice",
                gettext("Compare a property as one of: %(types)s.") % {"types": ", ".join(JSON_TYPES)},
            )
            return
        if item.get("op") is None:
            self.error(_join(path, "op"), "required", gettext("This is required."))
            return
        self.predicate(item, path, json_spec(value_type))

    def count(self, count: Any, path: str) -> None:
        if not isinstance(count, dict):
            self.error(path, "not_object", gettext('Must be an object such as {"op": "at_least", "value": 3}.'))
            return
        for key in count:
            if key not in ("op", "value"):
                self.error(_join(path, key), "unknown_key", gettext("Unknown key “%(key)s”.") % {"key": key})
        op = count.get("op")
        if not _choice(op, COUNT_OPS):
            self.error(_join(path, "op"), "choice", gettext("Use “at_least”, “at_most” or “exactly”."))
            return
        value = count.get("value")
        low = 1 if op == "at_least" else 0
        if not _is_int(value) or not low <= value <= MAX_COUNT:
            self.error(
                _join(path, "value"),
                "count",
                gettext("A whole number from %(low)d to %(high)d.") % {"low": low, "high": MAX_COUNT},
            )

    def when(self, when: Any, path: str) -> None:
        if not isinstance(when, dict):
            self.error(path, "not_object", gettext('Must be an object such as {"op": "within_last", ...}.'))
            return
        for key in when:
            if key not in ("op", "value", "unit"):
                self.error(_join(path, key), "unknown_key", gettext("Unknown key “%(key)s”.") % {"key": key})
        op = when.get("op")
        if op not in WHEN_OPS:
            self.error(
                _join(path, "op"),
                "choice",
                gettext("Use one of: %(ops)s.") % {"ops": ", ".join(WHEN_OPS)},
            )
            return
        if op == "ever":
            self.no_value(when, path)
            return
        self.predicate(when, path, FieldSpec("when", DATETIME, _("time")), ops=TIME_OPS)

    def kind_coupon(self, node: dict, path: str, *, depth: int) -> None:
        if not _choice(node["state"], COUPON_STATES):
            self.error(
                _join(path, "state"),
                "choice",
                gettext("Use one of: %(states)s.") % {"states": ", ".join(COUPON_STATES)},
            )
        self.where(node, path, COUPON_FIELDS)

    def kind_wishlist(self, node: dict, path: str, *, depth: int) -> None:
        self.where(node, path, WISHLIST_FIELDS)

    def where(self, node: dict, path: str, fields: dict[str, FieldSpec]) -> None:
        where = node.get("where")
        if where is None:
            return
        if not isinstance(where, list):
            self.error(_join(path, "where"), "type", gettext("Must be a list of conditions."))
            return
        for index, item in enumerate(where):
            item_path = f"{path}.where[{index}]"
            if not isinstance(item, dict):
                self.error(item_path, "not_object", gettext("A condition must be a JSON object."))
                continue
            for key in item:
                if key not in ("field", "op", "value", "unit", "id"):
                    self.error(_join(item_path, key), "unknown_key", gettext("Unknown key “%(key)s”.") % {"key": key})
            spec = self.field_spec(item, item_path, fields)
            if spec is not None:
                if item.get("op") is None:
                    self.error(_join(item_path, "op"), "required", gettext("This is required."))
                else:
                    self.predicate(item, item_path, spec)

    def kind_reachable(self, node: dict, path: str, *, depth: int) -> None:
        if not _choice(node["channel"], CHANNELS):
            self.error(
                _join(path, "channel"),
                "choice",
                gettext("Use one of: %(channels)s.") % {"channels": ", ".join(CHANNELS)},
            )

    def kind_consent(self, node: dict, path: str, *, depth: int) -> None:
        if not _choice(node["purpose"], ConsentPurpose.values):
            self.error(
                _join(path, "purpose"),
                "choice",
                gettext("Use one of: %(purposes)s.") % {"purposes": ", ".join(ConsentPurpose.values)},
            )
        if not _choice(node.get("state", "granted"), CONSENT_STATES):
            self.error(
                _join(path, "state"),
                "choice",
                gettext("Use one of: %(states)s.") % {"states": ", ".join(CONSENT_STATES)},
            )

    def kind_list(self, node: dict, path: str, *, depth: int) -> None:
        if not _is_int(node["list"]) or node["list"] < 1:
            self.error(_join(path, "list"), "type", gettext("A static list is given by its number (ID)."))
        else:
            self.list_ids.setdefault(node["list"], _join(path, "list"))

    def kind_tag(self, node: dict, path: str, *, depth: int) -> None:
        tag = node["tag"]
        if not isinstance(tag, str) or not tag.strip() or len(tag) > 100:
            self.error(_join(path, "tag"), "type", gettext("A tag is given by its name."))
        else:
            self.tag_names.setdefault(tag, _join(path, "tag"))

    def kind_segment(self, node: dict, path: str, *, depth: int) -> None:
        ref = node["segment"]
        if not _is_int(ref) or ref < 1:
            self.error(_join(path, "segment"), "type", gettext("A segment is given by its number (ID)."))
        elif self.segment_id is not None and ref == self.segment_id:
            self.error(_join(path, "segment"), "cycle", gettext("A segment cannot include itself."))
        else:
            self.segment_ids.setdefault(ref, _join(path, "segment"))

    # -- fields and predicates --

    def field_spec(self, node: dict, path: str, fields: dict[str, FieldSpec]) -> FieldSpec | None:
        name = node.get("field")
        if name is None:
            self.error(_join(path, "field"), "required", gettext("This is required."))
            return None
        spec = fields.get(name) if isinstance(name, str) else None
        if spec is None:
            self.error(
                _join(path, "field"),
                "choice",
                gettext("Unknown field “%(field)s”; use one of: %(fields)s.")
                % {"field": name, "fields": ", ".join(fields)},
            )
        return spec

    def no_value(self, node: dict, path: str) -> None:
        for key in ("value", "unit"):
            if node.get(key) is not None:
                self.error(_join(path, key), "unexpected", gettext("This operator takes no value."))

    def predicate(self, node: dict, path: str, spec: FieldSpec, *, ops: Iterable[str] | None = None) -> None:
        op = node.get("op")
        allowed = tuple(ops) if ops is not None else spec.ops
        if op not in allowed:
            self.error(
                _join(path, "op"),
                "op",
                gettext("“%(op)s” is not an operator for %(type)s values; use one of: %(ops)s.")
                % {"op": op, "type": TYPE_LABELS[spec.type], "ops": ", ".join(allowed)},
            )
            return
        shape = OPS[op].value
        value_path = _join(path, "value")
        value = node.get("value")
        if shape != AMOUNT and node.get("unit") is not None:
            self.error(_join(path, "unit"), "unexpected", gettext("Only relative times take a unit."))
        if shape == NONE:
            self.no_value(node, path)
            return
        if value is None:
            self.error(value_path, "required", gettext("This operator needs a value."))
            return
        if shape == AMOUNT:
            unit = node.get("unit", "days")
            if unit not in spec.units:
                self.error(
                    _join(path, "unit"),
                    "unit",
                    gettext("Use one of: %(units)s.") % {"units": ", ".join(spec.units)},
                )
                return
            if not _is_int(value) or not 1 <= value <= MAX_AMOUNT[unit]:
                self.error(
                    value_path,
                    "amount",
                    gettext("A whole number from 1 to %(max)d.") % {"max": MAX_AMOUNT[unit]},
                )
            return
        if shape == LIST:
            if not isinstance(value, list) or not value or len(value) > MAX_LIST_VALUES:
                self.error(
                    value_path,
                    "list",
                    gettext("A list of 1 to %(max)d values.") % {"max": MAX_LIST_VALUES},
                )
                return
            for index, item in enumerate(value):
                self.scalar(item, f"{value_path}[{index}]", spec)
            return
        if shape == PAIR:
            if not isinstance(value, list) or len(value) != 2:
                self.error(value_path, "pair", gettext("A pair of values: [from, to]."))
                return
            ok = self.scalar(value[0], f"{value_path}[0]", spec) and self.scalar(value[1], f"{value_path}[1]", spec)
            if ok and _as_comparable(value[0], spec) > _as_comparable(value[1], spec):
                self.error(value_path, "order", gettext("The first value must not be greater than the second."))
            return
        if op in ("contains", "starts_with") and value == "":
            self.error(value_path, "empty", gettext("Give the text to look for."))
            return
        self.scalar(value, value_path, spec)

    def scalar(self, value: Any, path: str, spec: FieldSpec) -> bool:
        if spec.type == TEXT:
            if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
                self.error(path, "text", gettext("A text of at most %(max)d characters.") % {"max": MAX_TEXT})
                return False
            return True
        if spec.type == NUMBER:
            if not _is_number(value):
                self.error(path, "number", gettext("A number."))
                return False
            if spec.integer and not _is_int(value):
                self.error(path, "integer", gettext("A whole number."))
                return False
            return True
        if spec.type in (DATE, DATETIME):
            if not isinstance(value, str) or not DATE_RE.match(value) or _parse_date(value) is None:
                self.error(path, "date", gettext("A date written as YYYY-MM-DD, e.g. 2025-03-01."))
                return False
            return True
        return True  # pragma: no cover (booleans take no value)

    # -- references (database) --

    def check_references(self) -> None:
        from crm.models import ContactList, Segment, Tag

        if self.list_ids:
            found = set(ContactList.objects.filter(pk__in=list(self.list_ids)).values_list("pk", flat=True))
            for list_id, path in self.list_ids.items():
                if list_id not in found:
                    self.error(path, "missing", gettext("Static list #%(id)d does not exist.") % {"id": list_id})
        if self.tag_names:
            found_tags = set(Tag.objects.filter(name__in=list(self.tag_names)).values_list("name", flat=True))
            for name, path in self.tag_names.items():
                if name not in found_tags:
                    self.error(path, "missing", gettext("There is no tag “%(tag)s”.") % {"tag": name})
        if self.segment_ids:
            known = dict(Segment.objects.filter(pk__in=list(self.segment_ids)).values_list("pk", "name"))
            for segment_id, path in self.segment_ids.items():
                if segment_id not in known:
                    self.error(path, "missing", gettext("Segment #%(id)d does not exist.") % {"id": segment_id})
                    continue
                chain = find_cycle(start=segment_id, target=self.segment_id)
                if chain:
                    names = dict(Segment.objects.filter(pk__in=chain).values_list("pk", "name"))
                    self.error(
                        path,
                        "cycle",
                        gettext("Segments would refer to each other in a cycle: %(chain)s.")
                        % {"chain": " → ".join(names.get(pk, f"#{pk}") for pk in chain)},
                    )


def find_cycle(*, start: int, target: int | None) -> list[int]:
    """The chain of segment ids ``target → start → … → target`` if ``start`` (directly or through others) refers
    back to ``target``; empty when there is no cycle or no target (a new segment cannot be referred to yet)."""
    if target is None:
        return []
    from crm.models import Segment

    seen: set[int] = set()
    stack: list[tuple[int, list[int]]] = [(start, [target, start])]
    while stack:
        current, chain = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        rules = Segment.objects.filter(pk=current).values_list("rules", flat=True).first()
        for ref in segment_references(rules):
            if ref == target:
                return [*chain, target]
            stack.append((ref, [*chain, ref]))
    return []


def segment_references(rules: Any) -> list[int]:
    """The ids of the segments a rule document refers to (directly), in document order."""
    found: list[int] = []

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if node.get("type") == "segment" and _is_int(node.get("segment")):
            found.append(node["segment"])
        for child in node.get("children") or []:
            walk(child)

    if isinstance(rules, dict):
        walk(rules.get("root"))
    return found


def validate_rules(rules: Any, *, segment_id: int | None = None, check_references: bool = True) -> dict:
    """Check a rule document; return it unchanged, or raise :class:`RulesInvalid` listing every problem.

    ``segment_id`` is the segment being saved (for cycles through other segments); ``check_references`` looks up
    static lists, tags and segments in the database (on by default).
    """
    validator = _Validator(segment_id=segment_id, resolve_refs=check_references)
    validator.document(rules)
    if validator.errors:
        raise RulesInvalid(validator.errors)
    return rules


# --- Helpers ------------------------------------------------------------------------------------------------------


def json_spec(value_type: str) -> FieldSpec:
    """The spec of a free-form JSON value compared as ``value_type`` (always nullable; dates by whole days)."""
    return FieldSpec("value", value_type, TYPE_LABELS[value_type], nullable=True)


def parse_property_path(path: Any) -> tuple[tuple[str, ...], int | None] | None:
    """``"products[].category"`` → ``(("products", "category"), 0)``: the keys and the index of the one list step
    (None if none). None when the path is not valid (empty names, two list steps, control characters)."""
    if not isinstance(path, str) or not path or len(path) > MAX_KEY:
        return None
    keys: list[str] = []
    array_at = None
    for index, step in enumerate(path.split(".")):
        if not PROPERTY_STEP.match(step):
            return None
        if step.endswith("[]"):
            if array_at is not None:
                return None
            array_at = index
            step = step[:-2]
        keys.append(step)
    return tuple(keys), array_at


def _choice(value: Any, choices: Iterable[str]) -> bool:
    """``value`` is one of the string ``choices`` (a list or an object is not: and is not hashable either)."""
    return isinstance(value, str) and value in choices


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 for ch in text)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and abs(value) < 1e15


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _as_comparable(value: Any, spec: FieldSpec) -> Any:
    return value if spec.type == NUMBER else str(value)


# --- Description for a rule builder -------------------------------------------------------------------------------


def _labels(text: Any) -> dict[str, str]:
    result = {}
    for language in LANGUAGES:
        with translation.override(language):
            result[language] = str(text)
    return result


def _field_description(spec: FieldSpec) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": spec.name,
        "type": spec.type,
        "label": _labels(spec.label),
        "ops": list(spec.ops),
    }
    if spec.units:
        described["units"] = list(spec.units)
    if spec.integer:
        described["integer"] = True
    if spec.help:
        described["help"] = _labels(spec.help)
    return described


def _choices(mapping: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"value": value, "label": _labels(label)} for value, label in mapping.items()]


def schema_description() -> dict[str, Any]:
    """Everything a rule builder needs, as JSON: kinds with their keys and fields, operators per value type, units,
    choices, and every label in Korean and English. Built from the tables the validator uses."""
    kinds: dict[str, Any] = {}
    for name, kind in KINDS.items():
        described: dict[str, Any] = {
            "label": _labels(kind.label),
            "help": _labels(kind.help),
            "category": kind.category,
            "keys": list(kind.keys),
            "required": list(kind.required),
        }
        if name in FIELDS_BY_KIND:
            described["fields"] = [_field_description(spec) for spec in FIELDS_BY_KIND[name].values()]
        if name in WHERE_FIELDS_BY_KIND:
            described["where_fields"] = [_field_description(spec) for spec in WHERE_FIELDS_BY_KIND[name].values()]
        kinds[name] = described
    kinds["group"]["ops"] = _choices({"and": _("all of (AND)"), "or": _("any of (OR)")})
    kinds["attribute"]["value_types"] = [_field_description(json_spec(t)) for t in JSON_TYPES]
    kinds["event"].update(
        ops=_choices(EVENT_OPS),
        property_value_types=[_field_description(json_spec(t)) for t in JSON_TYPES],
        count_ops=_choices(COUNT_OPS),
        when=_field_description(FieldSpec("when", DATETIME, _("time"))) | {"ops": list(WHEN_OPS)},
    )
    kinds["coupon"]["states"] = _choices(COUPON_STATES)
    kinds["reachable"]["channels"] = _choices(CHANNELS)
    kinds["consent"]["purposes"] = _choices(dict(ConsentPurpose.choices))
    kinds["consent"]["states"] = _choices(CONSENT_STATES)
    return {
        "version": SCHEMA_VERSION,
        "languages": list(LANGUAGES),
        "categories": _choices(CATEGORIES),
        "types": {name: {"label": _labels(TYPE_LABELS[name]), "ops": list(ops)} for name, ops in TYPE_OPS.items()},
        "ops": {
            name: {
                "label": _labels(op.label),
                "value": op.value,
                **({"negates": op.negates} if op.negates else {}),
                **({"phrase": _labels(op.phrase)} if op.phrase else {}),
            }
            for name, op in OPS.items()
        }
        | {"ever": {"label": _labels(WHEN_LABELS["ever"]), "value": NONE}},
        "units": _choices(UNITS),
        "kinds": kinds,
        "empty_rules": EMPTY_RULES,
        "limits": {"depth": MAX_DEPTH, "conditions": MAX_NODES, "list_values": MAX_LIST_VALUES},
    }


__all__ = [
    "EMPTY_RULES",
    "KINDS",
    "OPS",
    "SCHEMA_VERSION",
    "TYPE_OPS",
    "FieldSpec",
    "RuleError",
    "RulesInvalid",
    "parse_property_path",
    "schema_description",
    "segment_references",
    "validate_rules",
]
