"""Every URL route of the project, from the resolver (security tests enumerate views with it, so a view added later
is covered without editing them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from django.urls import URLPattern, URLResolver, get_resolver


def all_routes(patterns=None, prefix: str = "") -> Iterator[tuple[str, Callable]]:
    """(route such as ``api/v1/contacts/<str:external_id>``, view callback) of every URL pattern."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from all_routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback
