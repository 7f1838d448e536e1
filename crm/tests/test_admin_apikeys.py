"""API keys in the admin: created with the secret shown once, stored hashed, revocable."""

import base64

import pytest
from rest_framework.test import APIClient

from crm.models import ApiKey, Source
from crm.services.apikeys import hash_key

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
    from crm.services.apikeys import api_key_create

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
