"""The REST API: authentication, Segment-compatible tracking endpoints, limits, native resources."""

import base64
import gzip
import json
import logging

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from crm.models import ApiKey, Consent, Contact, Event, RejectedMessage, Source
from crm.services.apikeys import api_key_create, api_key_revoke
from crm.services.event_processing import events_process_pending


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def source(db):
    return Source.objects.create(name="shop")


@pytest.fixture
def write_key(source):
    return api_key_create(source=source, name="shop backend")[1]


@pytest.fixture
def read_write_key(source):
    return api_key_create(source=source, name="shop backend, all scopes", scopes=list(ApiKey.Scope.values))[1]


def basic(key):
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def post(path, body, key=None, *, auth="basic", raw=None, headers=None):
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")  # messages are asserted in English; Korean is the default
    extra = dict(headers or {})
    if key and auth == "basic":
        extra["HTTP_AUTHORIZATION"] = basic(key)
    elif key and auth == "bearer":
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps(body)
    return client.post(path, data=data, content_type=extra.pop("content_type", "application/json"), **extra)


TRACK = {"userId": "u1", "event": "Product Viewed", "messageId": "m1", "properties": {"product_id": "p1"}}


class TestAuthentication:
    def test_basic_auth_with_the_key_as_user_name(self, write_key):
        response = post("/api/v1/track", TRACK, write_key)
        assert response.status_code == 200, response.content
        assert response.json() == {"success": True, "stored": 1, "duplicates": 0}

    def test_bearer_token(self, write_key):
        assert post("/api/v1/track", TRACK, write_key, auth="bearer").status_code == 200

    def test_write_key_in_body(self, write_key):
        response = post("/api/v1/track", {**TRACK, "writeKey": write_key})
        assert response.status_code == 200
        assert "writeKey" not in json.dumps(Event.objects.get().context)

    def test_missing_key_is_401_with_a_challenge(self, db):
        response = post("/api/v1/track", TRACK)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Basic")
        assert response.json()["code"] == "not_authenticated"
        assert Event.objects.count() == 0

    def test_wrong_key_is_401(self, write_key):
        response = post("/api/v1/track", TRACK, write_key[:-2] + "xx")
        assert response.status_code == 401
        assert response.json()["message"] == "Invalid or revoked API key."

    def test_revoked_key_is_401(self, source):
        key, raw = api_key_create(source=source, name="old")
        api_key_revoke(key=key)
        assert post("/api/v1/track", TRACK, raw).status_code == 401

    def test_malformed_basic_credentials_are_401(self, db):
        response = post("/api/v1/track", TRACK, headers={"HTTP_AUTHORIZATION": "Basic !!!"})
        assert response.status_code == 401

    def test_write_only_key_cannot_read_contacts(self, write_key):
        client = APIClient()
        response = client.get("/api/v1/contacts", HTTP_AUTHORIZATION=basic(write_key))
        assert response.status_code == 403

    def test_read_only_key_cannot_write(self, source):
        raw = api_key_create(source=source, name="reader", scopes=[ApiKey.Scope.READ_CONTACTS])[1]
        assert post("/api/v1/track", TRACK, raw).status_code == 403

    def test_the_key_never_reaches_the_logs(self, write_key, caplog):
        with caplog.at_level(logging.DEBUG):
            post("/api/v1/track", TRACK, write_key)
            post("/api/v1/track", TRACK, write_key + "wrong")
        assert write_key not in caplog.text


