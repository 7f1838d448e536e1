"""``manage.py import_contacts``: dry run, import, progress on stderr, summary and row errors on stdout."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import translation

from crm.models import Contact, ContactImport, ContactList, Tag
from crm.tests.import_helpers import DATA

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with translation.override("en"):
        yield


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_contacts", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_dry_run_previews_and_imports_nothing():
    out, err = run(str(DATA / "broken_rows.csv"), "--dry-run")
    assert "Preview: 11 rows (csv, utf-8): 3 new, 0 updated, 0 unchanged, 2 skipped, 6 with errors." in out
    assert "  row 4, 휴대폰: '010-12' is not a valid phone number." in out
    assert "Dry run: nothing imported." in out
    assert "preview [" in err
    assert "100% 11/11 rows" in err
    assert Contact.objects.count() == 0
    assert ContactImport.objects.get().status == ContactImport.Status.PREVIEWED


def test_import_with_tag_list_and_errors_csv(tmp_path, admin_user):
    errors = tmp_path / "errors.csv"
    out, err = run(
        str(DATA / "contacts_cp949.csv"),
        "--tag",
        "봄 세일",
        "--list",
        "3월 명단",
        "--user",
        admin_user.username,
        "--errors-csv",
        str(errors),
    )
    assert "Imported: 6 rows (csv, cp949): 6 new, 0 updated, 0 unchanged, 0 skipped, 0 with errors." in out
    assert "import  [" in err
    assert Contact.objects.count() == 6
    assert Tag.objects.get(name="봄 세일").contacts.count() == 6
    assert ContactList.objects.get(name="3월 명단").contacts.count() == 6
    assert ContactImport.objects.get().created_by == admin_user
    assert not errors.exists()  # no error rows

    out, _err = run(str(DATA / "broken_rows.csv"), "--errors-csv", str(errors), "--max-errors", "2", "--no-progress")
    assert "… and 6 more" in out
    assert errors.read_bytes().startswith(b"\xef\xbb\xbf")


def test_an_unreadable_file_fails_with_the_reason():
    with pytest.raises(CommandError, match="neither UTF-8 nor CP949/EUC-KR"):
        run(str(DATA / "undecodable.csv"))
    with pytest.raises(CommandError, match="No such file"):
        run(str(DATA / "missing.csv"))
    assert Contact.objects.count() == 0
