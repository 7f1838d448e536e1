"""The role matrix: what an Admin, a Marketer and an Analyst may and may not do, in the admin and the API."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from campaigns.tests.factories import CampaignFactory, SegmentFactory
from crm.models import ApiKey
from crm.roles import ADMIN, ANALYST, MARKETER, ROLES, sync_roles, user_roles
from crm.services.apikeys import api_key_create
from crm.tests.factories import ContactFactory, SourceFactory, user_with_role

pytestmark = pytest.mark.django_db


def perms(role: str) -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in Group.objects.get(name=role).permissions.values_list("content_type__app_label", "codename")
    }


def test_the_migration_creates_the_three_groups_and_migrate_gives_them_their_permissions():
    assert set(Group.objects.filter(name__in=ROLES).values_list("name", flat=True)) == set(ROLES)
    assert perms(ADMIN) == {
        f"{app}.{codename}" for app, codename in Permission.objects.values_list("content_type__app_label", "codename")
    }
    marketer, analyst = perms(MARKETER), perms(ANALYST)
    for allowed in (
        "crm.change_contact",
        "crm.add_segment",
        "crm.delete_segment",
        "campaigns.add_campaign",
        "campaigns.change_variant",
        "crm.view_contactimport",
        "crm.view_source",
        "crm.view_auditentry",
    ):
        assert allowed in marketer, allowed
    for refused in (
        "crm.add_apikey",
        "crm.view_apikey",
        "crm.change_apikey",
        "crm.change_source",
        "auth.change_user",
        "auth.view_user",
        "campaigns.approve_launch",
        "campaigns.change_send",
        "crm.change_auditentry",
        "crm.delete_auditentry",
        "django_celery_beat.change_periodictask",
        "campaigns.change_launchapproval",
    ):
        assert refused not in marketer, refused
    assert analyst, "the analyst sees the product's data"
    assert all(perm.split(".")[1].startswith("view_") for perm in analyst)
    assert {"crm.view_contact", "crm.view_segment", "campaigns.view_campaign", "campaigns.view_run"} <= analyst
    assert "crm.view_apikey" not in analyst


def test_sync_is_idempotent_and_repairs_a_group_changed_by_hand():
    marketer = Group.objects.get(name=MARKETER)
    marketer.permissions.add(Permission.objects.get(codename="add_apikey"))
    before = sync_roles()
    assert sync_roles() == before
    assert "crm.add_apikey" not in perms(MARKETER)


@pytest.mark.parametrize(
    ("role", "url_name", "args", "status"),
    [
        (MARKETER, "admin:crm_contact_changelist", [], 200),
        (MARKETER, "admin:crm_segment_add", [], 200),
        (MARKETER, "admin:campaigns_campaign_add", [], 200),
        (MARKETER, "admin:crm_apikey_changelist", [], 403),
        (MARKETER, "admin:crm_apikey_add", [], 403),
        (MARKETER, "admin:auth_user_changelist", [], 403),
        (MARKETER, "admin:crm_auditentry_changelist", [], 200),
        (ANALYST, "admin:crm_contact_changelist", [], 200),
        (ANALYST, "admin:crm_segment_changelist", [], 200),
        (ANALYST, "admin:campaigns_campaign_changelist", [], 200),
        (ANALYST, "admin:crm_segment_add", [], 403),
        (ANALYST, "admin:campaigns_campaign_add", [], 403),
        (ANALYST, "admin:crm_apikey_changelist", [], 403),
        (ADMIN, "admin:crm_apikey_add", [], 200),
        (ADMIN, "admin:auth_user_changelist", [], 200),
    ],
)
def test_admin_pages_by_role(client, role, url_name, args, status):
    client.force_login(user_with_role(role))
    assert client.get(reverse(url_name, args=args)).status_code == status


def test_an_analyst_reads_and_exports_but_changes_nothing(client):
    segment = SegmentFactory()
    ContactFactory.create_batch(2)
    campaign = CampaignFactory(segment=segment)
    client.force_login(user_with_role(ANALYST))
    page = client.get(reverse("admin:crm_segment_change", args=[segment.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content  # a view-only page
    export = client.get(reverse("admin:crm_segment_export", args=[segment.pk, "csv"]))
    assert export.status_code == 200
    response = client.post(reverse("admin:crm_segment_change", args=[segment.pk]), {"name": "renamed"})
    assert response.status_code == 403
    launch = client.post(reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, "schedule"]))
    assert launch.status_code == 403
    campaign.refresh_from_db()
    assert campaign.status == "draft"


def test_a_marketer_launches_but_cannot_create_api_keys(client):
    client.force_login(user_with_role(MARKETER))
    source = SourceFactory()
    response = client.post(
        reverse("admin:crm_apikey_add"), {"source": source.pk, "name": "x", "scopes": ["write_events"]}
    )
    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_the_api_takes_keys_not_admin_sessions(client):
    """A logged-in admin user is no API client: the API authenticates only keys, checked for scope."""
    client.force_login(user_with_role(ADMIN))
    assert client.get("/api/v1/contacts").status_code in (401, 403)
    _key, raw = api_key_create(source=SourceFactory(), name="events only", scopes=[ApiKey.Scope.WRITE_EVENTS])
    wrong_scope = client.get("/api/v1/contacts", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert wrong_scope.status_code == 403
    _key, reader = api_key_create(source=SourceFactory(), name="reader", scopes=[ApiKey.Scope.READ_CONTACTS])
    assert client.get("/api/v1/contacts", HTTP_AUTHORIZATION=f"Bearer {reader}").status_code == 200


def test_user_roles():
    assert user_roles(user_with_role(MARKETER)) == [MARKETER]