class TestTracking:
    def test_every_segment_call_type_is_stored(self, write_key):
        calls = {
            "identify": {"userId": "u1", "traits": {"email": "a@b.co", "plan": "pro"}},
            "track": TRACK,
            "page": {"userId": "u1", "name": "주말 한정 할인", "properties": {"path": "/promo/weekend"}},
            "screen": {"userId": "u1", "name": "Home"},
            "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "ACME"}},
            "alias": {"userId": "u1", "previousId": "old-1"},
        }
        for path, body in calls.items():
            response = post(f"/api/v1/{path}", body, write_key)
            assert response.status_code == 200, (path, response.content)
        assert sorted(Event.objects.values_list("type", flat=True)) == sorted(calls)
        assert Event.objects.get(type="page").name == "주말 한정 할인"
        events_process_pending()  # what the worker does right after: traits become attributes
        assert Contact.objects.get().attributes == {"plan": "pro"}

    def test_batch_merges_top_level_context_and_is_idempotent(self, write_key):
        body = {
            "batch": [
                {"type": "track", "event": "A", "userId": "u1", "messageId": "1"},
                {"type": "track", "event": "B", "userId": "u2", "messageId": "2", "context": {"ip": "1.1.1.1"}},
            ],
            "context": {"library": {"name": "test"}, "ip": "9.9.9.9"},
            "sentAt": "2026-11-24T00:00:00Z",
        }
        assert post("/api/v1/batch", body, write_key).json() == {"success": True, "stored": 2, "duplicates": 0}
        assert post("/api/v1/batch", body, write_key).json() == {"success": True, "stored": 0, "duplicates": 2}
        assert Event.objects.get(message_id="2").context == {"library": {"name": "test"}, "ip": "1.1.1.1"}
        assert Event.objects.get(message_id="1").context["ip"] == "9.9.9.9"

    def test_gzip_body(self, write_key):
        body = gzip.compress(json.dumps({"batch": [{"type": "track", **TRACK}]}).encode())
        response = post("/api/v1/batch", None, write_key, raw=body, headers={"HTTP_CONTENT_ENCODING": "gzip"})
        assert response.status_code == 200, response.content
        assert Event.objects.count() == 1

    def test_text_plain_body_from_browsers(self, write_key):
        response = post(
            "/api/v1/track",
            None,
            raw=json.dumps({**TRACK, "writeKey": write_key}),
            headers={"content_type": "text/plain"},
        )
        assert response.status_code == 200

    def test_partial_batch_stores_the_good_and_reports_the_bad_by_index(self, write_key):
        body = {
            "batch": [
                {"type": "track", "event": "A", "userId": "u1", "messageId": "1"},
                {"type": "track", "userId": "u1", "messageId": "2"},
                {"type": "identify", "userId": "u1", "traits": {"phone": "010-12"}},
            ]
        }
        response = post("/api/v1/batch", body, write_key)
        assert response.status_code == 200
        data = response.json()
        assert data["stored"] == 1
        assert [r["index"] for r in data["rejected"]] == [1, 2]
        assert "event" in data["rejected"][0]["errors"]
        assert "traits.phone" in data["rejected"][1]["errors"]
        assert RejectedMessage.objects.count() == 2
        assert Event.objects.count() == 1

    def test_batch_with_no_valid_message_is_400(self, write_key):
        response = post("/api/v1/batch", {"batch": [{"type": "track", "userId": "u"}]}, write_key)
        assert response.status_code == 400
        assert response.json()["errors"][0]["index"] == 0
        assert Event.objects.count() == 0

    @pytest.mark.parametrize(
        "body", [{"nobatch": 1}, {"batch": []}, {"batch": "x"}, [1, 2], {"batch": [1]}, {"batch": [{}], "sentAt": "x"}]
    )
    def test_malformed_batches_are_400(self, write_key, body):
        response = post("/api/v1/batch", body, write_key)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_request"

    def test_invalid_json_is_400(self, write_key):
        response = post("/api/v1/track", None, write_key, raw=b"{not json")
        assert response.status_code == 400
        assert "not valid JSON" in response.json()["message"]

    def test_single_message_over_32kb_is_400(self, write_key):
        body = {**TRACK, "properties": {"blob": "x" * (33 * 1024)}}
        response = post("/api/v1/track", body, write_key)
        assert response.status_code == 400
        assert "32 KB" in response.json()["message"]

    def test_batch_over_500kb_is_400(self, write_key):
        items = [{"type": "track", "event": "A", "userId": "u", "properties": {"b": "x" * 20_000}} for _ in range(30)]
        response = post("/api/v1/batch", {"batch": items}, write_key)
        assert response.status_code == 400
        assert "500 KB" in response.json()["message"]
        assert Event.objects.count() == 0

    def test_gzip_bomb_is_refused_without_inflating_it(self, write_key):
        bomb = gzip.compress(b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}")
        response = post("/api/v1/batch", None, write_key, raw=bomb, headers={"HTTP_CONTENT_ENCODING": "gzip"})
        assert response.status_code == 400

    def test_corrupt_gzip_is_400(self, write_key):
        response = post("/api/v1/batch", None, write_key, raw=b"not gzip", headers={"HTTP_CONTENT_ENCODING": "gzip"})
        assert response.status_code == 400

    @override_settings(LOOP_API_RATE_LIMIT="2/s")
    def test_rate_limit_answers_429_with_retry_after(self, write_key):
        codes = [post("/api/v1/track", {**TRACK, "messageId": str(i)}, write_key).status_code for i in range(3)]
        assert codes[:2] == [200, 200]
        response = post("/api/v1/track", {**TRACK, "messageId": "x"}, write_key)
        assert response.status_code == 429
        assert int(response["Retry-After"]) >= 1
        assert response.json()["code"] == "throttled"


