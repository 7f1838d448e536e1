"""API keys in the admin: created with the secret shown once, stored hashed, revocable."""

import base64
import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection
from rest_framework.test import APIClient

from crm.models import ApiKey, AuditEntry, Source
from crm.services.apikeys import api_key_create, hash_key

pytestmark = pytest.mark.django_db


def test_admin_creates_a_key_and_shows_it_once(admin_client):
    source = Source.objects.create(name="shop")
    response = admin_client.post(
        "/admin/crm/apikey/add/", {"name": "shop backend", "source": source.pk, "scopes": ["write_events"]}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw_key = response.context["raw_key"]
    assert raw_key.startswith("loop_")
    assert raw_key in response.content.decode()
    key = ApiKey.objects.get()
    assert key.key_hash == hash_key(raw_key)
    assert raw_key not in str(ApiKey.objects.values().get())
    # The key works at once, and the detail page never shows it again.
    auth = "Basic " + base64.b64encode(f"{raw_key}:".encode()).decode()
    track = {"userId": "u", "event": "X"}
    assert APIClient().post("/api/v1/track", track, format="json", HTTP_AUTHORIZATION=auth).status_code == 200
    assert raw_key not in admin_client.get(f"/admin/crm/apikey/{key.pk}/change/").content.decode()


def test_invalid_form_creates_nothing(admin_client):
    response = admin_client.post("/admin/crm/apikey/add/", {"name": "", "scopes": ["nope"]})
    assert response.status_code == 200
    assert response.context["raw_key"] is None
    assert set(response.context["form"].errors) == {"name", "source", "scopes"}
    assert not ApiKey.objects.exists()


def test_revoke_action(admin_client):
    source = Source.objects.create(name="shop")
    key, raw = api_key_create(source=source, name="old")
    response = admin_client.post(
        "/admin/crm/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]}, follow=True
    )
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None
    auth = "Basic " + base64.b64encode(f"{raw}:".encode()).decode()
    track = {"userId": "u", "event": "X"}
    assert APIClient().post("/api/v1/track", track, format="json", HTTP_AUTHORIZATION=auth).status_code == 401


def test_a_user_without_permission_cannot_create_keys(client, django_user_model):
    user = django_user_model.objects.create_user("marketer", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get("/admin/crm/apikey/add/").status_code == 403


def test_the_form_says_what_each_scope_allows(admin_client):
    page = admin_client.get("/admin/crm/apikey/add/").content.decode()
    for scope in ApiKey.Scope.values:
        assert f'value="{scope}"' in page
    assert "DELETE /contacts/{external_id}" in page  # in the admin's language, next to Write contacts


def test_remove_write_contacts_action(admin_client):
    source = Source.objects.create(name="shop")
    key, raw = api_key_create(source=source, name="web page", scopes=["write_events", "write_contacts"])
    other, _raw = api_key_create(source=source, name="backend", scopes=["write_events", "write_contacts"])
    client = APIClient(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{raw}:".encode()).decode())
    assert client.put("/api/v1/contacts/u1", {}, format="json").status_code == 201  # now cached as authenticated
    response = admin_client.post(
        "/admin/crm/apikey/", {"action": "remove_write_contacts", "_selected_action": [key.pk]}, follow=True
    )
    assert response.status_code == 200
    key.refresh_from_db()
    other.refresh_from_db()
    assert (key.scopes, other.scopes) == (["write_events"], ["write_events", "write_contacts"])
    assert AuditEntry.objects.filter(object_id=str(key.pk), changes__has_key="scopes").exists()
    # At once in this process (the others within the key cache's 10 s); events still flow.
    assert client.put("/api/v1/contacts/u1", {}, format="json").status_code == 403
    assert client.post("/api/v1/track", {"userId": "u", "event": "X"}, format="json").status_code == 200


def test_the_upgrade_grants_write_contacts_to_keys_for_events_and_reverses():
    """crm.0014: every server key that could write contacts (write_events) keeps that ability under the new scope;
    an app's key (shipped inside the app) does not get it."""
    migration = importlib.import_module("crm.migrations.0014_api_key_write_contacts")
    source = Source.objects.create(name="shop")
    app = Source.objects.create(name="app", kind=Source.Kind.APP)
    app_key, _secret = api_key_create(source=app, name="ios", scopes=["write_events"])
    before = {
        "web": ["write_events"],
        "backend": ["write_events", "read_contacts"],
        "reader": ["read_contacts"],
        "new": ["write_events", "write_contacts"],
    }
    keys = {name: api_key_create(source=source, name=name, scopes=scopes)[0] for name, scopes in before.items()}
    editor = SimpleNamespace(connection=connection)

    migration.grant_write_contacts(apps, editor)
    assert ApiKey.objects.get(pk=app_key.pk).scopes == ["write_events"]
    after = {name: ApiKey.objects.get(pk=key.pk).scopes for name, key in keys.items()}
    assert after == {
        "web": ["write_events", "write_contacts"],
        "backend": ["write_events", "read_contacts", "write_contacts"],
        "reader": ["read_contacts"],
        "new": ["write_events", "write_contacts"],
    }
    entries = AuditEntry.objects.filter(via="migration").order_by("id")
    assert [(e.object_id, e.changes["scopes"]) for e in entries] == [
        (str(keys["web"].pk), [before["web"], after["web"]]),
        (str(keys["backend"].pk), [before["backend"], after["backend"]]),
    ]
    migration.grant_write_contacts(apps, editor)  # idempotent
    assert entries.count() == 2

    ApiKey.objects.filter(pk=keys["reader"].pk).update(scopes=["read_contacts", "write_contacts"])
    migration.withdraw_write_contacts(apps, editor)
    reverted = {name: ApiKey.objects.get(pk=key.pk).scopes for name, key in keys.items()}
    # Back to the old meaning: write_events writes contacts, and write_contacts is unknown.
    assert reverted == {**before, "reader": ["read_contacts", "write_events"], "new": ["write_events"]}
