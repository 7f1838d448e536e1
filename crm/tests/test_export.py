"""Exports: CSV with a BOM and XLSX, streamed in chunks; Korean text round-trips through an import."""

import csv
import io
import json

import pytest
from django.utils import translation
from openpyxl import load_workbook

from crm import exporting
from crm.admin_import import contacts_export_response
from crm.models import Consent, Contact
from crm.services.consent import ConsentInput, consent_record_many
from crm.tests.factories import ContactFactory, EventFactory, TagFactory
from crm.tests.import_helpers import run_import

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with translation.override("en"):
        yield


def csv_rows(chunks) -> list[list[str]]:
    content = b"".join(chunks)
    assert content.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))


@pytest.fixture
def contacts():
    vip = TagFactory(name="VIP")
    kim = ContactFactory(
        external_id="m001",
        name="김민준",
        email="kim@example.com",
        phone="+821012345678",
        attributes={"등급": "골드", "포인트": 12000, "생일쿠폰": True, "가입일": "2024-01-02"},
        tags=[vip],
    )
    lee = ContactFactory(
        external_id="m002", name="이서연", email="lee@example.com", phone="+16135550135", attributes={"메모": "=1+2"}
    )
    consent_record_many(
        changes=[
            ConsentInput(kim.pk, "email", True, kim.created_at, "test"),
            ConsentInput(kim.pk, "sms", False, kim.created_at, "test"),
        ]
    )
    return kim, lee


def test_csv_starts_with_the_bom_and_keeps_korean_text(contacts):
    rows = csv_rows(exporting.csv_stream(exporting.contact_rows(Contact.objects.all())))
    header = rows[0]
    assert header[:7] == ["Member ID", "Name", "Email", "Phone", "Language", "Time zone", "Tags"]
    assert header[-5:] == ["가입일", "등급", "메모", "생일쿠폰", "포인트"]
    kim = dict(zip(header, rows[1], strict=True))
    assert kim["Name"] == "김민준"
    assert kim["Phone"] == "010-1234-5678"
    assert kim["Tags"] == "VIP"
    assert (kim["Email consent"], kim["SMS consent"], kim["Push consent"]) == ("Y", "N", "")
    assert (kim["등급"], kim["포인트"], kim["생일쿠폰"], kim["가입일"]) == ("골드", "12000", "Y", "2024-01-02")
    lee = dict(zip(header, rows[2], strict=True))
    assert lee["Phone"] == "+1 613-555-0135"
    assert lee["메모"] == "'=1+2"  # a formula is never executed by Excel


def test_csv_round_trips_through_an_import(contacts):
    before = {c.external_id: (c.name, c.email, c.phone, c.attributes) for c in Contact.objects.all()}
    content = b"".join(exporting.csv_stream(exporting.contact_rows(Contact.objects.all())))
    Contact.objects.all().delete()
    ci = run_import(content, file_name="export.csv")
    assert (ci.new_count, ci.error_count) == (2, 0)
    after = {c.external_id: (c.name, c.email, c.phone, c.attributes) for c in Contact.objects.all()}
    before["m002"][3]["메모"] = "'=1+2"  # the formula guard stays (the apostrophe is visible text)
    assert after == before
    kim = Contact.objects.get(external_id="m001")
    assert {c.purpose: c.granted for c in Consent.objects.filter(contact=kim)} == {"email": True, "sms": False}
    assert [t.name for t in kim.tags.all()] == ["VIP"]
    # The CRM's own columns (created, orders, revenue) are not imported as attributes.
    assert "created_in_crm" not in kim.attributes


def test_xlsx_export_has_typed_cells_and_round_trips(contacts):
    out = io.BytesIO()
    assert exporting.xlsx_write(exporting.contact_rows(Contact.objects.all()), out, sheet_title="고객") == 2
    sheet = load_workbook(io.BytesIO(out.getvalue())).worksheets[0]
    assert sheet.title == "고객"
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    kim = dict(zip(header, rows[1], strict=True))
    assert kim["Name"] == "김민준"
    assert kim["포인트"] == 12000
    assert kim["생일쿠폰"] is True
    assert kim["Email consent"] is True
    Contact.objects.all().delete()
    ci = run_import(out.getvalue(), file_name="export.xlsx")
    assert (ci.new_count, ci.error_count) == (2, 0)
    assert Contact.objects.get(external_id="m001").attributes["포인트"] == 12000


def test_export_streams_in_chunks_with_a_constant_number_of_queries(contacts, monkeypatch, django_assert_num_queries):
    for n in range(3):
        ContactFactory(name=f"고객{n}")
    monkeypatch.setattr(exporting, "CHUNK", 2)
    stream = exporting.contact_rows(Contact.objects.all())
    with django_assert_num_queries(1):  # the attribute keys
        header = next(stream)
    assert header[0] == "Member ID"
    # 5 contacts in chunks of 2: 3 chunks of (contacts, consent, tags) = 9 queries, whatever the number of rows.
    with django_assert_num_queries(9):
        assert len(list(stream)) == 5


def test_xlsx_starts_a_new_sheet_at_the_row_limit(contacts, monkeypatch):
    monkeypatch.setattr(exporting, "XLSX_SHEET_ROWS", 1)
    out = io.BytesIO()
    exporting.xlsx_write(exporting.contact_rows(Contact.objects.all()), out, sheet_title="contacts")
    workbook = load_workbook(io.BytesIO(out.getvalue()))
    assert [len(list(s.iter_rows())) for s in workbook.worksheets] == [2, 2]


def test_event_export():
    event = EventFactory(name="Order Completed", properties={"상품": "캔버스 토트백", "total": 39000})
    rows = csv_rows(exporting.csv_stream(exporting.event_rows(event.__class__.objects.all())))
    assert rows[1][1:5] == ["Order Completed", "track", event.contact.external_id, event.contact.email]
    assert json.loads(rows[1][-1]) == {"상품": "캔버스 토트백", "total": 39000}


def test_contacts_export_response_types(contacts):
    response = contacts_export_response(Contact.objects.all(), "csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response.streaming
    response = contacts_export_response(Contact.objects.all(), "xlsx")
    assert response["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert response["Content-Disposition"].startswith("attachment;")
    response.close()
