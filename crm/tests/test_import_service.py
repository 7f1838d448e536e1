"""Contact import service: exact outcomes for real files (CP949, BOM, XLSX, Shopify, Mailchimp, broken rows)."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone, translation

from crm.importing.plan import read_plan
from crm.models import Consent, ConsentChange, ConsentPurpose, Contact, ContactImport, ContactList, Tag
from crm.services.consent import ConsentInput, consent_record_many
from crm.services.imports import (
    ImportStateError,
    contact_import_apply,
    contact_import_cancel,
    contact_import_confirm,
    contact_import_error_rows,
)
from crm.tests.factories import ContactFactory, ContactListFactory
from crm.tests.import_helpers import csv_bytes, data_file, preview, run_import

Status = ContactImport.Status
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_and_language(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with translation.override("en"):
        yield


def contact(external_id):
    return Contact.objects.get(external_id=external_id)


def consents_of(c):
    return {k.purpose: k.granted for k in Consent.objects.filter(contact=c)}


def counts(ci):
    return {
        "new": ci.new_count,
        "updated": ci.updated_count,
        "unchanged": ci.unchanged_count,
        "skipped": ci.skipped_count,
        "errors": ci.error_count,
    }


def errors_of(ci):
    return [(e["row"], e["column"], e["code"], e["message"]) for e in ci.errors]


EXPECTED_CONTACTS = {
    # external_id: (name, email, phone, attributes, tags, general marketing consent)
    "m001": (
        "김민준",
        "MinJun.Kim@example.com",
        "+821012345678",
        {
            "birth_date": "1990-03-05",
            "gender": "male",
            "등급": "GOLD",
            "포인트": 12000,
            "가입일": "2024-01-02",
            "vip여부": True,
        },
        {"VIP", "신규"},
        True,
    ),
    "m002": (
        "이서연",
        "seoyeon@example.co.kr",
        "+821023456789",
        {
            "birth_date": "1992-07-14",
            "gender": "female",
            "등급": "SILVER",
            "포인트": 500,
            "가입일": "2024-02-03",
            "vip여부": False,
        },
        {"신규"},
        True,
    ),
    "m003": (
        "박지훈",
        "jihoon@example.com",
        "+821034567890",
        {
            "birth_date": "1988-11-02",
            "gender": "male",
            "등급": "BRONZE",
            "포인트": 0,
            "가입일": "2024-03-04",
            "vip여부": False,
        },
        set(),
        False,
    ),
    "m004": (
        "최수아",
        "",
        "+821045678901",
        {
            "birth_date": "2001-05-09",
            "gender": "female",
            "등급": "GOLD",
            "포인트": 7500,
            "가입일": "2024-04-05",
            "vip여부": True,
        },
        {"VIP"},
        True,
    ),
    "m005": (
        "정하준",
        "hajun@example.com",
        "",
        {"등급": "일반", "포인트": 30, "가입일": "2024-05-06", "vip여부": False},
        set(),
        False,
    ),
    "m006": (
        "강지우",
        "jiwoo@example.com",
        "+821056789012",
        {
            "birth_date": "1995-08-17",
            "gender": "female",
            "등급": "SILVER",
            "포인트": 1250,
            "가입일": "2024-06-07",
            "vip여부": True,
        },
        {"신규"},
        True,
    ),
}


@pytest.mark.parametrize(
    "name",
    ["contacts_utf8.csv", "contacts_utf8_bom.csv", "contacts_cp949.csv", "contacts_utf16.txt", "contacts.xlsx"],
)
def test_every_format_and_encoding_imports_the_same_contacts(name):
    ci = run_import(name, file_name="upload.csv")  # the name never decides the format or encoding
    assert ci.status == Status.COMPLETED, ci.failure
    assert counts(ci) == {"new": 6, "updated": 0, "unchanged": 0, "skipped": 0, "errors": 0}
    assert ci.total_rows == ci.processed_rows == 6
    assert Contact.objects.count() == 6
    for ext, (name_, email, phone, attributes, tags, consent) in EXPECTED_CONTACTS.items():
        c = contact(ext)
        assert (c.name, c.email, c.phone) == (name_, email, phone), ext
        assert c.attributes == attributes, ext
        assert {t.name for t in c.tags.all()} == tags, ext
        assert consents_of(c) == {"ads": consent, "email": consent, "sms": consent}, ext


def test_column_mapping_is_recorded_with_inferred_types():
    ci = run_import("contacts_cp949.csv")
    assert ci.encoding == "cp949"
    assert ci.file_format == "csv"
    columns = {c["header"]: (c["field"], c["key"], c["type"]) for c in ci.column_mapping["columns"]}
    assert columns == {
        "회원ID": ("external_id", "", ""),
        "이름": ("name", "", ""),
        "이메일": ("email", "", ""),
        "휴대폰": ("phone", "", ""),
        "마케팅 수신 동의": ("consent", "", ""),
        "생년월일": ("birth_date", "", ""),
        "성별": ("gender", "", ""),
        "태그": ("tags", "", ""),
        "등급": ("attribute", "등급", "text"),
        "포인트": ("attribute", "포인트", "number"),
        "가입일": ("attribute", "가입일", "date"),
        "VIP여부": ("attribute", "vip여부", "boolean"),
    }


def test_consent_is_recorded_with_the_import_as_source_and_time():
    ci = run_import("contacts_utf8.csv")
    source = f"import:{ci.pk}"
    history = ConsentChange.objects.filter(contact=contact("m003"))
    assert {(h.purpose, h.granted, h.source, h.changed_at) for h in history} == {
        (ConsentPurpose.ADS, False, source, ci.created_at),
        (ConsentPurpose.EMAIL, False, source, ci.created_at),
        (ConsentPurpose.SMS, False, source, ci.created_at),
    }
    assert Consent.objects.filter(source=source, changed_at=ci.created_at).count() == 18
    assert ConsentChange.objects.count() == 18


def test_importing_the_same_file_again_changes_nothing():
    run_import("contacts_utf8.csv")
    again = run_import("contacts_cp949.csv")
    assert counts(again) == {"new": 0, "updated": 0, "unchanged": 6, "skipped": 0, "errors": 0}
    assert ConsentChange.objects.count() == 18  # no new history


def test_matching_order_is_external_id_then_email_then_phone():
    a = ContactFactory(external_id="A1", email="a@example.com", phone="+821011110000", name="원래")
    b = ContactFactory(external_id=None, email="b@example.com", phone="", name="이메일만")
    c = ContactFactory(external_id=None, email="", phone="+821022220000", name="전화만")
    # The member ID wins over an email and a phone that belong to other contacts.
    ci = run_import(csv_bytes("회원ID,이메일,휴대폰,이름", "A1,b@example.com,010-2222-0000,하나"))
    assert counts(ci)["updated"] == 1
    a.refresh_from_db()
    assert (a.name, a.email, a.phone) == ("하나", "b@example.com", "+821022220000")
    # An unknown member ID: the email decides before the phone (b and a share the email now: the older, b... is
    # newer than a, so the lowest id, a, would be found; use a fresh email for b to test the order).
    b.email = "b2@example.com"
    b.save()
    ci = run_import(csv_bytes("회원ID,이메일,휴대폰,이름", "B2,b2@example.com,010-1111-0000,둘"))
    assert counts(ci)["updated"] == 1
    b.refresh_from_db()
    assert (b.external_id, b.name, b.phone) == ("B2", "둘", "+821011110000")
    # Only the phone, in another format than stored.
    c.phone = "+821033330000"
    c.save()
    ci = run_import(csv_bytes("회원ID,휴대폰,이름", "C3,+82 10 3333 0000,셋"))
    assert counts(ci)["updated"] == 1
    c.refresh_from_db()
    assert (c.external_id, c.name) == ("C3", "셋")
    assert Contact.objects.count() == 3


def test_email_of_another_member_is_an_error_not_a_merge():
    ContactFactory(external_id="OTHER", email="taken@example.com")
    ci = run_import(csv_bytes("회원ID,이메일,이름", "NEW1,taken@example.com,김민준"))
    assert counts(ci)["errors"] == 1
    assert errors_of(ci) == [
        (
            2,
            "",
            "conflict",
            "The Email 'taken@example.com' belongs to another contact (member ID 'OTHER', not 'NEW1'): not "
            "imported, to avoid merging two people. Correct the row or the contact.",
        )
    ]
    assert not Contact.objects.filter(external_id="NEW1").exists()


def test_phone_in_any_format_matches_the_stored_e164_number():
    existing = ContactFactory(external_id=None, email="", phone="+821012345678", name="")
    ci = run_import(csv_bytes("휴대폰,이름", "010-1234-5678,김민준"))
    assert counts(ci)["updated"] == 1
    existing.refresh_from_db()
    assert existing.name == "김민준"


def test_broken_rows_are_reported_by_row_and_the_valid_rows_import():
    ci = run_import("broken_rows.csv")
    assert ci.status == Status.COMPLETED
    assert counts(ci) == {"new": 3, "updated": 0, "unchanged": 0, "skipped": 2, "errors": 6}
    assert errors_of(ci) == [
        (3, "이메일", "email", "'seoyeon@example' is not a valid email address."),
        (4, "휴대폰", "phone", "'010-12' is not a valid phone number."),
        (
            5,
            "수신동의",
            "consent",
            "'모름' is not a yes/no value (use Y/N, 예/아니오, 동의/거부, TRUE/FALSE, yes/no or 1/0).",
        ),
        (6, "생년월일", "date", "'1994-13-40' is not a date (use 2024-03-05, 2024.03.05 or 2024년 3월 5일)."),
        (
            7,
            "",
            "no_identifier",
            "The row has no member ID, email or phone: a contact needs at least one of them.",
        ),
        (
            8,
            "",
            "columns",
            "The row has 8 values but the header has 7 columns (a comma inside a value that is not in quotes?).",
        ),
        (10, "", "duplicate", "Duplicate of row 2 (same Phone '+821011112222'): skipped."),
        (11, "", "duplicate", "Duplicate of row 2 (same Member ID 'b01'): skipped."),
    ]
    assert set(Contact.objects.values_list("external_id", flat=True)) == {"b01", "b08", "b11"}


def test_in_file_duplicates_are_reported_not_double_created():
    content = csv_bytes(
        "이메일,휴대폰,이름",
        "kim@example.com,010-1234-5678,김민준",
        "lee@example.com,+82 10 1234 5678,이서연",  # same phone, written differently
        "kim@example.com,,김민준2",  # same email
    )
    ci = run_import(content)
    assert counts(ci) == {"new": 1, "updated": 0, "unchanged": 0, "skipped": 2, "errors": 0}
    assert [(e["row"], e["kind"], e["message"]) for e in ci.errors] == [
        (3, "skipped", "Duplicate of row 2 (same Phone '+821012345678'): skipped."),
        (4, "skipped", "Duplicate of row 2 (same Email 'kim@example.com'): skipped."),
    ]
    assert Contact.objects.count() == 1


def test_two_rows_matching_the_same_existing_contact():
    ContactFactory(external_id="K1", email="k@example.com", phone="+821099990000")
    ci = run_import(csv_bytes("회원ID,휴대폰,이름", "K1,,첫째", ",010-9999-0000,둘째"))
    assert counts(ci) == {"new": 0, "updated": 1, "unchanged": 0, "skipped": 1, "errors": 0}
    assert ci.errors[0]["row"] == 3
    assert ci.errors[0]["code"] == "duplicate"
    assert contact("K1").name == "첫째"


def test_empty_cells_keep_existing_values_by_default():
    ContactFactory(external_id="E1", email="e1@example.com", name="김민준", attributes={"등급": "GOLD", "x": 1})
    ci = run_import(csv_bytes("회원ID,이메일,이름,등급", "E1,,,"))
    assert counts(ci)["unchanged"] == 1
    c = contact("E1")
    assert (c.email, c.name, c.attributes) == ("e1@example.com", "김민준", {"등급": "GOLD", "x": 1})


def test_empty_cells_clear_values_with_overwrite_empty():
    ContactFactory(external_id="E1", email="e1@example.com", name="김민준", attributes={"등급": "GOLD", "x": 1})
    ci = run_import(csv_bytes("회원ID,이메일,이름,등급", "E1,,,"), overwrite_empty=True)
    assert counts(ci)["updated"] == 1
    c = contact("E1")
    assert (c.email, c.name, c.attributes) == ("", "", {"x": 1})  # only the file's columns are cleared


def test_confirm_applies_exactly_the_preview():
    existing = ContactFactory(external_id="m001", name="옛이름", attributes={"등급": "SILVER"})
    ci = preview("contacts_utf8.csv")
    assert counts(ci) == {"new": 5, "updated": 1, "unchanged": 0, "skipped": 0, "errors": 0}
    sample = {s["row"]: s for s in ci.preview["sample"]}
    assert sample[2]["action"] == "update"
    assert ["Name", "옛이름", "김민준"] in sample[2]["changes"]
    assert ["등급", "SILVER", "GOLD"] in sample[2]["changes"]
    assert Contact.objects.count() == 1  # a preview writes no contact
    ci = contact_import_apply(contact_import=ci)
    assert ci.status == Status.COMPLETED
    assert counts(ci) == {"new": 5, "updated": 1, "unchanged": 0, "skipped": 0, "errors": 0}
    existing.refresh_from_db()
    assert existing.name == "김민준"
    assert not ci.plan_file  # the plan is removed once applied


def test_a_contact_changed_since_the_preview_means_nothing_is_applied_and_the_preview_is_recomputed():
    existing = ContactFactory(external_id="m002", name="이서연", email="seoyeon@example.co.kr", phone="")
    ci = preview("contacts_utf8.csv")
    assert counts(ci)["updated"] == 1
    # Someone edits the contact between the preview and the confirmation.
    Contact.objects.filter(pk=existing.pk).update(phone="+821099998888")
    ci = contact_import_apply(contact_import=ci)
    assert ci.status == Status.PREVIEWED
    assert (
        "Nothing was imported: 1 row would now do something else than the preview showed (row 3)"
        in (ci.preview["notice"])
    )
    assert Contact.objects.count() == 1  # nothing applied, not even the new contacts
    existing.refresh_from_db()
    assert existing.phone == "+821099998888"
    ci = contact_import_confirm(contact_import=ci)  # the marketer checks the new preview and confirms
    assert ci.status == Status.COMPLETED
    assert Contact.objects.count() == 6
    existing.refresh_from_db()
    assert existing.phone == "+821023456789"


def test_a_contact_created_since_the_preview_is_not_duplicated():
    ci = preview(csv_bytes("이메일,이름", "new@example.com,김민준"))
    assert counts(ci)["new"] == 1
    ContactFactory(external_id="API-1", email="new@example.com", name="")
    ci = contact_import_apply(contact_import=ci)
    assert ci.status == Status.PREVIEWED
    assert counts(ci) == {"new": 0, "updated": 1, "unchanged": 0, "skipped": 0, "errors": 0}
    assert Contact.objects.count() == 1


def test_consent_withdrawn_after_the_upload_is_never_granted_again():
    c = ContactFactory(external_id="m001")
    ci = preview("contacts_utf8.csv")
    # The contact unsubscribes (e.g. with the link in an email) after the file was uploaded.
    consent_record_many(
        changes=[ConsentInput(c.pk, "email", False, timezone.now() + timedelta(seconds=1), "unsubscribe_link")]
    )
    ci = contact_import_apply(contact_import=ci)
    if ci.status == Status.PREVIEWED:  # the preview saw "grant email": recomputed, then confirmed again
        ci = contact_import_confirm(contact_import=ci)
    assert ci.status == Status.COMPLETED
    assert consents_of(c) == {"email": False, "ads": True, "sms": True}
    assert Consent.objects.get(contact=c, purpose="email").source == "unsubscribe_link"


def test_error_rows_csv_has_the_original_columns_and_can_be_fixed_and_imported_again():
    ci = run_import("broken_rows.csv")
    content = b"".join(contact_import_error_rows(contact_import=ci))
    assert content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert rows[0] == ["회원ID", "이름", "이메일", "휴대폰", "수신동의", "생년월일", "포인트", "Import error"]
    assert [r[0] for r in rows[1:]] == ["b02", "b03", "b04", "b05", "", "b07", "b09", "b01"]
    assert rows[2][:7] == ["b03", "박지훈", "jihoon@example.com", "010-12", "N", "1992-03-03", "300"]
    assert rows[2][7] == "휴대폰: '010-12' is not a valid phone number."
    assert rows[6][7:] == [
        "The row has 8 values but the header has 7 columns (a comma inside a value that is not in quotes?).",
        "extra",
    ]

    # The marketer fixes the file in Excel and imports it again (error column included).
    fixed = {
        "b02": {2: "seoyeon@example.com"},
        "b03": {3: "010-3333-4444"},
        "b04": {4: "N"},
        "b05": {5: "1994-12-30"},
        "": {0: "b06", 2: "jiwoo@example.com"},
    }
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(rows[0])
    for row in rows[1:]:
        if row[0] == "b07":
            row = [*row[:7], row[7]]  # drop the stray value
        for index, value in fixed.get(row[0], {}).items():
            row[index] = value
        if row[0] in ("b09", "b01"):
            continue  # the duplicates are dropped
        writer.writerow(row)
    again = run_import(out.getvalue().encode("utf-8-sig"), file_name="fixed.csv")
    assert counts(again) == {"new": 6, "updated": 0, "unchanged": 0, "skipped": 0, "errors": 0}
    assert "import_error" not in contact("b03").attributes  # the error column is ignored
    assert contact("b03").phone == "+821033334444"
    assert Contact.objects.count() == 9


def test_undecodable_file_imports_nothing():
    ci = preview("undecodable.csv")
    assert ci.status == Status.FAILED
    assert "neither UTF-8 nor CP949/EUC-KR" in ci.failure
    assert ci.file_name == "undecodable.csv"
    assert Contact.objects.count() == 0
    with pytest.raises(ImportStateError):
        contact_import_confirm(contact_import=ci)


def test_shopify_customer_export():
    ci = run_import("shopify_customers.csv")
    assert counts(ci) == {"new": 3, "updated": 0, "unchanged": 0, "skipped": 0, "errors": 0}
    kim = contact("7212345678901")
    assert (kim.name, kim.email, kim.phone) == ("김민준", "minjun@example.com", "+821012345678")
    assert consents_of(kim) == {"email": True, "sms": False}
    assert {t.name for t in kim.tags.all()} == {"VIP", "재구매"}
    assert kim.attributes["total_spent"] == 125000.0
    assert kim.attributes["total_orders"] == 3
    assert kim.attributes["default_address_zip"] == "06236"
    assert kim.attributes["default_address_phone"] == "'+82212345678"
    jane = contact("7212345678902")
    assert (jane.name, jane.email, jane.phone) == ("Jane Doe", "JANE.DOE@example.com", "+16135550135")
    assert consents_of(jane) == {"email": False, "sms": True}
    assert jane.attributes["tax_exempt"] is True
    assert kim.attributes["tax_exempt"] is False
    lee = contact("7212345678903")
    assert lee.attributes["default_address_zip"] == "04524"  # a postal code keeps its leading zero
    assert consents_of(lee) == {"email": True}  # an empty consent cell records nothing


def test_mailchimp_audience_exports():
    ci = run_import("mailchimp_subscribed.csv")
    assert counts(ci) == {"new": 2, "updated": 0, "unchanged": 0, "skipped": 0, "errors": 0}
    park = Contact.objects.get(email="jihoon@example.com")
    assert (park.name, park.phone, park.time_zone) == ("박지훈", "+821034567890", "Asia/Seoul")
    assert park.attributes["birth_date"] == "--11-02"
    assert park.attributes["member_rating"] == 4
    assert park.attributes["optin_time"] == "2023-04-01T10:22:33+09:00"
    assert park.attributes["latitude"] == 37.5
    assert park.attributes["leid"] == 123456789
    assert {t.name for t in park.tags.all()} == {"VIP", "뉴스레터"}
    assert consents_of(park) == {}  # a subscribed export says nothing about consent
    unsub = run_import("mailchimp_unsubscribed.csv")
    assert counts(unsub)["updated"] == 1
    assert consents_of(Contact.objects.get(email="sua@example.com")) == {"email": False}


def test_import_tag_and_static_list_apply_to_every_imported_row(admin_user):
    segment_list = ContactListFactory(name="3월 명단")
    ci = run_import("broken_rows.csv", tag="봄 세일", list="3월 명단", user=admin_user)
    assert ci.created_by == admin_user
    assert ci.tag.name == "봄 세일"
    assert ci.contact_list == segment_list
    imported = set(Contact.objects.filter(external_id__startswith="b").values_list("pk", flat=True))
    assert len(imported) == 3
    assert set(Tag.objects.get(name="봄 세일").contacts.values_list("pk", flat=True)) == imported
    assert set(segment_list.contacts.values_list("pk", flat=True)) == imported
    # Importing the same file again: every row unchanged, still in the list (and a new list is created by name).
    again = run_import("broken_rows.csv", list="4월 명단")
    assert counts(again)["unchanged"] == 3
    assert set(ContactList.objects.get(name="4월 명단").contacts.values_list("pk", flat=True)) == imported


def test_plan_is_stored_with_the_import():
    ci = preview("contacts_utf8.csv")
    with ci.plan_file.open("rb") as stream:
        header, entries = read_plan(stream)
        entries = list(entries)
    assert header["options"] == {"overwrite_empty": False, "tag": "", "list": ""}
    assert [(e["row"]["r"], e["a"]) for e in entries] == [(n, "new") for n in (2, 3, 4, 5, 7, 8)]


def test_a_tampered_plan_is_refused():
    ci = preview("contacts_utf8.csv")
    with open(ci.plan_file.path, "ab") as stream:
        stream.write(b"x")
    ci = contact_import_apply(contact_import=ci)
    assert ci.status == Status.FAILED
    assert "changed on disk" in ci.failure
    assert Contact.objects.count() == 0


def test_cancelled_import_is_not_applied():
    ci = preview("contacts_utf8.csv")
    ci = contact_import_cancel(contact_import=ci)
    assert ci.status == Status.CANCELLED
    ci = contact_import_apply(contact_import=ci)
    assert ci.status == Status.CANCELLED
    assert Contact.objects.count() == 0


def test_large_files_are_previewed_and_applied_by_tasks(settings, django_capture_on_commit_callbacks, monkeypatch):
    from crm import tasks
    from crm.services.imports import contact_import_create

    settings.LOOP_IMPORT_ASYNC_ROWS = 3
    queued = []
    monkeypatch.setattr(tasks.contact_import_preview_task, "delay", lambda pk: queued.append(("preview", pk)))
    monkeypatch.setattr(tasks.contact_import_apply_task, "delay", lambda pk: queued.append(("apply", pk)))
    with django_capture_on_commit_callbacks(execute=True):
        ci = contact_import_create(
            file=io.BytesIO(data_file("contacts_utf8.csv")), file_name="contacts.csv", options={}
        )
    assert ci.status == Status.PENDING
    assert ci.total_rows == 6
    assert queued == [("preview", ci.pk)]
    tasks.contact_import_preview_task(ci.pk)
    tasks.contact_import_preview_task(ci.pk)  # a redelivered task plans nothing twice
    ci.refresh_from_db()
    assert ci.status == Status.PREVIEWED
    assert counts(ci)["new"] == 6
    with django_capture_on_commit_callbacks(execute=True):
        ci = contact_import_confirm(contact_import=ci)
    assert ci.status == Status.QUEUED
    assert queued[-1] == ("apply", ci.pk)
    tasks.contact_import_apply_task(ci.pk)
    tasks.contact_import_apply_task(ci.pk)  # idempotent
    ci.refresh_from_db()
    assert ci.status == Status.COMPLETED
    assert Contact.objects.count() == 6
    assert ConsentChange.objects.count() == 18


def test_django_import_export_resource_maps_the_same_headers():
    import tablib

    from crm.resources import ContactResource

    dataset = tablib.Dataset().load(data_file("contacts_utf8.csv").decode(), format="csv")
    dataset = tablib.Dataset(*[r for r in dataset if any(r)], headers=dataset.headers)  # without the blank row
    result = ContactResource().import_data(dataset)
    assert not result.has_errors()
    assert result.totals["new"] == 6
    kim = contact("m001")
    assert (kim.name, kim.email, kim.phone) == ("김민준", "MinJun.Kim@example.com", "+821012345678")


def test_existing_attributes_are_kept_exactly_when_a_contact_is_updated():
    big = 2**70  # beyond 64 bits: must not become a float on the way through the import
    ContactFactory(external_id="X1", attributes={"big": big, "nested": {"a": [1, 2]}, "등급": "SILVER"})
    ci = run_import(csv_bytes("회원ID,등급", "X1,GOLD"))
    assert ci.updated_count == 1
    assert contact("X1").attributes == {"big": big, "nested": {"a": [1, 2]}, "등급": "GOLD"}


def test_rows_matching_a_contact_an_earlier_batch_changed_are_decided_as_in_the_preview(monkeypatch):
    """The preview decides every row against the contacts as they were before the import; the apply writes batch by
    batch (on PostgreSQL the next batch is read while the previous one is written). Rows of a later batch that match
    a contact an earlier batch changed (its email moved, it got a member ID) keep the preview's decision."""
    from crm.importing import plan

    monkeypatch.setattr(plan, "BATCH_SIZE", 2)
    moved = ContactFactory(external_id="C1", email="old@example.com", phone="", name="김민준")
    named = ContactFactory(external_id=None, email="c2@example.com", phone="+821022220000", name="이서연")
    content = csv_bytes(
        "회원ID,이메일,휴대폰,이름",
        "C1,new@example.com,,김민준",  # batch 1: moves C1's email
        "E2,c2@example.com,,이서연",  # batch 1: gives the second contact a member ID
        "N1,n1@example.com,,박지훈",  # batch 2
        "N2,n2@example.com,,최수아",  # batch 2
        ",old@example.com,,김민준",  # batch 3: C1's old email: a duplicate of row 2, as the preview saw it
        "X9,old@example.com,,김민준",  # batch 3: another member ID with C1's old email: a conflict
        "E3,,010-2222-0000,이서연",  # batch 3: the second contact's phone: a duplicate (it had no member ID)
    )
    ci = preview(content)
    assert counts(ci) == {"new": 2, "updated": 2, "unchanged": 0, "skipped": 2, "errors": 1}
    assert [(e["row"], e["code"]) for e in ci.errors] == [(6, "duplicate"), (7, "conflict"), (8, "duplicate")]
    ci = contact_import_apply(contact_import=ci)
    assert ci.status == Status.COMPLETED, ci.preview.get("notice")
    assert counts(ci) == {"new": 2, "updated": 2, "unchanged": 0, "skipped": 2, "errors": 1}
    moved.refresh_from_db()
    named.refresh_from_db()
    assert (moved.email, named.external_id) == ("new@example.com", "E2")
    assert Contact.objects.count() == 4


def test_statement_queue_runs_jobs_in_order_and_stops_after_a_failure():
    from django.db import connection

    from crm.db import StatementQueue

    def query(sql, params=()):
        def job(cursor):
            cursor.execute(sql, params)
            return cursor.fetchone()

        return job

    contact = ContactFactory(name="before")
    with StatementQueue() as queue:
        assert queue.threaded == (connection.vendor == "postgresql")  # a thread on PostgreSQL, at once on SQLite
        queue.submit(
            lambda cursor: cursor.execute("UPDATE crm_contact SET name = 'queued' WHERE id = %s", [contact.pk])
        )
        seen = queue.submit(query("SELECT name FROM crm_contact WHERE id = %s", [contact.pk]))
        failing = queue.submit(query("SELECT * FROM no_such_table"))
        after = queue.submit(query("SELECT 1"))
        assert seen.result() == ("queued",)  # in order, in the caller's transaction
        with pytest.raises(Exception, match="no_such_table") as first:
            failing.result()
        with pytest.raises(Exception, match="no_such_table") as second:  # not run: it carries the first failure
            after.result()
        assert second.value is first.value
        with pytest.raises(Exception, match="no_such_table"):
            queue.drain()
