"""Hostile input to the segment rule parser and compiler (issue #12): whatever JSON arrives (from the rule
builder, the admin's JSON field, an import), ``validate_rules`` either refuses it with ``RulesInvalid`` or accepts
it, and an accepted document compiles to a query that runs on the database — never another exception.

Two generators: arbitrary JSON, and documents built from the schema's own tables (every kind, field, operator and
unit, with values of every JSON type, nested in groups), which reach the compiler far more often."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Contact
from crm.segments.compiler import compile_rules
from crm.segments.schema import (
    AMOUNT,
    BOOLEAN,
    CHANNELS,
    CONSENT_STATES,
    COUNT_OPS,
    COUPON_STATES,
    DATE,
    DATETIME,
    EVENT_OPS,
    FIELDS_BY_KIND,
    JSON_TYPES,
    KINDS,
    LIST,
    NUMBER,
    OPS,
    PAIR,
    PRESENCE,
    SCALAR,
    SCHEMA_VERSION,
    TEXT,
    UNITS,
    WHERE_FIELDS_BY_KIND,
    FieldSpec,
    RulesInvalid,
    json_spec,
    validate_rules,
)
from crm.tests.segment_world import NOW, World

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["2026-03-01", "2026-02-30", "2026-03-01T00:00:00+09:00", "", " ", "%", "_", "\\", "'", "\x00"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def mostly(valid: st.SearchStrategy, junk: st.SearchStrategy = json_scalars) -> st.SearchStrategy:
    """Usually ``valid``, sometimes ``junk``: deep documents stay valid often enough to reach the compiler."""
    return st.integers(min_value=0, max_value=7).flatmap(lambda i: junk if i == 7 else valid)


def _keys(mapping: Any) -> st.SearchStrategy:
    return mostly(st.sampled_from(sorted(mapping)), st.text(max_size=6))


TYPED_VALUES = {
    TEXT: st.text(max_size=10) | st.sampled_from(["서울", "%", "_", "\\", "'", "010-1234-5678", "a@example.com"]),
    NUMBER: st.integers(min_value=-(10**15), max_value=10**15) | st.floats(allow_nan=False, allow_infinity=False),
    DATE: st.dates().map(str) | st.sampled_from(["2026-03-01", "2026-02-30"]),
    DATETIME: st.dates().map(str) | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    BOOLEAN: st.booleans(),
    PRESENCE: st.none(),
}


@st.composite
def predicate(draw, spec: FieldSpec) -> dict:
    """``op``, ``value`` and ``unit`` for a field of this spec, mostly well-formed."""
    node: dict[str, Any] = {"op": draw(mostly(st.sampled_from(spec.ops), st.sampled_from(sorted(OPS))))}
    shape = OPS[node["op"]].value if node["op"] in OPS else SCALAR
    typed = mostly(TYPED_VALUES[spec.type])
    if shape == SCALAR:
        node["value"] = draw(typed)
    elif shape == LIST:
        node["value"] = draw(mostly(st.lists(typed, min_size=1, max_size=4)))
    elif shape == PAIR:
        node["value"] = draw(mostly(st.lists(typed, min_size=2, max_size=2)))
    elif shape == AMOUNT:
        node["value"] = draw(mostly(st.integers(min_value=0, max_value=10**6)))
        node["unit"] = draw(mostly(st.sampled_from(spec.units or ("days",)), st.sampled_from(sorted(UNITS))))
    if draw(st.integers(0, 9)) == 0:
        node["negate"] = draw(st.booleans() | json_scalars)
    return node


@st.composite
def field_node(draw, kind: str) -> dict:
    fields = FIELDS_BY_KIND[kind]
    name = draw(mostly(st.sampled_from(sorted(fields)), st.text(max_size=6)))
    spec = fields.get(name, next(iter(fields.values())))
    return {"type": kind, "field": name, **draw(predicate(spec))}


@st.composite
def json_node(draw, **fixed: Any) -> dict:
    value_type = draw(mostly(st.sampled_from(JSON_TYPES), st.text(max_size=4)))
    spec = json_spec(value_type if value_type in JSON_TYPES else TEXT)
    return {**fixed, "value_type": value_type, **draw(predicate(spec))}


@st.composite
def where_node(draw, kind: str) -> dict:
    fields = WHERE_FIELDS_BY_KIND[kind]
    name = draw(mostly(st.sampled_from(sorted(fields)), st.text(max_size=6)))
    return {"field": name, **draw(predicate(fields.get(name, next(iter(fields.values())))))}


property_paths = mostly(
    st.sampled_from(["category", "products[].category", "price", "a.b", "products[].price"]),
    st.sampled_from(["x[]", "[]", "a..b", "a[][]", ""]) | st.text(max_size=10),
)
leaf_nodes = st.one_of(
    st.sampled_from(sorted(FIELDS_BY_KIND)).flatmap(field_node),
    st.text(min_size=1, max_size=8).flatmap(lambda key: json_node(type="attribute", key=key)),
    st.fixed_dictionaries(
        {"type": st.just("event"), "op": _keys(EVENT_OPS)},
        optional={
            "name": mostly(st.sampled_from(["Order Completed", "Product Viewed", "Promotion Viewed"])),
            "where": st.lists(mostly(property_paths.flatmap(lambda p: json_node(property=p)), json_values), max_size=3),
            "count": mostly(
                st.fixed_dictionaries({"op": _keys(COUNT_OPS), "value": mostly(st.integers(0, 10**7))}), json_values
            ),
            "when": mostly(
                st.sampled_from(["ever", "today", "this_week", "this_month"]).map(lambda op: {"op": op})
                | predicate(json_spec(DATETIME)),
                json_values,
            ),
        },
    ),
    st.sampled_from(sorted(WHERE_FIELDS_BY_KIND)).flatmap(
        lambda kind: st.fixed_dictionaries(
            {"type": st.just(kind)},
            optional={
                **({"state": _keys(COUPON_STATES)} if kind == "coupon" else {}),
                "where": st.lists(mostly(where_node(kind), json_values), max_size=3),
            },
        ).map(lambda node: {"state": "any", **node} if kind == "coupon" and "state" not in node else node)
    ),
    st.fixed_dictionaries({"type": st.just("reachable"), "channel": _keys(CHANNELS)}),
    st.fixed_dictionaries(
        {"type": st.just("consent"), "purpose": mostly(st.sampled_from(["email", "sms", "push", "kakao", "ads"]))},
        optional={"state": _keys(CONSENT_STATES)},
    ),
    st.fixed_dictionaries({"type": st.just("tag"), "tag": mostly(st.sampled_from(["vip", "newbie", "nope"]))}),
    st.sampled_from(["list", "segment"]).flatmap(
        lambda kind: st.fixed_dictionaries({"type": st.just(kind), kind: mostly(st.integers(-1, 5))})
    ),
    st.fixed_dictionaries({"type": _keys(KINDS)}, optional={"field": json_values, "op": json_values}),
)
nodes = st.recursive(
    leaf_nodes,
    lambda children: st.fixed_dictionaries(
        {"type": st.just("group"), "children": st.lists(children, max_size=4)},
        optional={"op": mostly(st.sampled_from(["and", "or"])), "negate": st.booleans()},
    ),
    max_leaves=8,
)
documents = st.fixed_dictionaries(
    {
        "version": mostly(st.just(SCHEMA_VERSION)),
        "root": nodes.map(lambda n: n if n.get("type") == "group" else {"type": "group", "op": "and", "children": [n]}),
    }
)


@pytest.fixture
def world(db):
    with time_machine.travel(NOW, tick=False):
        yield World()


def validated_or_refused(rules: Any) -> bool:
    """True when the rules are valid and their query ran; False when refused. Anything else propagates."""
    try:
        validate_rules(rules)
    except RulesInvalid as exc:
        errors = exc.errors
    else:
        errors = None
    if errors is not None:
        assert errors, "refused without saying why"
        return False
    try:
        q = compile_rules(rules, now=NOW)
    except RulesInvalid:  # a reference cycle or a segment deleted meanwhile: refused too
        return False
    members = list(Contact.objects.not_erased().filter(q).values_list("pk", flat=True))
    assert len(members) == len(set(members))
    return True


@SETTINGS
@given(rules=json_values | st.fixed_dictionaries({"version": json_scalars, "root": json_values}))
def test_arbitrary_json_is_refused_or_runs(world, rules):
    validated_or_refused(rules)


@SETTINGS
@given(rules=documents)
def test_documents_from_the_schema_tables_are_refused_or_run(world, rules):
    validated_or_refused(rules)


def test_the_schema_generator_reaches_the_database(world):
    """The generator is useful only if many of its documents are valid: at least a fifth of them run a query."""
    ran: list[bool] = []

    @settings(SETTINGS, max_examples=100)
    @given(rules=documents)
    def collect(rules):
        ran.append(validated_or_refused(rules))

    collect()
    assert sum(ran) >= len(ran) // 5, f"{sum(ran)} of {len(ran)} valid"


@pytest.mark.parametrize(
    "node",
    [
        {"type": "event", "op": ["did"]},
        {"type": "event", "op": "did", "count": {"op": {"at_least": 1}, "value": 1}},
        {"type": "coupon", "state": ["unused"]},
        {"type": "reachable", "channel": {"email": True}},
        {"type": "consent", "purpose": ["email"]},
        {"type": "consent", "purpose": "email", "state": ["granted"]},
    ],
)
def test_a_list_or_object_where_a_choice_belongs_is_refused(node):
    """Found by the fuzzer: these raised TypeError (unhashable) instead of RulesInvalid (a 500 in the admin)."""
    with pytest.raises(RulesInvalid):
        validate_rules({"version": 1, "root": {"type": "group", "children": [node]}}, check_references=False)
