"""Every API endpoint refuses missing, malformed, unknown, revoked and wrong-scope keys.

The endpoints are enumerated from the URL resolver, not listed by hand: an endpoint added later under ``/api/`` is
covered (and one that is not an API-key view, or declares no scope, fails ``test_every_api_endpoint_is_a_scoped_key
_view``)."""

from __future__ import annotations

import base64
import json
import re

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from config.tests.routes import all_routes
from crm.api.views import ApiKeyView
from crm.models import ApiKey, Contact, Event, Source
from crm.services.apikeys import _key_cache, api_key_create, api_key_revoke
from crm.services.tracking import tracking_ingest

#: Documentation and schema pages under /api/ that are public on purpose (no data).
PUBLIC_API_PAGES = {"api/schema/", "api/docs/", "api/redoc/"}
METHODS = ("get", "post", "put", "patch", "delete")


def api_endpoints() -> list[tuple[str, type]]:
    """(route, view class) of every URL under /api/ except the public documentation pages."""
    found = []
    for route, callback in all_routes():
        if route.startswith("api/") and route not in PUBLIC_API_PAGES:
            found.append((route, getattr(callback, "view_class", callback)))
    return found


def concrete_path(route: str) -> str:
    """``api/v1/contacts/<str:external_id>/cart`` → ``/api/v1/contacts/someone/cart``."""
    return "/" + re.sub(r"<(?:(\w+):)?\w+>", lambda m: "1" if m.group(1) == "int" else "someone", route)


def scope_of(view_class: type, method: str) -> str | None:
    scopes = getattr(view_class, "required_scopes", None)
    return scopes.get(method.upper()) if scopes else getattr(view_class, "required_scope", None)


def cases() -> list[tuple[str, str, type]]:
    return [
        (concrete_path(route), method, view)
        for route, view in api_endpoints()
        for method in METHODS
        if hasattr(view, method)
    ]


CASES = cases()
IDS = [f"{method.upper()} {path}" for path, method, _view in CASES]


def test_every_api_endpoint_is_a_scoped_key_view():
    endpoints = api_endpoints()
    assert len(endpoints) >= 14, endpoints  # the resolver walk found the API
    for route, view in endpoints:
        assert isinstance(view, type), f"{route} is not a class-based API view"
        assert issubclass(view, ApiKeyView), f"{route} is not an API-key view"
        for method in METHODS:
            if hasattr(view, method):
                assert scope_of(view, method) in ApiKey.Scope.values, f"{method.upper()} {route} declares no scope"


@pytest.fixture
def keys(db):
    cache.clear()
    _key_cache.clear()
    source = Source.objects.create(name="shop")
    made = {scope: api_key_create(source=source, name=scope, scopes=[scope])[1] for scope in ApiKey.Scope.values}
    revoked_key, revoked = api_key_create(source=source, name="revoked", scopes=list(ApiKey.Scope.values))
    api_key_revoke(key=revoked_key)
    # Revoked by another process: the row says so, this process never cached it.
    other_key, revoked_elsewhere = api_key_create(source=source, name="elsewhere", scopes=list(ApiKey.Scope.values))
    ApiKey.objects.filter(pk=other_key.pk).update(revoked_at=other_key.created_at)
    return {**made, "revoked": revoked, "revoked_elsewhere": revoked_elsewhere}


def call(method: str, path: str, authorization: str | None = None, body: dict | None = None):
    client = APIClient()
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    if method in ("get", "delete"):
        return getattr(client, method)(path, **extra)
    data = json.dumps(body if body is not None else {})
    return getattr(client, method)(path, data=data, content_type="application/json", **extra)


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


def assert_refused(response, status: int):
    assert response.status_code == status, response.content[:300]
    assert response.json()["code"], response.content[:300]  # the API's error shape, not a Django page
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(("path", "method", "view"), CASES, ids=IDS)
def test_refuses_missing_malformed_unknown_and_revoked_keys(keys, path, method, view):
    assert_refused(call(method, path), 401)
    for header in ("Basic !!!not-base64", "Token abc", "Bearer ", "Basic " + base64.b64encode(b"\xff\xfe").decode()):
        assert_refused(call(method, path, header), 401)
    unknown = "loop_deadbeef_" + "x" * 43
    assert_refused(call(method, path, basic(unknown)), 401)
    assert_refused(call(method, path, f"Bearer {unknown}"), 401)
    for name in ("revoked", "revoked_elsewhere"):
        assert_refused(call(method, path, basic(keys[name])), 401)
        assert_refused(call(method, path, f"Bearer {keys[name]}"), 401)
    if method in ("post", "put", "patch"):
        assert_refused(call(method, path, body={"writeKey": keys["revoked"]}), 401)