class TestNativeResources:
    def test_events_endpoint_accepts_one_or_many_and_is_idempotent(self, write_key):
        one = {"message_id": "e1", "external_id": "u1", "name": "Signed Up"}
        assert post("/api/v1/events", one, write_key).json()["stored"] == 1
        many = [one, {"message_id": "e2", "external_id": "u1", "name": "Order Completed", "properties": {"total": 5}}]
        assert post("/api/v1/events", many, write_key).json() == {"success": True, "stored": 1, "duplicates": 1}
        events_process_pending()
        assert Contact.objects.get().order_count == 1

    def test_events_endpoint_reports_field_errors_by_index(self, write_key):
        response = post(
            "/api/v1/events",
            [{"message_id": "e1", "external_id": "u", "name": "A"}, {"name": "B"}, {"message_id": "e3", "name": "C"}],
            write_key,
        )
        assert response.status_code == 400
        errors = response.json()["errors"]
        assert [e["index"] for e in errors] == [1, 2]
        assert "message_id" in errors[0]["errors"]
        assert "external_id" in errors[1]["errors"]
        assert Event.objects.count() == 0

    def test_put_creates_then_updates_a_contact(self, read_write_key):
        client = APIClient(HTTP_AUTHORIZATION=basic(read_write_key))
        body = {"email": "Min@Example.com", "phone": "010-1234-5678", "name": "김민지", "consents": {"sms": True}}
        created = client.put("/api/v1/contacts/u-7", body, format="json")
        assert created.status_code == 201, created.content
        assert created.json()["phone"] == "+821012345678"
        assert created.json()["email"] == "Min@example.com"
        updated = client.put("/api/v1/contacts/u-7", {"attributes": {"grade": "VIP"}}, format="json")
        assert updated.status_code == 200
        assert updated.json()["attributes"] == {"grade": "VIP"}
        assert updated.json()["name"] == "김민지"
        assert Consent.objects.get().source == "api:shop"

    def test_put_with_bad_fields_is_400_naming_them(self, read_write_key):
        client = APIClient(HTTP_AUTHORIZATION=basic(read_write_key))
        response = client.put(
            "/api/v1/contacts/u-7", {"phone": "010-12", "email": "x", "consents": {"fax": True}}, format="json"
        )
        assert response.status_code == 400
        assert set(response.json()["errors"]) == {"phone", "email", "consents"}
        assert not Contact.objects.exists()

    def test_list_filters_by_phone_in_any_format(self, read_write_key):
        client = APIClient(HTTP_AUTHORIZATION=basic(read_write_key))
        client.put("/api/v1/contacts/u-1", {"phone": "+82 10 1234 5678"}, format="json")
        client.put("/api/v1/contacts/u-2", {"phone": "010-9999-8888"}, format="json")
        response = client.get("/api/v1/contacts", {"phone": "01012345678"})
        assert [c["external_id"] for c in response.json()["results"]] == ["u-1"]
        assert client.get("/api/v1/contacts", {"updated_since": "nope"}).status_code == 400

    def test_delete_erases_personal_data(self, read_write_key):
        client = APIClient(HTTP_AUTHORIZATION=basic(read_write_key))
        client.put("/api/v1/contacts/u-1", {"email": "a@b.co", "name": "김"}, format="json")
        post("/api/v1/track", {**TRACK, "userId": "u-1"}, read_write_key)
        assert client.delete("/api/v1/contacts/u-1").status_code == 204
        contact = Contact.objects.get()
        assert (contact.external_id, contact.email, contact.name) == (None, "", "")
        assert contact.erased_at is not None
        assert Event.objects.get().properties == {}
        assert client.get("/api/v1/contacts/u-1").status_code == 404

    def test_cart_coupons_and_orders_per_contact(self, read_write_key):
        post(
            "/api/v1/batch",
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": "u1",
                        "event": "Product Added",
                        "properties": {"product_id": "p", "price": 1000},
                    },
                    {
                        "type": "track",
                        "userId": "u1",
                        "event": "Coupon Issued",
                        "properties": {"coupon_id": "C1", "discount": 500},
                    },
                ]
            },
            read_write_key,
        )
        events_process_pending()
        client = APIClient(HTTP_AUTHORIZATION=basic(read_write_key))
        assert client.get("/api/v1/contacts/u1/cart").json()["items"][0]["product_id"] == "p"
        assert client.get("/api/v1/contacts/u1/coupons").json()[0]["code"] == "C1"
        assert client.get("/api/v1/contacts/u1/orders").json() == []
        assert client.get("/api/v1/contacts/nobody/cart").status_code == 404


