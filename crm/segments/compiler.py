"""Compile a segment's rule document into one ORM query over contacts.

Every condition becomes a ``Q`` on ``Contact``: a plain lookup for contact columns, ``Exists`` for rows that belong to
the contact (events, cart, coupons, wishlist, consent, devices, lists, tags), a grouped ``IN`` subquery for event
counts, and hand-written JSON predicates (``crm.segments.jsonq``) for attributes and properties. Groups combine
them with AND/OR/NOT. Nothing is evaluated in Python per contact: ``segment_contacts`` is one SELECT, and
``segment_contains`` is the same WHERE clause restricted to one primary key.

Relative times are computed once, at ``now``, in the workspace time zone (``TIME_ZONE``): "today" is the calendar
day in Seoul even while it is still yesterday in UTC. Rolling windows (``within_last``, ``more_than_ago``,
``in_next``) on times are exact durations; on dates (attributes, properties) they count whole days.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from crm.models import Cart, Consent, Contact, Coupon, Device, Event, Segment, WishlistItem
from crm.phones import InvalidPhoneNumber, normalize_phone
from crm.segments.jsonq import JsonMatch, JsonTest
from crm.segments.schema import (
    CART_FIELDS,
    CONTACT_FIELDS,
    COUPON_FIELDS,
    DATETIME,
    EMPTY_RULES,
    NUMBER,
    OPS,
    ORDER_FIELDS,
    TEXT,
    WISHLIST_FIELDS,
    FieldSpec,
    RuleError,
    RulesInvalid,
    parse_property_path,
    validate_rules,
)

NOBODY = Q(pk__in=[])
#: Always true, and (unlike an empty ``Q()``) still a condition when negated: NOT of an empty AND group is nobody.
EVERYBODY = Q(pk__isnull=False)
#: An address an email can be sent to; addresses are normalized when they are stored.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+[0-9]{8,15}$"
#: Korean mobile numbers (010, 011, 016–019): KakaoTalk messages (AlimTalk, FriendTalk) go to these.
KAKAO_PATTERN = r"^\+821[016789][0-9]{7,8}$"


@dataclass(frozen=True)
class Clock:
    """``now`` and the calendar around it in the workspace time zone."""

    now: datetime
    tz: ZoneInfo

    @classmethod
    def at(cls, now: datetime | None = None) -> Clock:
        return cls(now or timezone.now(), timezone.get_default_timezone())

    @property
    def today(self) -> date:
        return self.now.astimezone(self.tz).date()

    def start(self, day: date) -> datetime:
        """The first instant of ``day`` in the workspace time zone."""
        return datetime.combine(day, time.min, tzinfo=self.tz)

    @staticmethod
    def delta(value: int, unit: str) -> timedelta:
        return timedelta(**{unit: value})

    def week(self) -> tuple[date, date]:
        monday = self.today - timedelta(days=self.today.weekday())
        return monday, monday + timedelta(days=6)

    def month(self) -> tuple[date, date]:
        first = self.today.replace(day=1)
        return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def _day(value: str) -> date:
    return date.fromisoformat(value)


def time_lookups(op: str, value: Any, unit: str | None, clock: Clock) -> list[tuple[str, datetime]]:
    """A positive time operator as lookups on a datetime column: ``[("gte", t1), ("lt", t2)]``."""
    one = timedelta(days=1)
    if op == "before":
        return [("lt", clock.start(_day(value)))]
    if op == "after":
        return [("gte", clock.start(_day(value) + one))]
    if op == "on":
        return [("gte", clock.start(_day(value))), ("lt", clock.start(_day(value) + one))]
    if op == "between":
        return [("gte", clock.start(_day(value[0]))), ("lt", clock.start(_day(value[1]) + one))]
    if op == "within_last":
        return [("gte", clock.now - clock.delta(value, unit or "days")), ("lte", clock.now)]
    if op == "more_than_ago":
        return [("lt", clock.now - clock.delta(value, unit or "days"))]
    if op == "in_next":
        return [("gt", clock.now), ("lte", clock.now + clock.delta(value, unit or "days"))]
    if op == "today":
        return [("gte", clock.start(clock.today)), ("lt", clock.start(clock.today + one))]
    if op == "this_week":
        monday, sunday = clock.week()
        return [("gte", clock.start(monday)), ("lt", clock.start(sunday + one))]
    if op == "this_month":
        first, last = clock.month()
        return [("gte", clock.start(first)), ("lt", clock.start(last + one))]
    if op == "ever":
        return []
    raise ValueError(f"not a time operator: {op}")  # pragma: no cover (validated)


def date_bounds(op: str, value: Any, clock: Clock) -> tuple[date | None, date | None]:
    """A positive time operator on date-only values as an inclusive range of days (None: unbounded)."""
    one = timedelta(days=1)
    today = clock.today
    if op == "before":
        return None, _day(value) - one
    if op == "after":
        return _day(value) + one, None
    if op == "on":
        return _day(value), _day(value)
    if op == "between":
        return _day(value[0]), _day(value[1])
    if op == "within_last":
        return today - timedelta(days=value), today
    if op == "more_than_ago":
        return None, today - timedelta(days=value) - one
    if op == "in_next":
        return today, today + timedelta(days=value)
    if op == "today":
        return today, today
    if op == "this_week":
        return clock.week()
    if op == "this_month":
        return clock.month()
    raise ValueError(f"not a time operator: {op}")  # pragma: no cover (validated)


def _lookups_q(column: str, lookups: list[tuple[str, Any]]) -> Q:
    return Q(**{f"{column}__{lookup}": value for lookup, value in lookups})


def column_q(column: str, spec: FieldSpec, node: dict, clock: Clock) -> Q:
    """A predicate (``op``/``value``/``unit`` of ``node``) on a model column of type ``spec.type``."""
    op, value, unit = node["op"], node.get("value"), node.get("unit")
    positive = OPS[op].negates
    if positive:
        return ~column_q(column, spec, {**node, "op": positive}, clock)
    if op == "is_set":
        q = Q(**{f"{column}__isnull": False})
        return q & ~Q(**{column: ""}) if spec.type == TEXT else q
    if spec.type == TEXT:
        if column == "phone" and op in ("eq", "in"):
            value = [_phone(v) for v in value] if op == "in" else _phone(value)
        return Q(
            **{
                {"eq": column, "in": f"{column}__in", "contains": f"{column}__icontains"}.get(
                    op, f"{column}__istartswith"
                ): value
            }
        )
    if spec.type == NUMBER:
        if op == "between":
            return Q(**{f"{column}__gte": value[0], f"{column}__lte": value[1]})
        return Q(**{column if op == "eq" else f"{column}__{op}": value})
    if spec.type == DATETIME:
        return _lookups_q(column, time_lookups(op, value, unit, clock))
    raise ValueError(f"no column predicate for {spec.type}/{op}")  # pragma: no cover


def _phone(value: str) -> str:
    try:
        return normalize_phone(value)
    except InvalidPhoneNumber:
        return value


def json_q(source: str, path: tuple[str, ...], array_at: int | None, value_type: str, node: dict, clock: Clock) -> Q:
    """A predicate on the JSON value at ``path`` of the document column ``source``, compared as ``value_type``."""
    op, value = node["op"], node.get("value")
    positive = OPS[op].negates
    if positive:
        return ~json_q(source, path, array_at, value_type, {**node, "op": positive}, clock)

    def test(kind: str, test_op: str, values: tuple = ()) -> Q:
        return Q(JsonMatch(source, JsonTest(path, kind, test_op, values, array_at)))

    if op == "is_set":
        return test("set", "is_set")
    if value_type == "boolean":
        return test("boolean", op)
    if value_type == "text":
        return test("text", op, tuple(value) if op == "in" else (value,))
    if value_type == "number":
        return test("number", op, tuple(value) if op == "between" else (value,))
    low, high = date_bounds(op, value, clock)
    if low is not None and high is not None:
        if low == high:
            return test("date", "eq", (low.isoformat(),))
        return test("date", "between", (low.isoformat(), high.isoformat()))
    if low is not None:
        return test("date", "gte", (low.isoformat(),))
    return test("date", "lte", (high.isoformat(),))


def days_since_q(column: str, node: dict, clock: Clock) -> Q:
    """Whole calendar days (workspace time zone) since the time in ``column``: 0 today, 1 yesterday."""
    op, value = node["op"], node.get("value")
    positive = OPS[op].negates
    if positive:
        return ~days_since_q(column, {**node, "op": positive}, clock)
    if op == "is_set":
        return Q(**{f"{column}__isnull": False})

    def start(days_ago: int) -> datetime:
        return clock.start(clock.today - timedelta(days=days_ago))

    if op == "gte":
        return Q(**{f"{column}__lt": start(value - 1)})
    if op == "gt":
        return Q(**{f"{column}__lt": start(value)})
    if op == "lte":
        return Q(**{f"{column}__gte": start(value)})
    if op == "lt":
        return Q(**{f"{column}__gte": start(value - 1)})
    low, high = (value, value) if op == "eq" else value
    return Q(**{f"{column}__gte": start(high), f"{column}__lt": start(low - 1)})


class Compiler:
    """Compiles rule documents at one ``now``. ``on_node(path, node, q)`` (if given) sees every node's own Q."""

    def __init__(
        self,
        *,
        now: datetime | None = None,
        segment_id: int | None = None,
        on_node: Callable[[str, dict, Q], None] | None = None,
    ):
        self.clock = Clock.at(now)
        self.stack: list[int] = [segment_id] if segment_id else []
        self.on_node = on_node

    # -- documents --

    def rules(self, rules: Any, *, path: str = "root") -> Q:
        rules = rules or EMPTY_RULES
        validate_rules(rules, check_references=False)
        return self.node(rules["root"], path)

    def node(self, node: dict, path: str) -> Q:
        q = getattr(self, f"kind_{node['type']}")(node, path)
        if node.get("negate"):
            q = ~q
        if self.on_node is not None:
            self.on_node(path, node, q)
        return q

    def kind_group(self, node: dict, path: str) -> Q:
        parts = [self.node(child, f"{path}.children[{i}]") for i, child in enumerate(node["children"])]
        if node.get("op", "and") == "or":
            q = NOBODY
            for part in parts:
                q = part if q is NOBODY else q | part
            return q
        if not parts:
            return EVERYBODY
        q = parts[0]
        for part in parts[1:]:
            q &= part
        return q

    # -- profile --

    def kind_field(self, node: dict, path: str) -> Q:
        spec = CONTACT_FIELDS[node["field"]]
        return column_q(spec.column or spec.name, spec, node, self.clock)

    def kind_attribute(self, node: dict, path: str) -> Q:
        return json_q("attributes", (node["key"],), None, node["value_type"], node, self.clock)

    # -- behaviour --

    def event_filter(self, node: dict) -> Q:
        """The events a behaviour condition counts (name, properties, time), without the contact."""
        q = Q(name=node["name"]) if node.get("name") else Q()
        when = node.get("when") or {"op": "ever"}
        q &= _lookups_q("occurred_at", time_lookups(when["op"], when.get("value"), when.get("unit"), self.clock))
        for item in node.get("where") or []:
            keys, array_at = parse_property_path(item["property"])
            q &= json_q("properties", keys, array_at, item["value_type"], item, self.clock)
        return q

    def kind_event(self, node: dict, path: str) -> Q:
        events = self.event_filter(node)
        count = node.get("count") or {"op": "at_least", "value": 1}
        op, n = count["op"], count["value"]
        if (op == "at_least" and n == 1) or (op == "exactly" and n == 0) or (op == "at_most" and n == 0):
            q = Q(Exists(Event.objects.filter(events, contact=OuterRef("pk"))))
            if op != "at_least":
                q = ~q
        else:
            grouped = Event.objects.filter(events).order_by().values("contact").annotate(n=Count("*"))
            if op == "at_least":
                q = Q(pk__in=grouped.filter(n__gte=n).values("contact"))
            elif op == "exactly":
                q = Q(pk__in=grouped.filter(n=n).values("contact"))
            else:  # at_most n (n ≥ 1): nobody with more
                q = ~Q(pk__in=grouped.filter(n__gt=n).values("contact"))
        return ~q if node["op"] == "did_not" else q

    # -- commerce --

    def kind_cart(self, node: dict, path: str) -> Q:
        field = node["field"]
        not_empty = Q(Exists(Cart.objects.filter(contact=OuterRef("pk")).exclude(items=[])))
        if field == "items":
            return not_empty if node["op"] == "not_empty" else ~not_empty
        spec = CART_FIELDS[field]
        rows = Cart.objects.filter(contact=OuterRef("pk")).exclude(items=[])
        return Q(Exists(rows.filter(column_q(spec.name, spec, node, self.clock))))

    def kind_coupon(self, node: dict, path: str) -> Q:
        return Q(Exists(Coupon.objects.filter(self.coupon_filter(node), contact=OuterRef("pk"))))

    def coupon_filter(self, node: dict) -> Q:
        """The coupons a coupon condition looks for, without the contact."""
        now = self.clock.now
        state = node["state"]
        q = Q()
        if state == "unused":
            q = Q(redeemed_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        elif state == "redeemed":
            q = Q(redeemed_at__isnull=False)
        elif state == "expired":
            q = Q(redeemed_at__isnull=True, expires_at__lte=now)
        for item in node.get("where") or []:
            spec = COUPON_FIELDS[item["field"]]
            q &= column_q(spec.name, spec, item, self.clock)
        return q

    def kind_wishlist(self, node: dict, path: str) -> Q:
        return Q(Exists(WishlistItem.objects.filter(self.wishlist_filter(node), contact=OuterRef("pk"))))

    def wishlist_filter(self, node: dict) -> Q:
        """The wishlist items a wishlist condition looks for, without the contact."""
        q = Q()
        for item in node.get("where") or []:
            spec = WISHLIST_FIELDS[item["field"]]
            if spec.json_path:
                q &= json_q(spec.column, spec.json_path, None, spec.type, item, self.clock)
            else:
                q &= column_q(spec.name, spec, item, self.clock)
        return q

    def kind_orders(self, node: dict, path: str) -> Q:
        spec = ORDER_FIELDS[node["field"]]
        if spec.name == "days_since_last":
            return days_since_q(spec.column, node, self.clock)
        return column_q(spec.column or spec.name, spec, node, self.clock)

    # -- reachability and consent --

    def kind_reachable(self, node: dict, path: str) -> Q:
        channel = node["channel"]
        if channel == "email":
            return Q(email__regex=EMAIL_PATTERN)
        if channel == "sms":
            return Q(phone__regex=PHONE_PATTERN)
        if channel == "kakao":
            return Q(phone__regex=KAKAO_PATTERN)
        return Q(Exists(Device.objects.filter(contact=OuterRef("pk"), active=True)))

    def kind_consent(self, node: dict, path: str) -> Q:
        purpose, state = node["purpose"], node.get("state", "granted")
        consents = Consent.objects.filter(contact=OuterRef("pk"), purpose=purpose)
        if state == "unknown":
            return ~Q(Exists(consents))
        return Q(Exists(consents.filter(granted=state == "granted")))

    # -- membership --

    def kind_list(self, node: dict, path: str) -> Q:
        through = Contact.lists.through
        return Q(Exists(through.objects.filter(contact_id=OuterRef("pk"), contactlist_id=node["list"])))

    def kind_tag(self, node: dict, path: str) -> Q:
        through = Contact.tags.through
        return Q(Exists(through.objects.filter(contact_id=OuterRef("pk"), tag__name=node["tag"])))

    def kind_segment(self, node: dict, path: str) -> Q:
        ref = node["segment"]
        if ref in self.stack:
            chain = [*self.stack[self.stack.index(ref) :], ref]
            names = dict(Segment.objects.filter(pk__in=chain).values_list("pk", "name"))
            message = gettext("Segments refer to each other in a cycle: %(chain)s.") % {
                "chain": " → ".join(names.get(pk, f"#{pk}") for pk in chain)
            }
            raise RulesInvalid([RuleError(f"{path}.segment", "cycle", message)])
        rules = Segment.objects.filter(pk=ref).values_list("rules", flat=True).first()
        if rules is None and not Segment.objects.filter(pk=ref).exists():
            message = gettext("Segment #%(id)d does not exist.") % {"id": ref}
            raise RulesInvalid([RuleError(f"{path}.segment", "missing", message)])
        inner = Compiler(now=self.clock.now)
        inner.stack = [*self.stack, ref]
        return inner.rules(rules)


def compile_rules(rules: Any, *, now: datetime | None = None, segment_id: int | None = None) -> Q:
    """The Q on ``Contact`` for a rule document at ``now`` (raises ``RulesInvalid`` for a bad document or a cycle)."""
    return Compiler(now=now, segment_id=segment_id).rules(rules)


def segment_contacts(*, segment: Segment, now: datetime | None = None) -> QuerySet[Contact]:
    """The members of ``segment`` at ``now`` (default: now), erased contacts excluded: one query."""
    q = compile_rules(segment.rules, now=now, segment_id=segment.pk)
    return Contact.objects.not_erased().filter(q)


def segment_contains(*, segment: Segment, contact: Contact, now: datetime | None = None) -> bool:
    """Whether ``contact`` is a member at ``now``: the same WHERE clause as ``segment_contacts``, for one id."""
    return segment_contacts(segment=segment, now=now).filter(pk=contact.pk).exists()
