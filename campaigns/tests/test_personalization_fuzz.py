"""Hostile input to the personalization renderer (issue #12): any template either is refused at save
(``template_errors``, a ``TemplateSyntaxError``) or renders without crashing; a value containing template syntax
(``{{ }}``, ``{% %}``, ``#{}``) anywhere in the data is output literally; the sandbox reaches no private attribute
and cannot change the data through a method."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from django.template import TemplateSyntaxError
from django.utils.html import escape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.personalization import compile_template, render, render_text, template_errors

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Pieces of template syntax, valid and broken, that a fuzzer joins into templates.
FRAGMENTS = [
    "{{", "}}", "{%", "%}", "{#", "#}", "#{", "}", "{", "|", ":", " ", "\n", "'", '"',
    "if ", "endif", "for x in ", "endfor", "with y=", "endwith", "else", "now ", "cycle ", "firstof ",
    "widthratio ", "regroup ", "filter upper", "endfilter", "verbatim", "endverbatim", "templatetag openblock",
    "load ", "include ", "debug", "url ", "csrf_token",
    "x", "y", "고객명", "속성.등급", "이벤트.product_name", "할인 금액", "contact.name", "cart.items", "attributes",
    "vars", "coupon.code", "|default:'고객'", "|length", "|date:'Y-m-d'", "|floatformat:2", "|slice:':2'",
    "|add:1", "|stringformat:'s'", "|rjust:'5'", "|join:','", "|first", "|dictsort:'name'", ":number", ":date",
    ":datetime", "|fallback", "0", "1", "-1", "9999999999", "None", "True", "_private", "__class__",
]  # fmt: skip
templates = st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join) | st.text(max_size=60)

#: JSON-like values, and values made of template syntax, as stored in attributes, event properties, variables.
SYNTAX = ["{{ x }}", "{% if 1 %}y{% endif %}", "#{고객명}", "#{속성.등급|z}", "{# c #}", "{%", "}}", "#{", "<b>&"]
hostile_text = st.lists(st.sampled_from(SYNTAX) | st.text(max_size=8), max_size=5).map("".join)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | hostile_text | st.decimals(allow_nan=False)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4), max_leaves=12
)
dicts = st.dictionaries(st.sampled_from(["등급", "name", "items", "x", "product_name", "at"]) | hostile_text, values)


data_strategy = st.fixed_dictionaries(
    {
        "contact": st.fixed_dictionaries({"name": hostile_text, "time_zone": st.sampled_from(["", "Bad/Zone", "UTC"])}),
        "attributes": dicts,
        "event": dicts,
        "cart": dicts,
        "coupon": dicts,
        "vars": dicts,
    }
)


@settings(SETTINGS, max_examples=80)
@given(source=templates, data=data_strategy, html=st.booleans())
def test_any_template_is_refused_at_save_or_renders(source, data, html):
    errors = template_errors(source, html=html)
    assert isinstance(errors, list)
    try:
        compiled = compile_template(source, html=html)
    except TemplateSyntaxError:
        assert errors  # what fails to compile is reported when the marketer saves
        return
    before = copy.deepcopy(data)
    assert isinstance(render(compiled, data), str)
    assert data == before  # rendering never changes the data


@SETTINGS
@given(name=hostile_text, grade=hostile_text, product=hostile_text, discount=hostile_text)
def test_values_are_output_literally_never_evaluated(name, grade, product, discount):
    data = {
        "contact": {"name": name},
        "attributes": {"등급": grade},
        "event": {"product_name": product},
        "vars": {"할인": discount},
    }
    template = "{% if 1 %}[#{고객명}]{% endif %}|#{속성.등급}|#{이벤트.product_name}|{{ 'lit' }}#{할인}"
    expected = f"[{name}]|{grade}|{product}|lit{discount}"
    assert render_text(template, data) == expected
    assert render_text(template, data, html=True) == f"[{escape(name)}]|{escape(grade)}|{escape(product)}|lit" + escape(
        discount
    )


@SETTINGS
@given(fallback=hostile_text.filter(lambda t: "{" not in t and "}" not in t), value=st.sampled_from(SYNTAX))
def test_a_fallback_and_a_formatted_value_are_literal(fallback, value):
    assert render_text("#{속성.none|" + fallback + "}", {"attributes": {}}) == fallback
    assert render_text("#{x:number} #{x:date}", {"vars": {"x": value}}) == f"{value} {value}"


@pytest.mark.parametrize(
    "template",
    [
        "{{ contact.__class__ }}",
        "{{ contact._meta }}",
        "{{ cart.items.__len__ }}",
        "{% for x in vars.__class__.__subclasses__ %}{% endfor %}",
        "{{ attributes|_private }}",
    ],
)
def test_private_attributes_are_refused(template):
    assert template_errors(template)
    with pytest.raises(TemplateSyntaxError):
        compile_template(template)


def test_methods_that_change_data_render_nothing_and_change_nothing():
    data = {
        "contact": {"name": "김민준"},
        "attributes": {"등급": "VIP", "tags": ["a", "b"]},
        "cart": {"items": [{"name": "니트"}, {"name": "머플러"}], "value": Decimal("1")},
        "vars": {"할인": 5000},
        "event": {},
        "coupon": {},
    }
    before = copy.deepcopy(data)
    template = (
        "{{ attributes.clear }}{{ attributes.popitem }}{{ attributes.tags.pop }}{{ attributes.tags.reverse }}"
        "{{ cart.items.pop }}{{ cart.items.clear }}{{ vars.popitem }}{{ vars.setdefault }}{{ contact.update }}"
        "|{{ cart.items|length }}|{{ attributes.tags|join:',' }}|#{속성.등급}|#{할인:number}"
    )
    assert render_text(template, data) == "|2|a,b|VIP|5,000"
    assert data == before
