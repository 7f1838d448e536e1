"""The admin flow, end to end with the test client: upload, preview, confirm, errors CSV, progress, export, history."""

import csv
import io
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from openpyxl import load_workbook

from crm.models import Contact, ContactImport, ContactList, Tag
from crm.tests.factories import ContactFactory, EventFactory
from crm.tests.import_helpers import data_file

pytestmark = pytest.mark.django_db
Status = ContactImport.Status
UPLOAD = "/admin/crm/contact/import/"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture
def client(admin_client):
    admin_client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return admin_client


def upload(client, name, content=None, **fields):
    file = SimpleUploadedFile(name, content if content is not None else data_file(name), "text/csv")
    return client.post(UPLOAD, {"file": file, "tag": "", "contact_list": "", **fields})


def test_upload_preview_confirm_and_download_the_error_rows(client, admin_user):
    page = client.get(UPLOAD)
    assert page.status_code == 200
    assert b"Upload and preview" in page.content

    response = upload(client, "broken_rows.csv", tag="봄 세일", contact_list="3월 명단")
    ci = ContactImport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/crm/contact/import/{ci.pk}/"
    assert ci.status == Status.PREVIEWED
    assert ci.created_by == admin_user
    assert Contact.objects.count() == 0  # only a preview so far

    page = client.get(response["Location"])
    html = page.content.decode()
    assert "Confirm and import" in html
    assert "row 4, 휴대폰: &#x27;010-12&#x27; is not a valid phone number." in html
    assert "row 10: Duplicate of row 2 (same Phone &#x27;+821011112222&#x27;): skipped." in html
    assert 'id="import-sample"' in html
    assert "attribute &#x27;포인트&#x27; (number)" in html  # the column mapping with the inferred type

    response = client.post(f"/admin/crm/contact/import/{ci.pk}/confirm/")
    assert response.status_code == 302
    ci.refresh_from_db()
    assert ci.status == Status.COMPLETED
    assert (ci.new_count, ci.skipped_count, ci.error_count) == (3, 2, 6)
    assert set(Tag.objects.get(name="봄 세일").contacts.values_list("external_id", flat=True)) == {"b01", "b08", "b11"}
    assert ContactList.objects.get(name="3월 명단").contacts.count() == 3
    page = client.get(f"/admin/crm/contact/import/{ci.pk}/")
    assert "Imported: 3 new, 0 updated, 0 unchanged." in page.content.decode()
    assert "Confirm and import" not in page.content.decode()

    errors = client.get(f"/admin/crm/contact/import/{ci.pk}/errors.csv")
    assert errors["Content-Type"] == "text/csv; charset=utf-8"
    assert "broken_rows-errors.csv" in errors["Content-Disposition"]
    content = b"".join(errors.streaming_content)
    assert content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert rows[0][-1] == "Import error"
    assert len(rows) == 1 + 8

    # Confirming twice does nothing more.
    client.post(f"/admin/crm/contact/import/{ci.pk}/confirm/")
    assert Contact.objects.count() == 3


def test_an_unreadable_file_is_explained_and_nothing_is_imported(client):
    response = upload(client, "undecodable.csv")
    page = client.get(response["Location"])
    html = page.content.decode()
    assert "neither UTF-8 nor CP949/EUC-KR" in html
    assert "Confirm and import" not in html
    assert ContactImport.objects.get().status == Status.FAILED
    assert Contact.objects.count() == 0


def test_cancel(client):
    upload(client, "contacts_utf8.csv")
    ci = ContactImport.objects.get()
    client.post(f"/admin/crm/contact/import/{ci.pk}/cancel/")
    ci.refresh_from_db()
    assert ci.status == Status.CANCELLED
    client.post(f"/admin/crm/contact/import/{ci.pk}/confirm/")
    assert Contact.objects.count() == 0


