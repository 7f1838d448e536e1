"""The segment admin: create and edit with errors per condition, member count and sample, the "why" page, the size
chart, member exports, the schema for a builder, and the delete guard."""

from __future__ import annotations

import io
import json
from datetime import date, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from crm.admin_segments import find_contacts, size_chart_svg
from crm.models import Segment, SegmentSize
from crm.services.segments import segment_create
from crm.tests.segment_world import NOW, World

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english(settings):
    settings.LANGUAGE_CODE = "en"


@pytest.fixture
def world():
    with time_machine.travel(NOW, tick=False):
        yield World()


@pytest.fixture
def vip(world) -> Segment:
    return world.vip_segment


def change_url(segment: Segment) -> str:
    return reverse("admin:crm_segment_change", args=[segment.pk])


def post_data(name: str, rules, description: str = "") -> dict:
    return {"name": name, "description": description, "rules": json.dumps(rules, ensure_ascii=False)}


TAG_RULES = {"version": 1, "root": {"type": "group", "op": "and", "children": [{"type": "tag", "tag": "vip"}]}}


def test_add_with_valid_rules_goes_through_the_service(admin_client, admin_user, world):
    response = admin_client.post(reverse("admin:crm_segment_add"), post_data("VIP tag", TAG_RULES, "태그로"))
    assert response.status_code == 302
    segment = Segment.objects.get(name="VIP tag")
    assert (segment.rules, segment.version, segment.created_by, segment.description) == (
        TAG_RULES,
        1,
        admin_user,
        "태그로",
    )


def test_invalid_rules_are_shown_per_condition_and_nothing_is_saved(admin_client, world):
    rules = {
        "version": 1,
        "root": {
            "type": "group",
            "children": [
                {"type": "tag", "tag": "vip"},
                {"type": "field", "field": "email", "op": "gt", "value": 3},
                {"type": "tag", "tag": "no such tag"},
            ],
        },
    }
    response = admin_client.post(reverse("admin:crm_segment_add"), post_data("broken", rules))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["rules"]
    assert errors[0].startswith("root.children[1].op: “gt” is not an operator for text values")
    assert errors[1] == "root.children[2].tag: There is no tag “no such tag”."
    assert "root.children[1].op" in response.content.decode()
    assert not Segment.objects.filter(name="broken").exists()


