"""Property-based fuzzing of the REST API against its own OpenAPI schema (``/api/schema/``), in-process via WSGI.

For every operation in the schema, Schemathesis generates schema-valid requests and invalid ones (wrong types,
missing fields, values out of bounds, undocumented methods), sends them through Django's real WSGI handler with a
valid API key that has every scope (the fuzzer also negates it), and runs these checks (``CHECKS``):

* ``not_a_server_error``: never a 5xx, whatever the input;
* ``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``,
  ``response_headers_conformance``: every answer is documented in the schema, with a body that matches it;
* ``negative_data_rejection`` / ``positive_data_acceptance``: what the schema calls invalid is refused with a 4xx,
  and what it calls valid is not refused with a 400 (so the schema describes the validation exactly);
* ``unsupported_method``, ``allow_header_conformance``, ``missing_required_header``, ``ignored_auth``: methods,
  headers and authentication.

Runs are deterministic (a fixed seed, derandomized Hypothesis, no example database). Data is committed
(``transactional_db``), as it is in production, and each operation starts from the same seeded contact ``0``
(Hypothesis's simplest string, so the fuzzer's reads and writes find it) with a cart, a coupon and an order.

Below the fuzz test: the inputs it (and the live SDK runs in ``test_sdk_compat.py``) found breaking the API, as
plain regression tests.
"""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

import jsonschema_rs
import phonenumbers
import pytest
import schemathesis
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.db import connection
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rest_framework.response import Response
from rest_framework.test import APIClient

from crm.blanks import BLANKS
from crm.models import ApiKey, Contact, Event, Source
from crm.services.apikeys import api_key_create
from crm.services.commerce import MAX_AMOUNT
from crm.services.event_processing import events_process_pending
from crm.services.tracking import tracking_ingest
from crm.tests.test_blanks import NOT_BLANKS

SCHEMA_PATH = "/api/schema/"
SEED = 20261124
#: Examples per operation: 15 in `make test` (well under a minute); `bench/api_fuzz` runs many more
#: (``LOOP_API_FUZZ_EXAMPLES``).
MAX_EXAMPLES = int(os.environ.get("LOOP_API_FUZZ_EXAMPLES", "15"))
SEEDED_CONTACT = "0"


def _phone_numbers() -> st.SearchStrategy[str]:
    """Valid Korean mobile numbers written the ways shops send them: 010-2000-1234, +82 10-2000-1234, +821020001234."""
    example = phonenumbers.example_number_for_type("KR", phonenumbers.PhoneNumberType.MOBILE)
    national = phonenumbers.national_significant_number(example)  # 1023456789
    formats = [
        phonenumbers.PhoneNumberFormat.NATIONAL,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.E164,
    ]

    def build(last_digits: str, fmt) -> str:
        number = phonenumbers.parse(national[:-4] + last_digits, "KR")
        return phonenumbers.format_number(number, fmt)

    return st.builds(build, st.text(alphabet="0123456789", min_size=4, max_size=4), st.sampled_from(formats))


# The schema documents phone numbers with the custom format "phone": the fuzzer needs to know what valid ones are.
schemathesis.openapi.format("phone", _phone_numbers())

#: Named so that a change of Schemathesis' defaults cannot silently drop one.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        # Valid and invalid data; "deterministic" is Hypothesis' derandomize.
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
        "checks": {name: {"enabled": True} for name in CHECKS},
        # The constants overlay puts string literals from our source ("push", "sms", ...) into schema-valid
        # positive requests. It judges them by JSON Schema alone, which knows nothing of the custom format "phone",
        # so it sends "push" as a phone number and reports the correct 400 as a schema-valid request rejected.
        "analysis": {"constants": {"enabled": False}},
        # A batch is accepted message by message (docs/api.md, "Partial batches"): invalid messages are reported in the
        # answer's ``rejected`` and kept for the admin, the valid ones stored, with 200. The schema states each
        # message's rules, so a batch with an invalid message is "invalid data" to the fuzzer while the API rightly
        # takes the rest: that one check does not apply there. Whole-request errors still answer 400 (tested below).
        "operations": [
            {"include-path": "/api/v1/batch", "checks": {"negative_data_rejection": {"enabled": False}}},
        ],
    }
)

