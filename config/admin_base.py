"""Building blocks for every app's admin: list defaults that stay fast on big tables, read-only admins and inlines.

Tables such as events, sends and orders grow to millions of rows. A stock changelist counts every matching row on
each page load (``COUNT(*)`` for the paginator, a second one for "N total", one per filter choice for facets); the
classes here never do: the paginator counts at most ``count_cap`` rows and the pages say "10,000+" beyond that.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

#: Default number of rows a changelist counts before it says "more than" instead of an exact number.
DEFAULT_COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """A paginator whose count stops at ``cap``: ``SELECT COUNT(*) FROM (SELECT id ... LIMIT cap + 1)``.

    The cost of a page load is bounded whatever the size of the table. ``count_is_capped`` tells the templates
    to show "10,000+" rather than an exact number; pages past the cap are not offered (use search and filters).
    """

    def __init__(self, object_list, per_page, orphans=0, allow_empty_first_page=True, error_messages=None, *, cap=None):
        super().__init__(object_list, per_page, orphans, allow_empty_first_page, error_messages)
        self.cap = DEFAULT_COUNT_CAP if cap is None else cap
        self._capped = False

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if hasattr(object_list, "values") and hasattr(object_list, "order_by"):
            counted = object_list.order_by().values("pk")[: self.cap + 1].count()
        else:
            counted = len(object_list)
        self._capped = counted > self.cap
        return min(counted, self.cap)

    @property
    def count_is_capped(self) -> bool:
        return self.count >= self.cap and self._capped


class LoopModelAdmin(admin.ModelAdmin):
    """Defaults for the product's lists: a capped count, no "N total" count, no facet counts."""

    paginator = CappedCountPaginator
    count_cap = DEFAULT_COUNT_CAP
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        if issubclass(self.paginator, CappedCountPaginator):
            return self.paginator(queryset, per_page, orphans, allow_empty_first_page, cap=self.count_cap)
        return self.paginator(queryset, per_page, orphans, allow_empty_first_page)


class ReadOnlyModelAdmin(LoopModelAdmin):
    """A list and a detail page to look at, nothing to add, change or delete (rows are written by services)."""

    actions = None

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyTabularInline(admin.TabularInline):
    """Related rows shown on a parent's page, read-only, with a link to each row's own page."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def json_block(value: Any) -> SafeString | str:
    """A JSON value, indented and escaped, for a read-only field; Korean text stays readable (no \\uXXXX)."""
    if value in (None, {}, []):
        return "-"
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    return format_html('<pre class="loop-json">{}</pre>', text)
