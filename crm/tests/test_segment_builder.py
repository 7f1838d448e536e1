"""The rule builder's server side: the live preview endpoint (validate → count and sample, or 400 with the
validator's messages), its protection (staff, view permission, CSRF), and the builder widget on the segment page."""

from __future__ import annotations

import json

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from crm.admin_segments import PREVIEW_SAMPLE_SIZE
from crm.models import Event
from crm.selectors import event_names
from crm.services.segments import segment_create
from crm.tests.factories import ContactFactory, EventFactory
from crm.tests.segment_world import ALL, NOW, World

pytestmark = pytest.mark.django_db

PREVIEW = "admin:crm_segment_preview"


@pytest.fixture(autouse=True)
def _english(settings):
    settings.LANGUAGE_CODE = "en"


@pytest.fixture
def world():
    with time_machine.travel(NOW, tick=False):
        yield World()


def rules(*children, op="and") -> dict:
    return {"version": 1, "root": {"type": "group", "op": op, "children": list(children)}}


def preview(client, body, **extra):
    payload = body if isinstance(body, str | bytes) else json.dumps(body, ensure_ascii=False)
    with time_machine.travel(NOW, tick=False):
        return client.post(reverse(PREVIEW), payload, content_type="application/json", **extra)


def test_valid_rules_give_the_exact_count_and_the_newest_members(admin_client, world):
    response = preview(admin_client, {"rules": world.vip_segment.rules, "segment": None})
    assert response.status_code == 200
    data = response.json()
    assert data["count"] == 4
    members = [world.contacts[name] for name in ("minji", "junho", "dohyun", "yuna")]
    members.sort(key=lambda contact: -contact.pk)
    assert data["sample"] == [
        {
            "id": contact.pk,
            "name": contact.name,
            "email": contact.email,
            "phone": data["sample"][index]["phone"],
            "url": reverse("admin:crm_contact_change", args=[contact.pk]),
        }
        for index, contact in enumerate(members)
    ]
    minji = next(row for row in data["sample"] if row["id"] == world.contacts["minji"].pk)
    assert minji["phone"] == "010-1111-0001"


def test_attribute_and_event_rules_count_at_the_current_moment(admin_client, world):
    seoul = {"type": "attribute", "key": "city", "value_type": "text", "op": "in", "value": ["서울", "Seoul"]}
    response = preview(admin_client, {"rules": rules(seoul)})
    # the erased contact lives in 서울 too, and seoyeon's city is a list, not a text
    assert {row["name"] for row in response.json()["sample"]} == {"민지", world.contacts["dohyun"].name}
    ordered_lately = {
        "type": "event",
        "op": "did",
        "name": "Order Completed",
        "when": {"op": "within_last", "value": 3, "unit": "days"},
    }
    response = preview(admin_client, {"rules": rules(seoul, ordered_lately)})
    # minji ordered 2 days ago; dohyun ordered today at 00:30
    assert response.json()["count"] == 2
    ordered_lately["when"]["value"] = 1
    response = preview(admin_client, {"rules": rules(seoul, ordered_lately)})
    assert [row["id"] for row in response.json()["sample"]] == [world.contacts["dohyun"].pk]


def test_empty_rules_mean_everybody_and_the_sample_is_capped(admin_client, world):
    ContactFactory.create_batch(PREVIEW_SAMPLE_SIZE + 2)
    for body in ({"rules": {}}, {"rules": None}, {"rules": rules()}):
        response = preview(admin_client, body)
        assert response.status_code == 200
        assert response.json()["count"] == len(ALL) + PREVIEW_SAMPLE_SIZE + 2
        assert len(response.json()["sample"]) == PREVIEW_SAMPLE_SIZE


def test_invalid_rules_are_a_400_with_every_message_and_its_path(admin_client, world):
    body = {
        "rules": rules(
            {"type": "attribute", "key": "", "value_type": "text", "op": "eq"},
            {"type": "event", "op": "did", "count": {"op": "at_least", "value": 0}},
            {"type": "tag", "tag": "no such tag"},
        )
    }
    response = preview(admin_client, body)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "path": "root.children[0].key",
            "code": "key",
            "message": "An attribute key is a non-empty text of at most 200 characters.",
        },
        {"path": "root.children[0].value", "code": "required", "message": "This operator needs a value."},
        {"path": "root.children[1].count.value", "code": "count", "message": "A whole number from 1 to 1000000."},
        {"path": "root.children[2].tag", "code": "missing", "message": "There is no tag “no such tag”."},
    ]


def test_messages_follow_the_users_language(admin_client, world):
    admin_client.cookies["django_language"] = "ko"
    response = preview(admin_client, {"rules": rules({"type": "tag", "tag": "없는 태그"})})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] != "There is no tag “없는 태그”."
    assert "없는 태그" in response.json()["errors"][0]["message"]