@pytest.mark.parametrize(("path", "method", "view"), CASES, ids=IDS)
def test_refuses_a_key_without_the_scope(keys, path, method, view):
    needed = scope_of(view, method)
    for scope in set(ApiKey.Scope.values) - {needed}:
        assert_refused(call(method, path, basic(keys[scope])), 403)
        if method in ("post", "put", "patch"):
            assert_refused(call(method, path, body={"writeKey": keys[scope]}), 403)
    # ... and the key with the scope gets past authentication and permission (whatever the body then deserves).
    assert call(method, path, basic(keys[needed])).status_code not in (401, 403)


def test_a_key_revoked_in_this_process_stops_at_once(keys, db):
    key, raw = api_key_create(source=Source.objects.get(), name="soon revoked", scopes=list(ApiKey.Scope.values))
    assert call("get", "/api/v1/contacts", basic(raw)).status_code == 200
    api_key_revoke(key=key)
    assert_refused(call("get", "/api/v1/contacts", basic(raw)), 401)


# --- Sources ---------------------------------------------------------------------------------------------------
# Contacts are shared by every source of the workspace by design (docs/api.md, "Sources and what a key can read"):
# a customer is one contact whatever sent their events. What is per source is idempotency: one source's message ids
# can neither shadow nor change another's events.


def test_one_sources_message_ids_do_not_touch_another_sources_events(db):
    shop, app = Source.objects.create(name="shop"), Source.objects.create(name="app", kind=Source.Kind.APP)
    message = {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "m-1"}
    assert tracking_ingest(source=shop, payload={"batch": [message]}, endpoint="batch").stored == 1
    forged = {**message, "event": "Refunded", "properties": {"total": 1}}
    result = tracking_ingest(source=app, payload={"batch": [forged]}, endpoint="batch")
    assert (result.stored, result.duplicates) == (1, 0)
    by_source = dict(Event.objects.values_list("source__name", "name"))
    assert by_source == {"shop": "Order Completed", "app": "Refunded"}


def test_a_write_only_key_reads_nothing(keys):
    """An app's key (write_events only) ships inside the app and can be extracted: it must not read contacts."""
    Contact.objects.create(external_id="u1", email="minjun@example.com")
    write_only = basic(keys[ApiKey.Scope.WRITE_EVENTS])
    for path in ("/api/v1/contacts", "/api/v1/contacts/u1", "/api/v1/contacts/u1/orders"):
        response = call("get", path, write_only)
        assert response.status_code == 403
        assert b"minjun" not in response.content


def test_a_key_for_events_cannot_overwrite_or_erase_contacts(keys):
    """The write key a shop embeds in its web pages (write_events only) is public: it posts events, nothing more."""
    Contact.objects.create(external_id="u1", email="minjun@example.com")
    events_only = basic(keys[ApiKey.Scope.WRITE_EVENTS])
    assert_refused(call("put", "/api/v1/contacts/u1", events_only, {"email": "thief@example.com"}), 403)
    assert_refused(call("put", "/api/v1/contacts/u2", events_only, {"email": "new@example.com"}), 403)
    assert_refused(call("delete", "/api/v1/contacts/u1", events_only), 403)
    assert list(Contact.objects.values_list("external_id", "email", "erased_at")) == [
        ("u1", "minjun@example.com", None)
    ]
    assert call("post", "/api/v1/track", events_only, {"userId": "u1", "event": "Viewed"}).status_code == 200


def test_a_key_for_contacts_overwrites_and_erases_them(keys):
    Contact.objects.create(external_id="u1", email="minjun@example.com")
    contacts = basic(keys[ApiKey.Scope.WRITE_CONTACTS])
    response = call("put", "/api/v1/contacts/u1", contacts, {"email": "min@example.com"})
    assert response.status_code == 200, response.content[:300]
    assert call("put", "/api/v1/contacts/u2", contacts, {"email": "new@example.com"}).status_code == 201
    assert call("delete", "/api/v1/contacts/u1", contacts).status_code == 204
    assert not Contact.objects.not_erased().filter(external_id="u1").exists()
    assert Contact.objects.get(external_id="u2").email == "new@example.com"
    assert_refused(call("post", "/api/v1/track", contacts, {"userId": "u1", "event": "Viewed"}), 403)
