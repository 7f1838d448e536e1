"""Segments: the rule document's schema, its compiler to one ORM query, and the explainer.

Public entry points (everything else in this package is internal):

- ``segment_contacts(segment=..., now=None)``: the members as a ``Contact`` queryset;
- ``segment_contains(segment=..., contact=..., now=None)``: membership of one contact, same rules, same answer.

The rule document (version 1)::

    {"version": 1,
     "root": {"type": "group", "op": "and" | "or", "negate": false, "children": [<node>, ...]}}

A node is a group (as above, nested) or a condition ``{"type": <kind>, ...}``. An empty AND group matches every
(non-erased) contact; an empty OR group matches nobody. Kinds: ``list`` (``{"type": "list", "list": <id>}``) and
``tag`` (``{"type": "tag", "tag": <name>}``) here; the others are documented in ``crm/segments/schema.py``.
"""

from __future__ import annotations

from crm.segments.compiler import segment_contacts, segment_contains

__all__ = ["segment_contacts", "segment_contains"]