def test_the_segment_being_edited_cannot_include_itself(admin_client, world):
    vip = world.vip_segment
    body = {"rules": rules({"type": "segment", "segment": vip.pk}), "segment": vip.pk}
    response = preview(admin_client, body)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"path": "root.children[0].segment", "code": "cycle", "message": "A segment cannot include itself."}
    ]
    body["segment"] = None  # a new segment may use VIP
    assert preview(admin_client, body).json()["count"] == 4


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("{not json", ""),
        ("[1, 2]", ""),
        (b"\xff\xfe", ""),
        (json.dumps({"rules": rules(), "segment": "12"}), "segment"),
        (json.dumps({"rules": rules(), "segment": True}), "segment"),
    ],
)
def test_a_malformed_request_is_a_400(admin_client, world, body, path):
    response = preview(admin_client, body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == path


def test_get_is_not_allowed(admin_client):
    assert admin_client.get(reverse(PREVIEW)).status_code == 405


def test_non_staff_and_users_without_the_view_permission_are_refused(client, django_user_model, world):
    body = {"rules": world.vip_segment.rules}
    user = django_user_model.objects.create_user("member", password="pw")
    client.force_login(user)
    response = preview(client, body)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))

    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert preview(client, body).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_segment"))
    assert preview(client, body).json()["count"] == 4


def test_the_endpoint_checks_the_csrf_token(admin_user, world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    body = {"rules": world.vip_segment.rules}
    assert preview(client, body).status_code == 403
    client.get(reverse("admin:crm_segment_add"))  # sets the CSRF cookie, as the page does for the builder
    token = client.cookies["csrftoken"].value
    response = preview(client, body, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert response.json()["count"] == 4


def test_the_segment_page_carries_the_builder_and_its_choices(admin_client, world):
    vip = world.vip_segment
    newbies = segment_create(name="Newbies", rules=rules({"type": "tag", "tag": "newbie"}))
    response = admin_client.get(reverse("admin:crm_segment_change", args=[vip.pk]))
    html = response.content.decode()
    assert 'class="loop-rule-builder"' in html
    assert f'data-preview-url="{reverse(PREVIEW)}"' in html
    assert f'data-segment-id="{vip.pk}"' in html
    assert "crm/segment_builder.js" in html
    assert "crm/segment_builder.css" in html
    assert reverse("admin:jsi18n") in html
    assert response.context["adminform"].form.fields["rules"].widget.segment_id == vip.pk
    start = html.index('<script id="id_rules-choices" type="application/json">')
    data = json.loads(html[html.index(">", start) + 1 : html.index("</script>", start)])
    assert data == {
        "lists": [{"id": world.spring.pk, "name": "봄 행사"}],
        "tags": ["newbie", "vip"],
        "events": distinct_event_names(),
        "segments": [{"id": newbies.pk, "name": "Newbies"}],  # not the segment itself
    }
    response = admin_client.get(reverse("admin:crm_segment_add"))
    assert 'data-segment-id=""' in response.content.decode()


def distinct_event_names() -> list[str]:
    return list(Event.objects.order_by("name").values_list("name", flat=True).distinct())


def test_event_names_are_distinct_in_the_databases_order_and_limited(world):
    EventFactory.create_batch(3, name="Viewed Page")
    EventFactory(name="Ａ full-width")
    names = distinct_event_names()
    assert len(names) >= 5
    assert "Viewed Page" in names
    assert "주말 한정 할인" in names
    assert event_names() == names
    assert event_names(limit=2) == names[:2]
    assert event_names(limit=1) == names[:1]


def test_event_names_of_an_empty_table():
    assert event_names() == []


def test_the_builders_javascript_strings_are_translated_to_korean():
    from config.tests.test_admin_site import PO_FILE, read_po

    entries = [entry for entry in read_po(PO_FILE.with_name("djangojs.po")) if entry["msgid"]]
    assert "JSON (advanced)" in {entry["msgid"] for entry in entries}
    untranslated = [entry["msgid"] for entry in entries if not entry.get("msgstr", entry.get("msgstr[0]", "")).strip()]
    assert untranslated == []
    assert not [entry["msgid"] for entry in entries if "fuzzy" in entry.get("flags", ())]


def test_the_javascript_catalog_of_the_admin_carries_the_builders_strings(admin_client):
    admin_client.cookies["django_language"] = "ko"
    catalog = admin_client.get(reverse("admin:jsi18n")).content.decode()
    assert '"JSON (advanced)": "JSON (\\uace0\\uae09)"' in catalog or '"JSON (advanced)": "JSON (고급)"' in catalog


@pytest.mark.integration
def test_a_preview_that_takes_too_long_is_stopped_by_postgresql(postgresql, admin_client, world, monkeypatch):
    from django.db import connection

    import crm.admin_segments as admin_segments

    def slow_preview(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")

    monkeypatch.setattr(admin_segments, "PREVIEW_TIMEOUT_MS", 1000)
    monkeypatch.setattr(admin_segments, "segment_rules_preview", slow_preview)
    response = preview(admin_client, {"rules": rules()})
    assert response.status_code == 504
    assert response.json() == {"message": "Counting took longer than 1 second; the segment can still be saved."}
    with connection.cursor() as cursor:  # the timeout was local to the preview's transaction
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
