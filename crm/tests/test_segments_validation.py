"""The rule document's validation: every problem reported with the path of the condition and a translated message;
references (lists, tags, segments) checked; cycles refused naming the chain; the schema description for a builder."""

from __future__ import annotations

import json
import re

import pytest
from django.utils import translation

from crm.models import Segment
from crm.segments import RulesInvalid, schema_description, validate_rules
from crm.segments.schema import KINDS, MAX_DEPTH, MAX_NODES, OPS, TYPE_OPS, parse_property_path
from crm.tests.factories import ContactListFactory, TagFactory
from crm.tests.test_segments_conditions import CASES


def doc(*children) -> dict:
    return {"version": 1, "root": {"type": "group", "op": "and", "children": list(children)}}


def problems(rules, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(RulesInvalid) as caught:
        validate_rules(rules, **kwargs)
    return [(e.path, e.code) for e in caught.value.errors]


TEXT = {"type": "field", "field": "email"}

INVALID = [
    ("not-an-object", [1, 2], [("", "not_object")]),
    ("no-version", {"root": {"type": "group", "children": []}}, [("version", "version")]),
    ("future-version", {"version": 2, "root": {"type": "group", "children": []}}, [("version", "version")]),
    ("no-root", {"version": 1}, [("root", "required")]),
    ("root-not-group", {"version": 1, "root": {"type": "tag", "tag": "x"}}, [("root", "root_group")]),
    ("unknown-top-key", {"version": 1, "root": {"type": "group", "children": []}, "x": 1}, [("x", "unknown_key")]),
    ("group-op", {"version": 1, "root": {"type": "group", "op": "xor", "children": []}}, [("root.op", "choice")]),
    ("children-not-list", {"version": 1, "root": {"type": "group", "children": {}}}, [("root.children", "type")]),
    (
        "unknown-type-names-its-place",
        doc(TEXT | {"op": "is_set"}, TEXT | {"op": "is_set"}, {"type": "colour"}),
        [("root.children[2].type", "unknown_type")],
    ),
    ("node-not-object", doc("tag"), [("root.children[0]", "not_object")]),
    ("unknown-key", doc(TEXT | {"op": "is_set", "colour": "red"}), [("root.children[0].colour", "unknown_key")]),
    ("missing-field", doc({"type": "field", "op": "is_set"}), [("root.children[0].field", "required")]),
    (
        "unknown-field",
        doc({"type": "field", "field": "shoe_size", "op": "is_set"}),
        [("root.children[0].field", "choice")],
    ),
    ("op-not-for-type", doc(TEXT | {"op": "gt", "value": 3}), [("root.children[0].op", "op")]),
    ("value-missing", doc(TEXT | {"op": "eq"}), [("root.children[0].value", "required")]),
    ("value-wrong-type", doc(TEXT | {"op": "eq", "value": 3}), [("root.children[0].value", "text")]),
    ("value-unexpected", doc(TEXT | {"op": "is_set", "value": "x"}), [("root.children[0].value", "unexpected")]),
    ("empty-contains", doc(TEXT | {"op": "contains", "value": ""}), [("root.children[0].value", "empty")]),
    ("empty-in-list", doc(TEXT | {"op": "in", "value": []}), [("root.children[0].value", "list")]),
    ("bad-item-in-list", doc(TEXT | {"op": "in", "value": ["a", 3]}), [("root.children[0].value[1]", "text")]),
    (
        "between-reversed",
        doc({"type": "orders", "field": "revenue", "op": "between", "value": [10, 1]}),
        [("root.children[0].value", "order")],
    ),
    (
        "between-not-a-pair",
        doc({"type": "orders", "field": "revenue", "op": "between", "value": [1]}),
        [("root.children[0].value", "pair")],
    ),
    (
        "number-is-bool",
        doc({"type": "orders", "field": "revenue", "op": "gt", "value": True}),
        [("root.children[0].value", "number")],
    ),
    (
        "count-not-whole",
        doc({"type": "orders", "field": "count", "op": "gt", "value": 2.5}),
        [("root.children[0].value", "integer")],
    ),
    (
        "bad-date",
        doc({"type": "field", "field": "created_at", "op": "before", "value": "2025-02-30"}),
        [("root.children[0].value", "date")],
    ),
    (
        "date-format",
        doc({"type": "field", "field": "created_at", "op": "on", "value": "2025/02/03"}),
        [("root.children[0].value", "date")],
    ),
    (
        "amount-zero",
        doc({"type": "field", "field": "created_at", "op": "within_last", "value": 0}),
        [("root.children[0].value", "amount")],
    ),
    (
        "unit-unknown",
        doc({"type": "field", "field": "created_at", "op": "within_last", "value": 2, "unit": "weeks"}),
        [("root.children[0].unit", "unit")],
    ),
    (
        "hours-on-a-date-attribute",
        doc({"type": "attribute", "key": "b", "value_type": "date", "op": "within_last", "value": 2, "unit": "hours"}),
        [("root.children[0].unit", "unit")],
    ),
    (
        "unit-without-relative-time",
        doc(TEXT | {"op": "eq", "value": "a", "unit": "days"}),
        [("root.children[0].unit", "unexpected")],
    ),
    (
        "attribute-type",
        doc({"type": "attribute", "key": "city", "value_type": "json", "op": "is_set"}),
        [("root.children[0].value_type", "choice")],
    ),
    (
        "attribute-key",
        doc({"type": "attribute", "key": " ", "value_type": "text", "op": "is_set"}),
        [("root.children[0].key", "key")],
    ),
    ("event-op", doc({"type": "event", "op": "maybe"}), [("root.children[0].op", "choice")]),
    ("event-name", doc({"type": "event", "op": "did", "name": ""}), [("root.children[0].name", "name")]),
    (
        "count-at-least-zero",
        doc({"type": "event", "op": "did", "count": {"op": "at_least", "value": 0}}),
        [("root.children[0].count.value", "count")],
    ),
    (
        "count-op",
        doc({"type": "event", "op": "did", "count": {"op": "around", "value": 3}}),
        [("root.children[0].count.op", "choice")],
    ),
    (
        "when-op",
        doc({"type": "event", "op": "did", "when": {"op": "someday"}}),
        [("root.children[0].when.op", "choice")],
    ),
    (
        "when-ever-no-value",
        doc({"type": "event", "op": "did", "when": {"op": "ever", "value": 3}}),
        [("root.children[0].when.value", "unexpected")],
    ),
    (
        "property-path",
        doc({"type": "event", "op": "did", "where": [{"property": "a[].b[].c", "value_type": "text", "op": "is_set"}]}),
        [("root.children[0].where[0].property", "property")],
    ),
    (
        "property-type",
        doc({"type": "event", "op": "did", "where": [{"property": "a", "op": "is_set"}]}),
        [("root.children[0].where[0].value_type", "choice")],
    ),
    (
        "property-value",
        doc({"type": "event", "op": "did", "where": [{"property": "a", "value_type": "number", "op": "gt"}]}),
        [("root.children[0].where[0].value", "required")],
    ),
    ("coupon-state", doc({"type": "coupon", "state": "lost"}), [("root.children[0].state", "choice")]),
    (
        "coupon-field",
        doc({"type": "coupon", "state": "any", "where": [{"field": "colour", "op": "is_set"}]}),
        [("root.children[0].where[0].field", "choice")],
    ),
    (
        "coupon-op",
        doc({"type": "coupon", "state": "any", "where": [{"field": "expires_at", "op": "eq"}]}),
        [("root.children[0].where[0].op", "op")],
    ),
    ("cart-op", doc({"type": "cart", "field": "items", "op": "eq", "value": 1}), [("root.children[0].op", "op")]),
    ("reachable-channel", doc({"type": "reachable", "channel": "fax"}), [("root.children[0].channel", "choice")]),
    ("consent-purpose", doc({"type": "consent", "purpose": "fax"}), [("root.children[0].purpose", "choice")]),
    (
        "consent-state",
        doc({"type": "consent", "purpose": "ads", "state": "maybe"}),
        [("root.children[0].state", "choice")],
    ),
    ("negate-not-bool", doc({"type": "tag", "tag": "x", "negate": "yes"}), [("root.children[0].negate", "type")]),
    ("list-not-id", doc({"type": "list", "list": "spring"}), [("root.children[0].list", "type")]),
    ("segment-not-id", doc({"type": "segment", "segment": True}), [("root.children[0].segment", "type")]),
    (
        "nested-path",
        doc({"type": "group", "op": "or", "children": [{"type": "tag", "tag": 5}]}),
        [("root.children[0].children[0].tag", "type")],
    ),
    (
        "every-problem-at-once",
        doc(TEXT | {"op": "gt"}, {"type": "cart", "field": "colour", "op": "empty"}, {"type": "x"}),
        [
            ("root.children[0].op", "op"),
            ("root.children[1].field", "choice"),
            ("root.children[2].type", "unknown_type"),
        ],
    ),
]


@pytest.mark.parametrize(("rules", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_rules_are_refused_naming_the_condition(rules, expected):
    assert problems(rules, check_references=False) == expected


def test_messages_are_translated_and_name_the_choices():
    rules = doc(TEXT | {"op": "gt", "value": 3})
    with translation.override("en"):
        english = problems_messages(rules)
    with translation.override("ko"):
        korean = problems_messages(rules)
    assert english[0].startswith("root.children[0].op: “gt” is not an operator for text values")
    assert "contains" in english[0]
    assert korean[0] != english[0]
    assert "연산자" in korean[0]


def problems_messages(rules) -> list[str]:
    with pytest.raises(RulesInvalid) as caught:
        validate_rules(rules, check_references=False)
    return [str(e) for e in caught.value.errors]


def test_errors_as_json_for_an_endpoint():
    with pytest.raises(RulesInvalid) as caught:
        validate_rules(doc({"type": "x"}), check_references=False)
    payload = caught.value.as_json()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["errors"][0]["path"] == "root.children[0].type"
    assert payload["errors"][0]["code"] == "unknown_type"
    assert payload["errors"][0]["message"]


def test_depth_and_size_limits():
    node: dict = {"type": "group", "children": []}
    root = node
    for _ in range(MAX_DEPTH):
        child: dict = {"type": "group", "children": []}
        node["children"].append(child)
        node = child
    node["children"].append({"type": "tag", "tag": "x"})
    assert "too_deep" in {code for _path, code in problems({"version": 1, "root": root}, check_references=False)}
    many = doc(*[{"type": "tag", "tag": "x"} for _ in range(MAX_NODES + 5)])
    assert ("root.children[299]", "too_many") in problems(many, check_references=False)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_tested_condition_is_valid(db, case):
    """The conditions of the members tests are all accepted (with existing lists, tags and segments)."""
    from crm.tests.segment_world import World
    from crm.tests.test_segments_conditions import rules_for

    world = World()
    validate_rules(rules_for(case[1], world))


# --- References ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_references_must_exist():
    spring = ContactListFactory()
    TagFactory(name="vip")
    rules = doc(
        {"type": "list", "list": spring.pk},
        {"type": "list", "list": spring.pk + 100},
        {"type": "tag", "tag": "vip"},
        {"type": "tag", "tag": "vvip"},
        {"type": "segment", "segment": 999},
    )
    assert problems(rules) == [
        ("root.children[1].list", "missing"),
        ("root.children[3].tag", "missing"),
        ("root.children[4].segment", "missing"),
    ]


@pytest.mark.django_db
def test_a_segment_cannot_include_itself():
    segment = Segment.objects.create(name="A", rules=doc())
    assert problems(doc({"type": "segment", "segment": segment.pk}), segment_id=segment.pk) == [
        ("root.children[0].segment", "cycle")
    ]


@pytest.mark.django_db
def test_a_cycle_through_other_segments_is_refused_naming_the_chain():
    a = Segment.objects.create(name="A", rules=doc())
    b = Segment.objects.create(name="B", rules=doc({"type": "segment", "segment": a.pk}))
    c = Segment.objects.create(name="C", rules=doc({"type": "segment", "segment": b.pk}))
    with pytest.raises(RulesInvalid) as caught, translation.override("en"):
        validate_rules(doc({"type": "tag", "tag": "x"}, {"type": "segment", "segment": c.pk}), segment_id=a.pk)
    errors = [e for e in caught.value.errors if e.code == "cycle"]
    assert len(errors) == 1
    assert errors[0].path == "root.children[1].segment"
    assert "A → C → B → A" in errors[0].message
    # Without a cycle the same reference is fine.
    validate_rules(doc({"type": "segment", "segment": c.pk}), segment_id=None)


# --- The description for a builder ---------------------------------------------------------------------------------


def test_schema_description_is_json_with_both_languages():
    description = schema_description()
    assert json.loads(json.dumps(description, ensure_ascii=False)) == description
    assert description["version"] == 1
    assert set(description["kinds"]) == set(KINDS)
    assert set(description["ops"]) >= set(OPS)
    for type_name, described in description["types"].items():
        assert described["ops"] == list(TYPE_OPS[type_name])
        assert set(described["label"]) == {"ko", "en"}
    for name, kind in description["kinds"].items():
        assert kind["label"]["ko"], name
        assert kind["label"]["en"], name
        assert kind["label"]["ko"] != kind["label"]["en"], name
        for spec in kind.get("fields", []) + kind.get("where_fields", []):
            assert set(spec["ops"]) <= set(description["ops"]), (name, spec["name"])
    fields = {spec["name"]: spec for spec in description["kinds"]["field"]["fields"]}
    assert fields["email"]["type"] == "text"
    assert fields["created_at"]["units"] == ["minutes", "hours", "days"]
    assert "is_set" not in fields["created_at"]["ops"]  # never empty
    assert "is_set" in fields["last_seen_at"]["ops"]
    assert [c["value"] for c in description["kinds"]["consent"]["purposes"]] == [
        "email",
        "sms",
        "push",
        "kakao",
        "ads",
        "ads_night",
    ]


def test_property_paths():
    assert parse_property_path("total") == (("total",), None)
    assert parse_property_path("products[].category") == (("products", "category"), 0)
    assert parse_property_path("order.items[]") == (("order", "items"), 1)
    for bad in ("", "a..b", "a[].b[]", "[]", "a[0]", "a\x01", 3):
        assert parse_property_path(bad) is None


# --- The documented examples ---------------------------------------------------------------------------------------


def documented_rules() -> list[dict]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "segments.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    return [json.loads(block) for block in blocks if '"version"' in block and '"root"' in block]


def test_every_example_in_the_guide_is_valid():
    documented = documented_rules()
    assert len(documented) >= 6
    for rules in documented:
        validate_rules(rules, check_references=False)


def test_the_guide_shows_the_ready_made_examples():
    from crm.segments.examples import EXAMPLES

    documented = documented_rules()
    for name, _description, rules in EXAMPLES:
        assert rules in documented, name
