"""Segments: the rule document's schema, its compiler to one ORM query, and the explainer.

Public entry points (everything else in this package is internal):

- ``segment_contacts(segment=..., now=None)``: the members as a ``Contact`` queryset;
- ``segment_contains(segment=..., contact=..., now=None)``: membership of one contact, same rules, same answer.

The rule document (version 1)::

    {"version": 1,
     "root": {"type": "group", "op": "and" | "or", "negate": false, "children": [<node>, ...]}}

A node is a group (as above, nested) or a condition ``{"type": <kind>, ...}``. An empty AND group matches every
(non-erased) contact; an empty OR group matches nobody. Kinds: ``field``, ``attribute``, ``event``, ``cart``,
``coupon``, ``wishlist``, ``orders``, ``reachable``, ``consent``, ``list`` (``{"type": "list", "list": <id>}``),
``tag`` (``{"type": "tag", "tag": <name>}``) and ``segment``; their shapes are documented in
``crm/segments/schema.py`` and ``docs/segments.md``.

Also public: ``validate_rules`` / ``RulesInvalid`` (errors with a path and a translated message),
``schema_description`` (the JSON a rule builder reads), ``compile_rules`` (the Q for a document) and
``segment_explain`` (why one contact is or is not a member).
"""

from __future__ import annotations

from crm.segments.compiler import compile_rules, segment_contacts, segment_contains
from crm.segments.schema import EMPTY_RULES, RuleError, RulesInvalid, schema_description, validate_rules

__all__ = [
    "EMPTY_RULES",
    "RuleError",
    "RulesInvalid",
    "compile_rules",
    "schema_description",
    "segment_contacts",
    "segment_contains",
    "validate_rules",
]
