"""On PostgreSQL, the COPY/set-based writer leaves the database exactly as the ORM writer (consent_record_many)."""

from datetime import timedelta

import pytest
from django.utils import timezone, translation

from crm.importing import apply, bulk
from crm.models import Consent, ConsentChange, Contact, ContactList, Tag
from crm.services.consent import ConsentInput, consent_record_many
from crm.tests.factories import ContactFactory, ContactListFactory, TagFactory
from crm.tests.import_helpers import csv_bytes, run_import

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

FILE = csv_bytes(
    "회원ID,이름,이메일,휴대폰,수신동의,이메일 수신동의,태그,등급",
    'P1,김민준,p1@example.com,010-1111-0001,Y,N,"VIP, 신규",GOLD',  # existing: consent states of every kind
    "P2,이서연,p2@example.com,010-1111-0002,N,,VIP,SILVER",  # existing, older opposite consent
    "P3,박지훈,p3@example.com,010-1111-0003,Y,,,BRONZE",  # existing, unchanged
    "N1,최수아,n1@example.com,010-2222-0001,Y,,신규,GOLD",  # new
    "N2,정하준,,010-2222-0002,N,Y,,",  # new
    'N3,"역\\슬래시, ""따옴표""",n3@example.com,,,,"탭\t과\n줄바꿈",\\N',  # COPY's special characters
)


def initial_state(now):
    past, future = now - timedelta(days=10), now + timedelta(days=1)
    vip = TagFactory(name="VIP")
    ContactListFactory(name="명단")
    p1 = ContactFactory(external_id="P1", email="p1@example.com", phone="+821011110001", name="김민준")
    p2 = ContactFactory(external_id="P2", email="p2@example.com", phone="+821011110002", name="옛이름", tags=[vip])
    p3 = ContactFactory(
        external_id="P3", email="p3@example.com", phone="+821011110003", name="박지훈", attributes={"등급": "BRONZE"}
    )
    consent_record_many(
        changes=[
            ConsentInput(p1.pk, "ads", True, past, "signup"),  # same as the file: nothing
            ConsentInput(p1.pk, "sms", False, past, "signup"),  # older, opposite: changes
            ConsentInput(p1.pk, "email", True, future, "preference_center"),  # newer than the import: kept
            ConsentInput(p2.pk, "ads", True, past, "signup"),
            ConsentInput(p3.pk, "ads", True, past, "signup"),
            ConsentInput(p3.pk, "email", True, past, "signup"),
            ConsentInput(p3.pk, "sms", True, past, "signup"),
        ]
    )


def snapshot(ci):
    def norm(value):
        return "IMPORT" if value in (ci.created_at, f"import:{ci.pk}") else value

    contacts = {c.external_id: (c.email, c.phone, c.name, c.attributes) for c in Contact.objects.all()}
    consents = {
        (k.contact.external_id, k.purpose): (k.granted, norm(k.changed_at), norm(k.source))
        for k in Consent.objects.select_related("contact")
    }
    history = sorted(
        (h.contact.external_id, h.purpose, h.granted, str(norm(h.changed_at)), norm(h.source))
        for h in ConsentChange.objects.select_related("contact")
    )
    tags = sorted((c.external_id, t.name) for c in Contact.objects.all() for t in c.tags.all())
    lists = sorted((c.external_id, x.name) for c in Contact.objects.all() for x in c.lists.all())
    return contacts, consents, history, tags, lists


def reset():
    Contact.objects.all().delete()
    Tag.objects.all().delete()
    ContactList.objects.all().delete()


def test_copy_writer_and_orm_writer_write_the_same(postgresql, settings, tmp_path, monkeypatch):
    settings.MEDIA_ROOT = tmp_path
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    now = timezone.now()
    with translation.override("en"):
        initial_state(now)
        ci = run_import(FILE, tag="봄 세일", list="명단")
        assert ci.status == "completed"
        assert (ci.new_count, ci.updated_count, ci.unchanged_count) == (3, 2, 1)
        with_copy = snapshot(ci)

        reset()
        initial_state(now)
        monkeypatch.setattr(apply, "make_writer", lambda ci, **kw: bulk.OrmWriter(ci, **kw))
        ci = run_import(FILE, tag="봄 세일", list="명단")
        assert ci.status == "completed"
        with_orm = snapshot(ci)

    assert with_copy == with_orm
    _contacts, consents, _history, tags, lists = with_copy
    assert consents[("P1", "sms")] == (True, "IMPORT", "IMPORT")
    assert consents[("P1", "email")][2] == "preference_center"  # a newer decision is never overridden
    assert consents[("P1", "ads")][2] == "signup"  # unchanged: no new record
    assert ("P1", "신규") in tags
    assert ("P3", "봄 세일") in tags  # the import's tag goes to unchanged rows too
    assert lists == [(ext, "명단") for ext in ("N1", "N2", "N3", "P1", "P2", "P3")]
    n3 = Contact.objects.get(external_id="N3")
    assert n3.name == '역\\슬래시, "따옴표"'
    assert n3.attributes == {"등급": "\\N"}
    assert ("N3", "탭\t과\n줄바꿈") in tags