def test_openapi_schema_and_offline_docs(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/batch" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()


@pytest.mark.integration
def test_rate_limit_counts_in_redis_across_processes(write_key, redis_url):
    """With Redis as the shared cache (production), the per-key counter is atomic and shared by every web process."""
    redis_cache = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    with override_settings(CACHES=redis_cache, LOOP_API_RATE_LIMIT="3/min"):
        cache.clear()
        codes = [post("/api/v1/track", {**TRACK, "messageId": str(i)}, write_key).status_code for i in range(4)]
        cache.clear()
    assert codes == [200, 200, 200, 429]


def test_errors_are_in_korean_by_default_and_english_on_request(write_key):
    korean = APIClient().post(
        "/api/v1/track", data="{", content_type="application/json", HTTP_AUTHORIZATION=basic(write_key)
    )
    assert korean.status_code == 400
    assert "JSON" in korean.json()["message"]
    assert korean.json()["message"].startswith("본문이 올바른 JSON이 아닙니다")
    english = post("/api/v1/track", None, write_key, raw=b"{")
    assert english.json()["message"].startswith("The body is not valid JSON")


@pytest.mark.parametrize("external_id", ["%20", "%20u1", "u1%20"])
def test_put_refuses_blank_or_padded_external_ids(read_write_key, external_id):
    client = APIClient(HTTP_AUTHORIZATION=basic(read_write_key), HTTP_ACCEPT_LANGUAGE="en")
    response = client.put(f"/api/v1/contacts/{external_id}", {"name": "x"}, format="json")
    assert response.status_code == 400
    assert "blank" in response.json()["message"]
    assert not Contact.objects.exists()


def test_a_key_revoked_after_use_is_refused_at_once_in_this_process(source):
    key, raw = api_key_create(source=source, name="soon revoked")
    assert post("/api/v1/track", TRACK, raw).status_code == 200  # now cached as authenticated
    api_key_revoke(key=key)
    assert post("/api/v1/track", {**TRACK, "messageId": "m2"}, raw).status_code == 401
