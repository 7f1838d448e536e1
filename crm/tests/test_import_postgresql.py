"""On PostgreSQL: the COPY/set-based writer leaves the database exactly as the ORM writer (consent_record_many), with
the statements on the StatementQueue's thread, over several batches; conflicts found while writing roll back."""

from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone, translation

from crm.db import StatementQueue
from crm.importing import apply, bulk, plan
from crm.models import Consent, ConsentChange, Contact, ContactImport, ContactList, Tag
from crm.services.consent import ConsentBulkRecorder, ConsentInput, consent_record_many
from crm.services.imports import contact_import_apply, contact_import_confirm
from crm.tests.factories import ContactFactory, ContactListFactory, TagFactory
from crm.tests.import_helpers import csv_bytes, preview, run_import

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


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.mark.parametrize("batch_size", [5_000, 2])
def test_copy_writer_and_orm_writer_write_the_same(postgresql, settings, tmp_path, monkeypatch, batch_size):
    # Batches of 2 rows: the queue's thread writes a batch while the next is checked, ids are taken ahead in chunks
    # smaller than the import (and once on demand).
    monkeypatch.setattr(plan, "BATCH_SIZE", batch_size)
    monkeypatch.setattr(bulk.IdPool, "CHUNK", 2)
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


def consent_case(now):
    """Four contacts with consent states of every kind, and an import's changes for them."""
    past, future = now - timedelta(days=1), now + timedelta(days=1)
    contacts = ContactFactory.create_batch(4)
    a, b, c, d = (x.pk for x in contacts)
    consent_record_many(
        changes=[
            ConsentInput(a, "sms", False, past, "signup"),
            ConsentInput(b, "email", True, past, "signup"),
            ConsentInput(c, "email", False, past, "signup"),
            ConsentInput(d, "email", True, future, "preference_center"),
        ]
    )
    changes = {
        (a, "email"): True,  # no state: recorded
        (a, "sms"): True,  # older, opposite: recorded
        (b, "email"): True,  # the same: nothing
        (c, "email"): True,  # older, opposite: recorded
        (d, "email"): False,  # newer, opposite: the newer decision stays
    }
    return contacts, changes


def consent_snapshot(contacts):
    index = {c.pk: i for i, c in enumerate(contacts)}
    state = sorted((index[k.contact_id], k.purpose, k.granted, k.changed_at, k.source) for k in Consent.objects.all())
    history = sorted(
        (index[h.contact_id], h.purpose, h.granted, h.changed_at, h.source) for h in ConsentChange.objects.all()
    )
    return state, history


def test_consent_bulk_recorder_follows_consent_record_many(postgresql):
    now = timezone.now()
    contacts, changes = consent_case(now)
    inputs = [ConsentInput(cid, purpose, granted, now, "import:1") for (cid, purpose), granted in changes.items()]
    assert consent_record_many(changes=inputs) == 3
    expected = consent_snapshot(contacts)

    Contact.objects.all().delete()
    contacts, changes = consent_case(now)
    recorder = ConsentBulkRecorder(changed_at=now, source="import:1")
    with StatementQueue() as queue:
        assert queue.run(recorder.job(changes, recorded_at=now)) == 3
        assert consent_snapshot(contacts) == expected
        # Used again in the same transaction (the next batch): the staging table is emptied first.
        assert queue.run(recorder.job({}, recorded_at=now)) == 0
        assert queue.run(recorder.job({(contacts[1].pk, "push"): True}, recorded_at=now)) == 1
    assert Consent.objects.filter(source="import:1").count() == 4
    with pytest.raises(ValueError, match="unknown consent purpose"):
        recorder.job({(contacts[0].pk, "fax"): True}, recorded_at=now)


@pytest.mark.django_db(transaction=True)
def test_a_contact_created_by_another_connection_while_the_import_writes_is_reported(postgresql, media, monkeypatch):
    """Between the check of a batch and its COPY another process creates a contact with a member ID the batch
    creates: nothing of the import is written, the preview is recomputed with a notice, confirming again applies."""
    from django.db import connection

    ci = preview(csv_bytes("회원ID,이름,수신동의", "N1,김민준,Y", "N2,이서연,N"))
    assert (ci.new_count, ci.updated_count) == (2, 0)
    original = bulk.PgCopyWriter.write

    def racing_write(self, decided, targets):
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
            other.execute(
                "INSERT INTO crm_contact (external_id, email, phone, name, locale, time_zone, attributes, "
                "order_count, total_revenue, created_at, updated_at) "
                "VALUES ('N2', '', '', '다른 사람', '', '', '{}', 0, 0, now(), now())"
            )
        monkeypatch.setattr(bulk.PgCopyWriter, "write", original)
        original(self, decided, targets)

    monkeypatch.setattr(bulk.PgCopyWriter, "write", racing_write)
    with translation.override("en"):
        ci = contact_import_apply(contact_import=ci)
    assert ci.status == "previewed"
    assert "Nothing was imported: 1 row would now do something else" in ci.preview["notice"]
    assert list(Contact.objects.values_list("external_id", "name")) == [("N2", "다른 사람")]
    assert not Consent.objects.exists()
    assert not ConsentChange.objects.exists()
    assert (ci.new_count, ci.updated_count) == (1, 1)  # the new preview: N2 exists now
    ci = contact_import_confirm(contact_import=ci)
    assert ci.status == "completed"
    assert dict(Contact.objects.values_list("external_id", "name")) == {"N1": "김민준", "N2": "이서연"}
    assert ContactImport.objects.get(pk=ci.pk).new_count == 1


def test_id_pool_takes_ids_ahead_and_on_demand(postgresql):
    with StatementQueue() as queue:
        ahead = bulk.IdPool(queue, Contact._meta.db_table, expected=3)
        first = ahead.take(2) + ahead.take(1)
        more = ahead.take(2)  # beyond what the preview counted: taken on demand
        on_demand = bulk.IdPool(queue, Contact._meta.db_table, expected=0).take(2)
    ids = first + more + on_demand
    assert len(set(ids)) == 7
    assert ids == sorted(ids)
    contact = ContactFactory()  # the sequence never hands them out again
    assert contact.pk > max(ids)