def test_a_large_file_is_previewed_and_imported_in_the_background_with_progress(
    client, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from crm import tasks

    settings.LOOP_IMPORT_ASYNC_ROWS = 3
    queued = []
    monkeypatch.setattr(tasks.contact_import_preview_task, "delay", lambda pk: queued.append(("preview", pk)))
    monkeypatch.setattr(tasks.contact_import_apply_task, "delay", lambda pk: queued.append(("apply", pk)))
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client, "contacts_cp949.csv")
    ci = ContactImport.objects.get()
    assert queued == [("preview", ci.pk)]
    page = client.get(response["Location"]).content.decode()
    assert 'id="import-progress"' in page
    assert "crm/import_progress.js" in page
    progress = client.get(f"/admin/crm/contact/import/{ci.pk}/progress/").json()
    assert progress == {
        "status": "pending",
        "status_display": "Waiting for preview",
        "phase": "",
        "done": 0,
        "total": 6,
        "percent": 0,
        "finished": False,
    }
    tasks.contact_import_preview_task(ci.pk)
    progress = client.get(f"/admin/crm/contact/import/{ci.pk}/progress/").json()
    assert (progress["status"], progress["finished"], progress["done"]) == ("previewed", True, 6)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/admin/crm/contact/import/{ci.pk}/confirm/")
    assert queued[-1] == ("apply", ci.pk)
    progress = client.get(f"/admin/crm/contact/import/{ci.pk}/progress/").json()
    assert (progress["status"], progress["finished"]) == ("queued", False)
    tasks.contact_import_apply_task(ci.pk)
    progress = client.get(f"/admin/crm/contact/import/{ci.pk}/progress/").json()
    assert progress["status"] == "completed"
    assert progress["percent"] == 100
    assert Contact.objects.count() == 6


def test_changelist_buttons_export_of_the_filtered_list_and_actions(client):
    kim = ContactFactory(name="김민준", email="kim@example.com", phone="+821012345678", attributes={"등급": "VIP"})
    ContactFactory(name="이서연", email="lee@example.com")
    page = client.get("/admin/crm/contact/").content.decode()
    for link in ("/admin/crm/contact/import/", "/admin/crm/contact/export/csv/", "/admin/crm/contact/export/xlsx/"):
        assert link in page
    assert "/admin/crm/contactimport/" in page

    response = client.get("/admin/crm/contact/export/csv/?q=김민준")
    content = b"".join(response.streaming_content)
    assert content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert len(rows) == 2
    assert rows[1][:4] == [kim.external_id, "김민준", "kim@example.com", "010-1234-5678"]
    assert rows[0][-1] == "등급"
    assert rows[1][-1] == "VIP"

    response = client.get("/admin/crm/contact/export/xlsx/")
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content)), read_only=True).worksheets[0]
    assert len(list(sheet.iter_rows(values_only=True))) == 3

    response = client.post("/admin/crm/contact/", {"action": "export_contacts_csv", "_selected_action": [kim.pk]})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert [r[1] for r in rows[1:]] == ["김민준"]


def test_event_export_action(client):
    event = EventFactory(name="Order Completed", properties={"total": 39000, "상품": "캔버스 토트백"})
    response = client.post("/admin/crm/event/", {"action": "export_events_csv", "_selected_action": [event.pk]})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows[0][:2] == ["Occurred at", "Event"]
    assert rows[1][1] == "Order Completed"
    assert json.loads(rows[1][-1]) == {"total": 39000, "상품": "캔버스 토트백"}


def test_import_history_is_read_only(client):
    upload(client, "contacts_utf8.csv")
    ci = ContactImport.objects.get()
    page = client.get("/admin/crm/contactimport/").content.decode()
    assert "contacts_utf8.csv" in page
    assert f"/admin/crm/contact/import/{ci.pk}/" in page
    assert client.get("/admin/crm/contactimport/add/").status_code == 403
    detail = client.get(f"/admin/crm/contactimport/{ci.pk}/change/")
    assert detail.status_code == 200
    assert b'name="file_name"' not in detail.content  # shown, not editable


def test_staff_without_contact_permissions_cannot_import(client, django_user_model):
    staff = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_contact"))
    client.force_login(staff)
    assert client.get(UPLOAD).status_code == 403
    assert upload(client, "contacts_utf8.csv").status_code == 403
    assert client.get("/admin/crm/contact/export/csv/").status_code == 200
    assert ContactImport.objects.count() == 0
