"""Issue #12: erasure on request removes or anonymizes a contact everywhere (every app), and is audited.

The "no trace" check is generic: every text and JSON column of every installed model is searched for the contact's
email, phone, name, external ID and anonymous ID, so a table added later that copies personal data fails here.
"""

from __future__ import annotations

import base64

import pytest
from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import models
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns.models import OutboxMessage, Send
from campaigns.tests.factories import CampaignFactory, SendFactory, SuppressionFactory
from crm.models import AuditEntry, Contact, ContactAlias, Source
from crm.roles import ADMIN, ANALYST, MARKETER
from crm.services.contacts import contact_erase
from crm.tests.factories import (
    ConsentFactory,
    ContactFactory,
    DeviceFactory,
    EventFactory,
    OrderFactory,
    WishlistItemFactory,
    user_with_role,
)
from journeys.models import Enrollment, EnrollmentLog, Journey

pytestmark = pytest.mark.django_db

EMAIL = "minji.erasure@example.com"
PHONE = "+821055550123"
NAME = "Minji Erasure-Kim"
EXTERNAL_ID = "ext-erasure-77"
ANONYMOUS_ID = "anon-erasure-5f1c"
PERSONAL = (EMAIL, PHONE, NAME, EXTERNAL_ID, ANONYMOUS_ID)


def tables_containing(values) -> dict[str, int]:
    """``{"app.model.field": rows}`` for every text or JSON column of every model that contains one of ``values``."""
    found = {}
    for model in apps.get_models(include_auto_created=True):
        for field in model._meta.concrete_fields:
            if not isinstance(field, models.CharField | models.TextField | models.JSONField):
                continue
            column = Cast(field.name, TextField()) if isinstance(field, models.JSONField) else None
            queryset = model._base_manager.all()
            if column is not None:
                queryset = queryset.annotate(_text=column)
                lookup = "_text__contains"
            else:
                lookup = f"{field.name}__contains"
            condition = Q()
            for value in values:
                condition |= Q(**{lookup: value})
            count = queryset.filter(condition).count()
            if count:
                found[f"{model._meta.label_lower}.{field.name}"] = count
    return found


@pytest.fixture
def person():
    """A contact whose personal data is copied into every app: events, devices, orders, messages, journeys."""
    contact = ContactFactory(email=EMAIL, phone=PHONE, name=NAME, external_id=EXTERNAL_ID, attributes={"nick": NAME})
    ContactAlias.objects.create(contact=contact, anonymous_id=ANONYMOUS_ID)
    ConsentFactory(contact=contact, purpose="email")
    DeviceFactory(contact=contact)
    source = Source.objects.create(name="shop")
    # a survey answer and a lead-form submission are events with the person's words and fields
    EventFactory(contact=contact, source=source, name="Survey Answered", properties={"comment": f"call {PHONE}"})
    EventFactory(
        contact=contact,
        source=source,
        name="Lead Form Submitted",
        properties={"email": EMAIL, "name": NAME},
        context={"traits": {"anonymousId": ANONYMOUS_ID}},
    )
    OrderFactory(contact=contact, items=[{"name": "tote", "gift_note": NAME}])
    WishlistItemFactory(contact=contact, name=NAME)
    send = SendFactory(
        contact=contact,
        campaign=CampaignFactory(),
        address=EMAIL,
        content={"subject": f"{NAME}님, 안녕하세요"},
        context={"email": EMAIL},
        delivery_detail=f"bounced: {EMAIL}",
        error=f"rejected {EMAIL}",
    )
    OutboxMessage.objects.create(
        send=send, channel="email", to=EMAIL, subject=NAME, body=f"Hi {NAME}", html=f"<p>{PHONE}</p>"
    )
    SuppressionFactory(contact=contact, detail=f"{EMAIL} bounced")
    journey = Journey.objects.create(name="welcome")
    enrollment = Enrollment.objects.create(
        journey=journey, contact=contact, context={"email": EMAIL, "user": EXTERNAL_ID}, last_error=f"no {PHONE}"
    )
    EnrollmentLog.objects.create(enrollment=enrollment, action="sent", detail=f"email to {EMAIL}")
    return contact


def test_the_fixture_really_spreads_the_data(person):
    """The search below finds the data before erasure (else the "no trace" test could not fail)."""
    found = tables_containing(PERSONAL)
    for column in (
        "crm.contact.email",
        "crm.event.properties",
        "campaigns.send.content",
        "campaigns.outboxmessage.to",
        "campaigns.suppression.detail",
        "journeys.enrollment.context",
        "journeys.enrollmentlog.detail",
    ):
        assert column in found


def test_no_table_contains_the_contact_after_erasure(person, admin_user):
    other = ContactFactory(email="other@example.com", name="Other Person")
    SendFactory(contact=other, address="other@example.com", content={"subject": "Other Person"})

    contact_erase(contact=person, actor="test")

    assert tables_containing(PERSONAL) == {}
    # the rows stay, anonymized, so reports keep their counts; other contacts are untouched
    assert Send.objects.filter(contact=person).count() == 1
    assert Enrollment.objects.filter(contact=person).count() == 1
    assert Send.objects.get(contact=other).content == {"subject": "Other Person"}
    assert Contact.objects.get(pk=other.pk).email == "other@example.com"