def test_invalid_json_is_a_form_error(admin_client, world):
    response = admin_client.post(
        reverse("admin:crm_segment_add"), {"name": "x", "description": "", "rules": '{"version": 1,'}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["rules"]


def test_empty_rules_mean_everybody(admin_client, world):
    response = admin_client.post(reverse("admin:crm_segment_add"), {"name": "all", "description": "", "rules": ""})
    assert response.status_code == 302
    segment = Segment.objects.get(name="all")
    assert segment.rules["root"]["children"] == []


def test_editing_the_rules_bumps_the_version(admin_client, vip):
    response = admin_client.post(change_url(vip), post_data("VIP", TAG_RULES))
    assert response.status_code == 302
    vip.refresh_from_db()
    assert (vip.version, vip.rules) == (2, TAG_RULES)
    admin_client.post(change_url(vip), post_data("VIP (renamed)", TAG_RULES))
    vip.refresh_from_db()
    assert (vip.version, vip.name) == (2, "VIP (renamed)")


def test_a_cycle_is_refused_in_the_form(admin_client, vip):
    outer = segment_create(
        name="outer",
        rules={"version": 1, "root": {"type": "group", "children": [{"type": "segment", "segment": vip.pk}]}},
    )
    rules = {"version": 1, "root": {"type": "group", "children": [{"type": "segment", "segment": outer.pk}]}}
    response = admin_client.post(change_url(vip), post_data("VIP", rules))
    assert response.status_code == 200
    assert "VIP → outer → VIP" in response.context["adminform"].form.errors["rules"][0]


def test_change_page_shows_count_sample_links_and_stores_the_count(admin_client, vip, world):
    with time_machine.travel(NOW, tick=False):
        response = admin_client.get(change_url(vip))
    assert response.status_code == 200
    assert response.context["member_count"] == 4
    shown = {row["contact"].pk for row in response.context["sample"]}
    assert shown == {world.contacts[n].pk for n in ("minji", "dohyun", "junho", "yuna")}
    html = response.content.decode()
    assert 'id="member-count"' in html
    assert "4 contacts" in html
    assert reverse("admin:crm_segment_why", args=[vip.pk]) in html
    assert reverse("admin:crm_segment_export", args=[vip.pk, "csv"]) in html
    assert "No daily counts yet" in html
    vip.refresh_from_db()
    assert vip.last_count == 4


def test_change_page_draws_the_size_chart(admin_client, vip):
    today = timezone.localdate()
    for days, count in ((3, 10), (2, 12), (1, 9), (0, 15)):
        SegmentSize.objects.create(segment=vip, day=today - timedelta(days=days), count=count)
    SegmentSize.objects.create(segment=vip, day=today - timedelta(days=200), count=99)  # outside the window
    response = admin_client.get(change_url(vip))
    html = response.content.decode()
    chart = html[html.index('<div id="size-chart">') :]
    chart = chart[: chart.index("</svg>")]
    assert 'class="loop-size-chart"' in chart
    assert chart.count("<circle") == 4
    assert ">15<" in chart  # the top of the scale
    assert ">99<" not in chart


def test_size_chart_geometry():
    assert size_chart_svg([]) == ""
    one = str(size_chart_svg([(date(2026, 3, 1), 7)]))
    assert one.count("<circle") == 1
    svg = str(size_chart_svg([(date(2026, 3, 1), 0), (date(2026, 3, 3), 100)], width=200, height=100))
    # first point: left edge, bottom; last point: right edge, top
    assert 'points="56.0,74.0 188.0,12.0"' in svg
    assert "2026-03-03: 100" in svg


@pytest.mark.parametrize(
    ("term", "who"),
    [("minji@example.com", "minji"), ("MINJI@example.com", "minji"), ("010-1111-0001", "minji"), ("u-junho", "junho")],
)
def test_why_finds_a_contact_and_explains(admin_client, vip, world, term, who):
    url = reverse("admin:crm_segment_why", args=[vip.pk])
    response = admin_client.get(url, {"q": term})
    assert response.status_code == 200
    assert response.context["contact"] == world.contacts[who]
    explanation = response.context["explanation"]
    assert explanation.member
    html = response.content.decode()
    assert "is in this segment." in html
    assert 'data-path="root.children[0]"' in html


def test_why_explains_a_non_member(admin_client, vip, world):
    url = reverse("admin:crm_segment_why", args=[vip.pk])
    response = admin_client.get(url, {"contact": world.contacts["hana"].pk})
    assert not response.context["explanation"].member
    html = response.content.decode()
    assert "is not in this segment." in html
    assert html.count('data-matched="false"') == 3  # the OR group and both of its conditions


def test_why_by_id_lists_several_matches_and_reports_unknown(admin_client, vip, world):
    url = reverse("admin:crm_segment_why", args=[vip.pk])
    minji = world.contacts["minji"]
    response = admin_client.get(url, {"q": str(minji.pk)})
    assert response.context["contact"] == minji
    response = admin_client.get(url, {"q": "nobody@nowhere.example"})
    assert "No contact has this" in response.content.decode()
    assert response.context["explanation"] is None


def test_find_contacts_returns_every_match(world):
    from crm.tests.factories import ContactFactory

    twin = ContactFactory(email="minji@example.com")
    assert {c.pk for c in find_contacts("minji@example.com")} == {world.contacts["minji"].pk, twin.pk}
    assert find_contacts("  ") == []


def test_export_members_csv(admin_client, vip, world):
    response = admin_client.get(reverse("admin:crm_segment_export", args=[vip.pk, "csv"]))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f"segment-{vip.pk}-" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    lines = text.strip().splitlines()
    assert len(lines) == 1 + 4
    assert "minji@example.com" in text
    assert "hana@example.com" not in text


def test_export_members_xlsx(admin_client, vip, world):
    from openpyxl import load_workbook

    response = admin_client.get(reverse("admin:crm_segment_export", args=[vip.pk, "xlsx"]))
    assert response.status_code == 200
    workbook = load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    assert len(rows) == 1 + 4
    emails = {row[2] for row in rows[1:]}
    assert emails == {"minji@example.com", "dohyun@test.co.kr", "junho@example.com", "yuna@example.com"}


def test_export_action_needs_exactly_one_segment(admin_client, vip, world):
    other = segment_create(name="tagged", rules=TAG_RULES)
    url = reverse("admin:crm_segment_changelist")
    response = admin_client.post(url, {"action": "export_members_csv", "_selected_action": [vip.pk]})
    assert response.status_code == 200
    assert b"".join(response.streaming_content).decode("utf-8-sig").count("\n") == 5
    response = admin_client.post(
        url, {"action": "export_members_csv", "_selected_action": [vip.pk, other.pk]}, follow=True
    )
    assert "Select exactly one segment" in response.content.decode()


def test_count_action_and_list_column(admin_client, vip, world):
    url = reverse("admin:crm_segment_changelist")
    admin_client.post(url, {"action": "count_members", "_selected_action": [vip.pk]})
    vip.refresh_from_db()
    assert vip.last_count == 4
    response = admin_client.get(url)
    assert response.status_code == 200
    assert 'class="field-members_column">4 <span' in response.content.decode()


def test_schema_json_for_the_builder(admin_client, world):
    response = admin_client.get(reverse("admin:crm_segment_schema"))
    assert response.status_code == 200
    description = response.json()
    assert description["version"] == 1
    assert "event" in description["kinds"]


def test_a_used_segment_is_not_deleted(admin_client, vip):
    outer = segment_create(
        name="outer",
        rules={"version": 1, "root": {"type": "group", "children": [{"type": "segment", "segment": vip.pk}]}},
    )
    response = admin_client.post(reverse("admin:crm_segment_delete", args=[vip.pk]), {"post": "yes"}, follow=True)
    assert "is used by the segment(s) “outer”" in response.content.decode()
    assert Segment.objects.filter(pk=vip.pk).exists()
    response = admin_client.post(reverse("admin:crm_segment_delete", args=[outer.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Segment.objects.filter(pk=outer.pk).exists()


def test_pages_need_the_view_permission(client, django_user_model, vip):
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    for url in (
        reverse("admin:crm_segment_why", args=[vip.pk]),
        reverse("admin:crm_segment_export", args=[vip.pk, "csv"]),
        reverse("admin:crm_segment_schema"),
    ):
        assert client.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_segment"))
    assert client.get(reverse("admin:crm_segment_why", args=[vip.pk])).status_code == 200
    assert client.get(reverse("admin:crm_segment_export", args=[vip.pk, "csv"])).status_code == 200
    assert client.get(reverse("admin:crm_segment_export", args=[vip.pk, "pdf"])).status_code == 403