schema = schemathesis.openapi.from_wsgi(SCHEMA_PATH, get_wsgi_application(), config=CONFIG)


@pytest.fixture
def persistent_connection(transactional_db):
    """Keep the database connection open between requests, as ``CONN_MAX_AGE`` does in production. With SQLite's
    default of 0, Django closes it after every request, and closing the last connection checkpoints the WAL with
    fsyncs (~20 ms): thousands of requests would make this test wait on the disk."""
    saved = connection.settings_dict["CONN_MAX_AGE"]
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = None
    yield
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = saved


@pytest.fixture
def api_key(persistent_connection) -> str:
    """A valid key with every scope, and the seeded contact with commerce state."""
    cache.clear()  # rate-limit counters of earlier tests
    source = Source.objects.create(name="fuzz")
    scopes = list(ApiKey.Scope.values)
    raw = api_key_create(source=source, name="fuzz", scopes=scopes)[1]
    commerce = [
        ("Product Added", {"product_id": "p-1", "name": "셔츠", "price": 39000, "quantity": 2}),
        ("Coupon Issued", {"coupon_id": "WELCOME", "discount": 5000, "expires_at": "2030-01-01T00:00:00+09:00"}),
        ("Order Completed", {"order_id": "o-1", "total": 78000, "products": [{"product_id": "p-1"}]}),
        ("Product Added", {"product_id": "p-2", "price": 12000}),
    ]
    batch = [
        {"type": "identify", "userId": SEEDED_CONTACT, "messageId": "seed-0", "traits": {"email": "seed@example.com"}}
    ]
    batch += [
        {"type": "track", "userId": SEEDED_CONTACT, "messageId": f"seed-{i}", "event": name, "properties": props}
        for i, (name, props) in enumerate(commerce, start=1)
    ]
    result = tracking_ingest(source=source, payload={"batch": batch}, endpoint="batch")
    assert result.stored == len(batch), result
    events_process_pending()
    assert Contact.objects.filter(external_id=SEEDED_CONTACT, orders__isnull=False).exists()
    return raw


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the API key and seed data, made once per operation on purpose
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_api_conforms_to_its_schema(case, api_key):
    auth = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
    case.call_and_validate(headers={"Authorization": auth})


# --- What the fuzzer and the live SDK runs found: each of these once answered 500 or broke the schema ----------------


@pytest.fixture
def client(db) -> APIClient:
    cache.clear()
    source = Source.objects.create(name="shop")
    scopes = list(ApiKey.Scope.values)
    key = api_key_create(source=source, name="shop", scopes=scopes)[1]
    return APIClient(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{key}:".encode()).decode())


def _post(client: APIClient, path: str, body: bytes | str) -> Response:
    return client.post(path, data=body, content_type="application/json")


TRACK = {"userId": "u1", "event": "Order Completed", "messageId": "m1"}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        # a message type that is not a string (unhashable: TypeError)
        ("/api/v1/batch", {"batch": [{"type": [None], "userId": "u", "event": "A"}]}, 400),
        # a null message (kept in RejectedMessage as SQL NULL: IntegrityError)
        ("/api/v1/batch", {"batch": [None]}, 400),
        # NaN is not JSON (and PostgreSQL's jsonb refuses it)
        ("/api/v1/track", '{"userId": "u", "event": "A", "properties": {"x": NaN}}', 400),
        # nested deeper than the JSON parser recurses (RecursionError)
        ("/api/v1/track", "[" * 50_000 + "]" * 50_000, 400),
        # a time that is year 10000 in UTC (OverflowError when stored)
        ("/api/v1/track", {**TRACK, "timestamp": "9999-12-31T23:00:00-05:00"}, 400),
        # amounts beyond the money columns (decimal.InvalidOperation; numeric overflow on PostgreSQL)
        ("/api/v1/track", {**TRACK, "properties": {"order_id": "o1", "total": "1e400"}}, 200),
        ("/api/v1/track", {**TRACK, "properties": {"order_id": "o1", "total": 10**15}}, 200),
        (
            "/api/v1/track",
            {**TRACK, "event": "Product Added", "properties": {"product_id": "p", "quantity": 10**30}},
            200,
        ),
        # ignored before, though the schema calls them invalid
        ("/api/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "A"}], "context": 5}, 400),
        ("/api/v1/track", {**TRACK, "writeKey": 5}, 400),
        ("/api/v1/page", {"userId": "u", "category": 5}, 400),
        ("/api/v1/track", {**TRACK, "originalTimestamp": "soon", "timestamp": "2026-11-24T20:00:00+09:00"}, 400),
        ("/api/v1/events", {"message_id": "e1", "external_id": 5, "name": "A"}, 400),
        ("/api/v1/events", [], 400),
    ],
)
def test_inputs_that_broke_the_api(client, path, body, status):
    response = _post(client, path, body if isinstance(body, str) else json.dumps(body))
    assert response.status_code == status, response.content[:300]
    assert set(response.json()) >= ({"success", "stored"} if status == 200 else {"code", "message"})


