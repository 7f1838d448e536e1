"""Why is this contact (not) in this segment? Each condition of the rules, true or false for one contact.

The answer comes from the same compiled conditions as ``segment_contacts``: every node's Q is evaluated for the one
contact in a single query (``CASE WHEN <node> THEN true ELSE false END`` per node), so the explanation can never
disagree with the members list. Next to each condition is what was observed when that is cheap to read: the
attribute's value, how many matching events and when the last was, the cart, the matching coupons, the consent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.humanize.templatetags.humanize import intcomma
from django.db.models import BooleanField, Case, Count, Max, OuterRef, Q, Subquery, Value, When
from django.utils import formats, timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from crm.models import Cart, Consent, Contact, ContactList, Coupon, Device, Event, Segment, WishlistItem
from crm.segments.compiler import Compiler
from crm.segments.schema import (
    CHANNELS,
    CONSENT_STATES,
    COUNT_OPS,
    COUPON_STATES,
    EVENT_OPS,
    FIELDS_BY_KIND,
    KINDS,
    OPS,
    UNITS,
    WHEN_LABELS,
    WHERE_FIELDS_BY_KIND,
)


@dataclass
class NodeExplanation:
    path: str
    node: dict
    summary: str
    matched: bool
    observed: str = ""
    children: list[NodeExplanation] = field(default_factory=list)

    @property
    def is_group(self) -> bool:
        return self.node.get("type") == "group"


@dataclass
class Explanation:
    segment: Segment
    contact: Contact
    now: datetime
    member: bool
    erased: bool
    root: NodeExplanation

    def flat(self) -> list[tuple[int, NodeExplanation]]:
        """The nodes depth-first with their depth (for a template without recursion)."""
        out: list[tuple[int, NodeExplanation]] = []

        def walk(node: NodeExplanation, depth: int) -> None:
            out.append((depth, node))
            for child in node.children:
                walk(child, depth + 1)

        walk(self.root, 0)
        return out


def segment_explain(*, segment: Segment, contact: Contact, now: datetime | None = None) -> Explanation:
    """Each condition of ``segment`` evaluated for ``contact`` at ``now``, in one query."""
    now = now or timezone.now()
    captured: dict[str, tuple[dict, Q]] = {}
    compiler = Compiler(now=now, segment_id=segment.pk, on_node=lambda p, n, q: captured.__setitem__(p, (n, q)))
    compiler.rules(segment.rules)
    names = {path: f"n{index}" for index, path in enumerate(captured)}
    annotations: dict[str, Any] = {
        names[path]: Case(When(q, then=Value(True)), default=Value(False), output_field=BooleanField())
        for path, (_node, q) in captured.items()
    }
    for path, (node, _q) in captured.items():
        if node["type"] == "event":
            events = Event.objects.filter(compiler.event_filter(node), contact=OuterRef("pk")).order_by()
            grouped = events.values("contact")
            annotations[f"{names[path]}_count"] = Subquery(grouped.annotate(c=Count("pk")).values("c"))
            annotations[f"{names[path]}_last"] = Subquery(grouped.annotate(t=Max("occurred_at")).values("t"))
    row = Contact.objects.filter(pk=contact.pk).annotate(**annotations).values(*annotations).first() or {}
    observer = _Observer(contact, compiler, row, names)

    def build(path: str, node: dict) -> NodeExplanation:
        children = []
        if node["type"] == "group":
            children = [build(f"{path}.children[{i}]", child) for i, child in enumerate(node["children"])]
        return NodeExplanation(
            path=path,
            node=node,
            summary=describe(node),
            matched=bool(row.get(names[path])),
            observed=observer.observe(path, node),
            children=children,
        )

    rules = segment.rules or {"root": {"type": "group", "op": "and", "children": []}}
    root = build("root", rules["root"])
    erased = contact.erased_at is not None
    return Explanation(
        segment=segment, contact=contact, now=now, member=root.matched and not erased, erased=erased, root=root
    )


# --- What was observed --------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    if isinstance(value, datetime):
        return formats.date_format(timezone.localtime(value), "Y-m-d H:i")
    if isinstance(value, Decimal):
        return intcomma(value.quantize(Decimal("1")) if value == value.to_integral_value() else value)
    if isinstance(value, int | float):
        return intcomma(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class _Observer:
    def __init__(self, contact: Contact, compiler: Compiler, row: dict, names: dict[str, str]):
        self.contact = contact
        self.compiler = compiler
        self.row = row
        self.names = names

    def observe(self, path: str, node: dict) -> str:
        method = getattr(self, f"kind_{node['type']}", None)
        return method(path, node) if method else ""

    def kind_field(self, path: str, node: dict) -> str:
        return _show(getattr(self.contact, node["field"]))

    def kind_attribute(self, path: str, node: dict) -> str:
        attributes = self.contact.attributes or {}
        if node["key"] not in attributes:
            return gettext("not set")
        return _show(attributes[node["key"]])

    def kind_event(self, path: str, node: dict) -> str:
        count = self.row.get(f"{self.names[path]}_count") or 0
        last = self.row.get(f"{self.names[path]}_last")
        if not count:
            return gettext("no matching event")
        return gettext("%(count)s matching, last at %(last)s") % {"count": intcomma(count), "last": _show(last)}

    def kind_cart(self, path: str, node: dict) -> str:
        cart = Cart.objects.filter(contact=self.contact).first()
        if cart is None or not cart.items:
            return gettext("empty cart")
        return gettext("%(items)d item(s), %(value)s %(currency)s, last changed %(at)s") % {
            "items": len(cart.items),
            "value": _show(cart.value),
            "currency": cart.currency,
            "at": _show(cart.updated_at),
        }

    def kind_coupon(self, path: str, node: dict) -> str:
        coupons = Coupon.objects.filter(self.compiler.coupon_filter(node), contact=self.contact)
        codes = list(coupons.values_list("code", flat=True)[:5])
        return ", ".join(codes) if codes else gettext("no such coupon")

    def kind_wishlist(self, path: str, node: dict) -> str:
        items = WishlistItem.objects.filter(self.compiler.wishlist_filter(node), contact=self.contact)
        names = [item.name or item.product_id for item in items[:5]]
        return ", ".join(names) if names else gettext("no such item")

    def kind_orders(self, path: str, node: dict) -> str:
        contact = self.contact
        if node["field"] == "days_since_last":
            if contact.last_order_at is None:
                return gettext("never ordered")
            days = (self.compiler.clock.today - timezone.localtime(contact.last_order_at).date()).days
            return gettext("%(days)d day(s), last order %(at)s") % {"days": days, "at": _show(contact.last_order_at)}
        column = FIELDS_BY_KIND["orders"][node["field"]].column or node["field"]
        return _show(getattr(contact, column))

    def kind_reachable(self, path: str, node: dict) -> str:
        if node["channel"] == "email":
            return self.contact.email or gettext("no email")
        if node["channel"] in ("sms", "kakao"):
            return self.contact.phone or gettext("no phone")
        active = Device.objects.filter(contact=self.contact, active=True).count()
        return gettext("%(n)d active push token(s)") % {"n": active}

    def kind_consent(self, path: str, node: dict) -> str:
        consent = Consent.objects.filter(contact=self.contact, purpose=node["purpose"]).first()
        if consent is None:
            return gettext("never given nor withdrawn")
        state = gettext("granted") if consent.granted else gettext("withdrawn")
        return f"{state} ({_show(consent.changed_at)}, {consent.source})"


# --- Describing a condition in words --------------------------------------------------------------------------------


def _value_text(node: dict) -> str:
    op = node.get("op")
    value = node.get("value")
    if op is None or OPS.get(op) is None or OPS[op].value == "none":
        return ""
    if OPS[op].value == "amount":
        unit = UNITS.get(node.get("unit", "days"), node.get("unit"))
        return f"{value} {unit}"
    if OPS[op].value == "list":
        return ", ".join(f"“{v}”" for v in value or [])
    if OPS[op].value == "pair" and isinstance(value, list) and len(value) == 2:
        return f"{_plain(value[0])} ~ {_plain(value[1])}"
    return _plain(value) if not isinstance(value, str) else f"“{value}”"


def _plain(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return intcomma(value)
    return str(value)


def _predicate(label: Any, node: dict) -> str:
    """``field op value`` in the active language's order (Korean: ``field: value op``)."""
    op = OPS.get(node.get("op"))
    if op is not None and op.phrase is not None:
        unit = UNITS.get(node.get("unit", "days"), node.get("unit"))
        op_text = op.phrase % {"amount": _plain(node.get("value")), "unit": unit}
        return gettext("%(field)s %(op)s") % {"field": label, "op": op_text}
    op_text = str(op.label) if op else str(node.get("op"))
    value = _value_text(node)
    if not value:
        return gettext("%(field)s %(op)s") % {"field": label, "op": op_text}
    return gettext("%(field)s %(op)s %(value)s") % {"field": label, "op": op_text, "value": value}