def test_erasure_is_audited_without_personal_data(person, admin_user):
    from crm.audit import audit_context

    with audit_context(admin_user, via="admin"):
        contact_erase(contact=person, actor="admin")

    entry = AuditEntry.objects.get(action=AuditEntry.Action.ERASED)
    assert (entry.actor, entry.via, entry.object_type, entry.object_id) == (
        admin_user,
        "admin",
        "crm.contact",
        str(person.pk),
    )
    assert entry.at is not None
    assert "erased_at" in entry.changes
    text = f"{entry.object_repr} {entry.changes}"
    assert not any(value in text for value in PERSONAL)


def test_a_failing_receiver_rolls_the_whole_erasure_back(person, monkeypatch):
    import journeys.receivers

    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(journeys.receivers, "contact_journeys_erase", broken)
    with pytest.raises(RuntimeError):
        contact_erase(contact=person, actor="test")
    person.refresh_from_db()
    assert (person.email, person.erased_at) == (EMAIL, None)
    assert Send.objects.get(contact=person).address == EMAIL
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.ERASED).exists()


class TestAdminAction:
    def changelist(self):
        return reverse("admin:crm_contact_changelist")

    def post(self, client, contact, **extra):
        return client.post(
            self.changelist(), {"action": "erase_personal_data", ACTION_CHECKBOX_NAME: [contact.pk], **extra}
        )

    def test_admin_confirms_then_erases(self, client, person):
        user = user_with_role(ADMIN)
        client.force_login(user)
        page = self.post(client, person)
        assert page.status_code == 200
        assert "admin/crm/contact/erase_confirmation.html" in [t.name for t in page.templates]
        assert Contact.objects.get(pk=person.pk).erased_at is None  # nothing happens before the confirmation

        done = self.post(client, person, confirm="yes")
        assert done.status_code == 302
        person.refresh_from_db()
        assert person.erased_at is not None
        assert person.email == ""
        entry = AuditEntry.objects.get(action=AuditEntry.Action.ERASED)
        assert entry.actor == user
        assert entry.via == "admin"
        assert OutboxMessage.objects.get().to == ""

    @pytest.mark.parametrize("role", [MARKETER, ANALYST])
    def test_other_roles_cannot_erase(self, client, person, role):
        client.force_login(user_with_role(role))
        page = client.get(self.changelist())
        assert page.status_code == 200
        assert "erase_personal_data" not in page.content.decode()
        self.post(client, person, confirm="yes")
        person.refresh_from_db()
        assert person.erased_at is None
        assert person.email == EMAIL


class TestExports:
    def export(self, client, fmt="csv"):
        return client.get(reverse("admin:crm_contact_export", args=[fmt]))

    def test_exports_leave_erased_contacts_out(self, client, person):
        kept = ContactFactory(email="kept@example.com")
        gone = ContactFactory(email="gone@example.com")
        contact_erase(contact=gone, actor="test")
        client.force_login(user_with_role(ANALYST))
        body = b"".join(self.export(client).streaming_content).decode("utf-8-sig")
        assert kept.email in body
        assert f"{gone.pk}" not in body.split("\n", 1)[0]
        assert body.count("\n") == 3  # header, the person and kept; the erased one is not a row

    def test_events_export_leaves_erased_contacts_out(self, client, person):
        from crm.exporting import event_rows
        from crm.models import Event

        rows = list(event_rows(Event.objects.all()))
        assert len(rows) == 3
        contact_erase(contact=person, actor="test")
        assert list(event_rows(Event.objects.all()))[1:] == []

    def test_analyst_may_export(self, client, person):
        client.force_login(user_with_role(ANALYST))
        assert self.export(client).status_code == 200
        assert self.export(client, "xlsx").status_code == 200

    def test_a_user_without_view_permission_gets_403(self, client, person, django_user_model):
        user = django_user_model.objects.create_user(username="intern", password="pw-Loop-2026!", is_staff=True)
        client.force_login(user)
        assert self.export(client).status_code == 403
        assert self.export(client, "xlsx").status_code == 403


def test_api_delete_erases_everywhere(person):
    from crm.models import ApiKey
    from crm.services.apikeys import api_key_create

    _key, raw = api_key_create(
        source=Source.objects.get(name="shop"),
        name="shop",
        scopes=[ApiKey.Scope.READ_CONTACTS, ApiKey.Scope.WRITE_CONTACTS],
    )
    client = APIClient(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{raw}:".encode()).decode())
    assert client.delete(f"/api/v1/contacts/{EXTERNAL_ID}").status_code == 204
    assert tables_containing(PERSONAL) == {}
    entry = AuditEntry.objects.get(action=AuditEntry.Action.ERASED)
    assert entry.via == "api"
    assert entry.actor_repr.startswith("api-key:")