def test_nul_characters_are_stored_as_replacement_characters(client):
    body = {**TRACK, "event": "A\u0000B", "properties": {"k\u0000": "v\u0000"}}
    assert _post(client, "/api/v1/track", json.dumps(body)).status_code == 200
    event = Event.objects.get()
    assert (event.name, event.properties) == ("A\ufffdB", {"k\ufffd": "v\ufffd"})
    assert client.get("/api/v1/contacts/u1%00").status_code == 404
    assert client.get("/api/v1/contacts", {"email": "a\u0000@b.co"}).json()["results"] == []


def test_lone_surrogates_are_stored_as_replacement_characters(client):
    """A surrogate escape without its pair is valid JSON but neither UTF-8 nor PostgreSQL can hold it (once a 500)."""
    body = '{"userId": "u1", "event": "A\\ud800B", "properties": {"x\\uDC00": "\\ud83d\\ude00 \\udbff"}}'
    assert _post(client, "/api/v1/track", body).status_code == 200
    event = Event.objects.get()
    assert (event.name, event.properties) == ("A\ufffdB", {"x\ufffd": "\U0001f600 \ufffd"})  # a pair is kept


def test_revenue_stays_within_its_column(client):
    for i in range(3):
        order = {**TRACK, "messageId": f"m{i}", "properties": {"order_id": f"o{i}", "total": 999_999_999_999}}
        assert _post(client, "/api/v1/track", json.dumps(order)).status_code == 200
    events_process_pending()
    assert Contact.objects.get().total_revenue == MAX_AMOUNT


def test_identify_traits_from_context_traits_as_rudderstack_sends_them(client):
    body = {"userId": "u1", "context": {"traits": {"email": "min@example.com", "grade": "VIP"}}}
    assert _post(client, "/api/v1/identify", json.dumps(body)).status_code == 200
    events_process_pending()
    contact = Contact.objects.get()
    assert (contact.email, contact.attributes) == ("min@example.com", {"grade": "VIP"})


@pytest.mark.parametrize("page_size", ["0", "-1", "ten", "1.5"])
def test_page_size_must_be_a_positive_integer(client, page_size):
    assert client.get("/api/v1/contacts", {"page_size": page_size}).status_code == 400