def describe(node: dict) -> str:
    """A condition in words, in the active language, e.g. ``attribute “city” is “서울”``."""
    kind = node.get("type")
    negate = gettext("NOT") + " " if node.get("negate") else ""
    text = _describe(node, kind)
    return f"{negate}{text}"


def _describe(node: dict, kind: str) -> str:
    if kind == "group":
        count = len(node.get("children") or [])
        if node.get("op", "and") == "or":
            return gettext("any of these %(n)d conditions") % {"n": count}
        return gettext("all of these %(n)d conditions") % {"n": count}
    if kind in FIELDS_BY_KIND:
        spec = FIELDS_BY_KIND[kind].get(node.get("field"))
        label = f"{KINDS[kind].label}: {spec.label}" if kind != "field" and spec else (spec.label if spec else "?")
        return _predicate(label, node)
    if kind == "attribute":
        return _predicate(gettext("attribute “%(key)s”") % {"key": node.get("key")}, node)
    if kind == "event":
        return _describe_event(node)
    if kind in WHERE_FIELDS_BY_KIND:
        parts = []
        if kind == "coupon":
            parts.append(gettext("has a coupon (%(state)s)") % {"state": COUPON_STATES.get(node.get("state"), "?")})
        else:
            parts.append(gettext("has a wishlist item"))
        fields = WHERE_FIELDS_BY_KIND[kind]
        for item in node.get("where") or []:
            spec = fields.get(item.get("field"))
            parts.append(_predicate(spec.label if spec else item.get("field"), item))
        return ", ".join(parts)
    if kind == "reachable":
        return str(CHANNELS.get(node.get("channel"), node.get("channel")))
    if kind == "consent":
        from crm.models import ConsentPurpose

        purpose = dict(ConsentPurpose.choices).get(node.get("purpose"), node.get("purpose"))
        state = CONSENT_STATES.get(node.get("state", "granted"), "?")
        return gettext("consent to %(purpose)s: %(state)s") % {"purpose": purpose, "state": state}
    if kind == "list":
        name = ContactList.objects.filter(pk=node.get("list")).values_list("name", flat=True).first()
        return gettext("in the static list “%(name)s”") % {"name": name or f"#{node.get('list')}"}
    if kind == "tag":
        return gettext("has the tag “%(tag)s”") % {"tag": node.get("tag")}
    if kind == "segment":
        name = Segment.objects.filter(pk=node.get("segment")).values_list("name", flat=True).first()
        return gettext("in the segment “%(name)s”") % {"name": name or f"#{node.get('segment')}"}
    return str(kind)


def _describe_event(node: dict) -> str:
    name = node.get("name")
    event = f"“{name}”" if name else gettext("any event")
    did = EVENT_OPS.get(node.get("op"), node.get("op"))
    parts = [gettext("%(did)s %(event)s") % {"did": did, "event": event}]
    conditions = [
        _predicate(gettext("property “%(p)s”") % {"p": item.get("property")}, item) for item in node.get("where") or []
    ]
    if conditions:
        parts.append(gettext("where %(conditions)s") % {"conditions": ", ".join(conditions)})
    count = node.get("count")
    if count:
        parts.append(
            gettext("%(op)s %(n)s time(s)") % {"op": COUNT_OPS.get(count.get("op"), "?"), "n": count.get("value")}
        )
    when = node.get("when") or {"op": "ever"}
    if when.get("op") == "ever":
        parts.append(str(WHEN_LABELS["ever"]))
    else:
        parts.append(_predicate(_("time"), when))
    return " ".join(parts)
