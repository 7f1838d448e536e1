"""The audit trail: who changed what, with a diff; kept immutable; secrets left out."""

from __future__ import annotations

import pytest
from django.urls import reverse

from campaigns.models import Campaign
from campaigns.services.campaigns import campaign_delete, campaign_schedule
from campaigns.tests.factories import CampaignFactory, SegmentFactory, tag_rules
from crm.audit import audit_context
from crm.models import AuditEntry, Consent, Segment
from crm.roles import ADMIN, MARKETER
from crm.services.apikeys import api_key_create, api_key_revoke
from crm.tests.factories import ContactFactory, SourceFactory, TagFactory, user_with_role

pytestmark = pytest.mark.django_db


def entries(instance=None, **filters):
    qs = AuditEntry.objects.all()
    if instance is not None:
        qs = qs.filter(object_type=instance._meta.label_lower, object_id=str(instance.pk))
    return list(qs.filter(**filters).order_by("id"))


def test_a_segment_edited_in_the_admin_is_recorded_with_who_where_and_the_diff(client):
    marketer = user_with_role(MARKETER, username="mina")
    client.force_login(marketer)
    TagFactory(name="vip"), TagFactory(name="gold")
    segment = Segment.objects.create(name="VIP", rules=tag_rules("vip"))
    response = client.post(
        reverse("admin:crm_segment_change", args=[segment.pk]),
        {
            "name": "VIP 고객",
            "description": "3회 이상 구매",
            "rules": '{"version": 1, "root": {"type": "group", '
            '"op": "and", "children": [{"type": "tag", "tag": "gold"}]}}',
        },
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 302, response.context["adminform"].errors
    created, changed = entries(segment)
    assert created.action == "created"
    assert created.actor is None
    assert created.via == "task"
    assert changed.action == "changed"
    assert changed.actor == marketer
    assert changed.actor_repr == "mina"
    assert changed.via == "admin"
    assert changed.ip_address == "203.0.113.9"
    assert changed.changes["name"] == ["VIP", "VIP 고객"]
    assert changed.changes["description"] == ["", "3회 이상 구매"]
    assert changed.changes["rules"][1]["root"]["children"] == [{"type": "tag", "tag": "gold"}]
    assert "updated_at" not in changed.changes
    assert "last_count" not in changed.changes
    listing = client.get(reverse("admin:crm_auditentry_changelist"), {"q": "VIP 고객"})
    assert listing.status_code == 200
    assert "VIP 고객" in listing.content.decode()


def test_entries_are_immutable():
    with audit_context(via="shell"):
        Segment.objects.create(name="x", rules=tag_rules("x"))
    entry = AuditEntry.objects.get()
    assert entry.via == "shell"
    entry.object_repr = "forged"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(object_repr="forged")
    with pytest.raises(PermissionError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get().object_repr == "x"


def test_nobody_edits_or_deletes_entries_in_the_admin(client):
    Segment.objects.create(name="x", rules=tag_rules("x"))
    entry = AuditEntry.objects.get()
    client.force_login(user_with_role(ADMIN))
    page = client.get(reverse("admin:crm_auditentry_change", args=[entry.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.post(reverse("admin:crm_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_api_keys_are_audited_without_their_secret():
    admin = user_with_role(ADMIN)
    with audit_context(admin, via="admin"):
        key, raw = api_key_create(source=SourceFactory(), name="shop", scopes=["write_events"], created_by=admin)
        api_key_revoke(key=key)
    created, revoked = entries(key)
    assert created.action == "created"
    assert revoked.action == "changed"
    assert set(revoked.changes) == {"revoked_at"}
    assert revoked.actor == admin
    text = str([e.changes for e in AuditEntry.objects.all()])
    assert raw not in text
    assert key.key_hash not in text
    assert "key_hash" not in text


def test_consent_changes_are_audited():
    contact = ContactFactory()
    consent = Consent.objects.create(
        contact=contact, purpose="email", granted=True, changed_at="2026-01-01T00:00Z", source="form"
    )
    consent.granted = False
    consent.save()
    assert [e.action for e in entries(consent)] == ["created", "changed"]
    assert entries(consent)[1].changes["granted"] == [True, False]


def test_campaign_lifecycle_and_deletion_stay_in_the_trail():
    marketer = user_with_role(MARKETER)
    campaign = CampaignFactory(schedule=Campaign.Schedule.ONCE, send_at="2030-01-01T00:00Z", segment=SegmentFactory())
    campaign_schedule(campaign=campaign, user=marketer)
    campaign_id = campaign.pk
    campaign_delete(campaign=campaign)
    trail = AuditEntry.objects.filter(object_type="campaigns.campaign", object_id=str(campaign_id)).order_by("id")
    assert [e.action for e in trail] == ["scheduled", "deleted"]
    assert trail[0].actor == marketer
    assert trail[0].changes["status"] == ["draft", "scheduled"]
    assert trail[1].changes["name"][0] == campaign.name


def test_client_address_behind_a_trusted_proxy(rf, settings):
    from config.ratelimit import client_address
    from crm.audit import client_ip

    direct = rf.get("/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert client_ip(direct) == "198.51.100.7"  # not a trusted proxy: the header is ignored
    settings.LOOP_TRUSTED_PROXIES = ["10.0.0.2"]
    proxied = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert client_ip(proxied) == "203.0.113.9"  # the address the proxy appended, not what the client prepended
    assert client_address(proxied) == "203.0.113.9"  # the public pages' rate limits count the same client
