"""Property conditions: on a trigger event's properties, and a branch's conditions on contact and trigger data.

A condition is ``{"property": "value", "op": "gte", "value": 30000}``; a list of them holds when all hold. For
branches, properties are paths: ``event.value`` (the trigger event), ``attributes.grade`` (a contact attribute) or
``contact.order_count`` (a contact field). Numbers compare as numbers (``"39000"`` ≥ 30000), everything else as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils.translation import gettext as _

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "contains", "exists")
DATA_ROOTS = ("event", "attributes", "contact")
CONTACT_FIELDS = ("name", "email", "phone", "locale", "time_zone", "order_count", "total_revenue", "external_id")


def conditions_errors(conditions: Any, *, data: bool = False) -> list[str]:
    """What is wrong with a list of conditions (empty when valid)."""
    if not isinstance(conditions, list):
        return [_("A list of conditions.")]
    errors = []
    for index, condition in enumerate(conditions, start=1):
        if not isinstance(condition, dict) or not isinstance(condition.get("property"), str):
            errors.append(_("Condition %(n)d: needs a property.") % {"n": index})
            continue
        if condition.get("op", "eq") not in OPERATORS:
            errors.append(
                _("Condition %(n)d: unknown operator; use one of %(ops)s.") % {"n": index, "ops": ", ".join(OPERATORS)}
            )
        root = condition["property"].split(".", 1)[0]
        if data and ("." not in condition["property"] or root not in DATA_ROOTS):
            errors.append(_("Condition %(n)d: the property starts with event., attributes. or contact.") % {"n": index})
        if data and root == "contact" and condition["property"].split(".", 1)[1] not in CONTACT_FIELDS:
            errors.append(
                _("Condition %(n)d: contact fields are %(fields)s.") % {"n": index, "fields": ", ".join(CONTACT_FIELDS)}
            )
    return errors


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value).replace(",", ""))
    except (InvalidOperation, ValueError):
        return None


def _dig(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def condition_holds(condition: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    op = condition.get("op", "eq")
    actual = _dig(data, condition["property"])
    if op == "exists":
        return actual not in (None, "")
    if actual is None:
        return op == "ne"
    expected = condition.get("value")
    if op == "contains":
        if isinstance(actual, list):
            return expected in actual or str(expected) in [str(a) for a in actual]
        return str(expected) in str(actual)
    a, b = _number(actual), _number(expected)
    if a is None or b is None:
        a, b = str(actual), str(expected)  # type: ignore[assignment]
    try:
        return {
            "eq": a == b,
            "ne": a != b,
            "gt": a > b,
            "gte": a >= b,
            "lt": a < b,
            "lte": a <= b,
        }[op]
    except TypeError:
        return False


def conditions_hold(conditions: list[Mapping[str, Any]], data: Mapping[str, Any]) -> bool:
    return all(condition_holds(c, data) for c in conditions or [])