def test_the_cart_of_a_contact_without_one_matches_the_schema(api_key):
    """``updated_at`` is null then; the schema said it never is."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()}
    schema["/api/v1/contacts/{external_id}"]["PUT"].Case(
        path_parameters={"external_id": "no-cart"}, body={}, media_type="application/json"
    ).call_and_validate(headers=auth)
    response = (
        schema["/api/v1/contacts/{external_id}/cart"]["GET"]
        .Case(path_parameters={"external_id": "no-cart"})
        .call_and_validate(headers=auth)
    )
    assert response.json()["updated_at"] is None


# --- Blanks: ``bench/api_fuzz 150`` found the schema calling ids valid that the API refused ---------------------
# The API trimmed ids with str.strip(), which also removes U+001C–U+001F; the schema's \S (ECMA-262) keeps them.
# Now both mean crm.blanks: each id below is accepted exactly when the schema calls it valid.

BLANK_EDGES = [*(BLANKS + NOT_BLANKS), "O\x00O"]
BLANK_EDGES += [c + "O" for c in BLANKS + NOT_BLANKS] + ["O" + c for c in BLANKS + NOT_BLANKS]


def _validator(openapi: dict, schema: dict):
    return jsonschema_rs.validator_for({**schema, "components": openapi["components"]}).is_valid


def test_put_accepts_exactly_the_ids_its_path_parameter_allows(client):
    openapi = client.get(SCHEMA_PATH, {"format": "json"}).json()
    (parameter,) = openapi["paths"]["/api/v1/contacts/{external_id}"]["put"]["parameters"]
    valid = _validator(openapi, parameter["schema"])
    for external_id in BLANK_EDGES:
        response = client.put(f"/api/v1/contacts/{quote(external_id, safe='')}", {}, format="json")
        assert response.status_code in (201, 400), response.content[:200]
        assert (response.status_code == 201) == valid(external_id), ascii(external_id)
    assert Contact.objects.filter(external_id="\x1dO").exists()


@pytest.mark.parametrize(
    ("path", "component", "body"),
    [
        ("/api/v1/track", "TrackMessageRequest", lambda i, v: {"userId": v, "event": "A", "messageId": f"m{i}"}),
        ("/api/v1/events", "NativeEventRequest", lambda i, v: {"external_id": v, "name": "A", "message_id": f"m{i}"}),
        ("/api/v1/track", "TrackMessageRequest", lambda i, v: {"userId": "u1", "event": v, "messageId": f"n{i}"}),
    ],
)
def test_tracking_accepts_exactly_the_ids_and_names_its_schema_allows(client, path, component, body):
    openapi = client.get(SCHEMA_PATH, {"format": "json"}).json()
    valid = _validator(openapi, {"$ref": f"#/components/schemas/{component}"})
    for i, value in enumerate(BLANK_EDGES):
        if "\x00" in value:
            continue  # stored as U+FFFD (see above), valid either way
        response = _post(client, path, json.dumps(body(i, value)))
        assert response.status_code in (200, 400), response.content[:200]
        assert (response.status_code == 200) == valid(body(i, value)), ascii(value)


def test_ids_are_trimmed_of_blanks_only(client):
    batch = [
        {"type": "identify", "userId": "\u3000u1\ufeff", "messageId": "m1"},
        {"type": "identify", "userId": "\x1c", "messageId": "m2"},
    ]
    assert _post(client, "/api/v1/batch", json.dumps({"batch": batch})).json()["stored"] == 2
    events_process_pending()
    assert set(Contact.objects.values_list("external_id", flat=True)) == {"u1", "\x1c"}


# --- Also found by ``bench/api_fuzz 150``: times the schema calls valid that the API refused, and traits -----------


@pytest.mark.parametrize(
    ("time", "accepted"),
    [
        ("0001-01-01T01:01:01+03:04", False),  # year 0 in UTC
        ("0001-01-01T05:00:00+03:00", False),  # exists in UTC, refused by the same rule
        ("0001-01-01T00:00:00Z", True),  # Go's zero time
        ("0001-01-01T00:00:00+00:00", True),
        ("0001-01-01T01:00:00-03:00", True),
        ("9999-12-31T23:00:00-05:00", False),  # year 10000 in UTC
        ("9999-12-31T23:00:00+05:00", True),
        ("9999-12-31T20:00:00Z", True),  # year 10000 in Asia/Seoul: the native endpoint converts to UTC now
    ],
)
def test_times_on_the_edge_days_follow_the_schemas_pattern(client, time, accepted):
    openapi = client.get(SCHEMA_PATH, {"format": "json"}).json()
    track = {"userId": "u1", "event": "A", "messageId": f"t{time}", "originalTimestamp": time}
    event = {"external_id": "u1", "name": "A", "message_id": f"e{time}", "occurred_at": time}
    for path, component, body in [
        ("/api/v1/track", "TrackMessageRequest", track),
        ("/api/v1/events", "NativeEventRequest", event),
    ]:
        assert _validator(openapi, {"$ref": f"#/components/schemas/{component}"})(body) == accepted
        response = _post(client, path, json.dumps(body))
        assert response.status_code == (200 if accepted else 400), response.content[:300]


def test_traits_are_read_only_where_the_schema_names_them(client):
    """A screen call with ``"traits": 5`` was refused; only identify and group carry traits."""
    assert _post(client, "/api/v1/screen", json.dumps({"userId": "u1", "traits": 5})).status_code == 200
    assert _post(client, "/api/v1/identify", json.dumps({"userId": "u1", "traits": 5})).status_code == 400
