"""The admin site as the product's face: Korean by default, English on request, sections, branding, translations."""

from __future__ import annotations

import ast
import gettext
import re
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles import finders
from django.test import Client, RequestFactory
from django.utils import translation

from config.admin import ADMIN_SECTIONS, FALLBACK_SECTION, group_by_section
from config.admin_base import CappedCountPaginator

PO_FILE = Path(settings.BASE_DIR) / "locale" / "ko" / "LC_MESSAGES" / "django.po"
MO_FILE = PO_FILE.with_suffix(".mo")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """The admin_user fixture hashes a password for every test: a fast hasher keeps these tests quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


SECTION_TITLES = {
    "ko": {
        "contacts": "고객",
        "segments": "세그먼트",
        "campaigns": "캠페인",
        "journeys": "여정",
        "reports": "리포트",
        "settings": "설정",
    },
    "en": {
        "contacts": "Contacts",
        "segments": "Segments",
        "campaigns": "Campaigns",
        "journeys": "Journeys",
        "reports": "Reports",
        "settings": "Settings",
    },
}


def section_keys_in_page(html: str) -> list[str]:
    """Section keys of the index's modules (not the nav sidebar's), in page order."""
    content = html.split('id="content-main"', 1)[1]
    return re.findall(r'<div class="app-([\w-]+) module', content)


def section_captions(html: str) -> list[str]:
    content = html.split('id="content-main"', 1)[1]
    return re.findall(r'<caption>\s*<a [^>]*class="section"[^>]*>([^<]+)</a>', content)


def superuser_request(admin_user):
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    return request


# --- Language ----------------------------------------------------------------------------------------------------


def test_index_is_korean_by_default(admin_client):
    response = admin_client.get("/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="ko"' in html
    assert "고객" in section_captions(html)
    assert "마케팅 워크스페이스" in html
    # Django's own admin strings come in Korean too.
    assert "로그아웃" in html


def test_section_titles_are_korean(admin_client):
    """Every section title is translated, also those whose models arrive with later features (Segments...)."""
    html = admin_client.get("/admin/").content.decode()
    shown = dict(zip(section_keys_in_page(html), section_captions(html), strict=True))

    assert shown
    for key, caption in shown.items():
        assert caption == SECTION_TITLES["ko"][key]
    with translation.override("ko"):
        titles = {key: str(title) for key, title, _models in ADMIN_SECTIONS}
    assert titles == SECTION_TITLES["ko"]
    assert titles["segments"] == "세그먼트"


def test_switching_to_english_and_back(admin_client):
    response = admin_client.post("/i18n/setlang/", {"language": "en", "next": "/admin/crm/contact/"})

    assert response.status_code == 302
    assert response["Location"] == "/admin/crm/contact/"
    html = admin_client.get("/admin/").content.decode()
    assert '<html lang="en"' in html
    assert "Contacts" in section_captions(html)
    assert "Marketing workspace" in html
    assert "고객" not in section_captions(html)

    admin_client.post("/i18n/setlang/", {"language": "ko", "next": "/admin/"})
    html = admin_client.get("/admin/").content.decode()
    assert '<html lang="ko"' in html
    assert "고객" in section_captions(html)


def test_language_switch_posts_to_set_language_with_the_current_page(admin_client):
    html = admin_client.get("/admin/crm/contact/?q=kim").content.decode()

    form = re.search(r'<form class="loop-language" action="([^"]+)" method="post">(.*?)</form>', html, re.S)
    assert form is not None
    assert form.group(1) == "/i18n/setlang/"
    body = form.group(2)
    assert 'name="csrfmiddlewaretoken"' in body
    assert '<input type="hidden" name="next" value="/admin/crm/contact/?q=kim">' in body
    assert re.search(r'name="language" value="ko"[^>]*aria-pressed="true"', body)
    assert 'value="en"' in body
    assert ">한국어</button>" in body
    assert ">English</button>" in body


def test_login_page_has_the_language_switch_and_it_works_with_csrf(db):
    client = Client(enforce_csrf_checks=True)
    response = client.get("/admin/login/?next=/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="ko"' in html
    assert "Loop CRM" in html
    form = re.search(r'<form class="loop-language" action="/i18n/setlang/" method="post">(.*?)</form>', html, re.S)
    assert form is not None
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.group(1)).group(1)
    next_url = re.search(r'name="next" value="([^"]+)"', form.group(1)).group(1)
    assert next_url == "/admin/login/?next=/admin/"

    response = client.post("/i18n/setlang/", {"csrfmiddlewaretoken": token, "language": "en", "next": next_url})

    assert response.status_code == 302
    assert response["Location"] == next_url
    html = client.get(next_url).content.decode()
    assert '<html lang="en"' in html
    assert "Username" in html


def test_accept_language_english_gets_english(admin_client):
    html = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()

    assert '<html lang="en"' in html


# --- Branding ----------------------------------------------------------------------------------------------------


def test_branding_logo_title_and_stylesheet(admin_client):
    html = admin_client.get("/admin/").content.decode()

    assert re.search(r'<div id="site-name"><a href="/admin/"><svg class="loop-logo"', html)
    assert "<span>Loop CRM</span>" in html
    assert re.search(r"<title>[^<]*\| Loop CRM</title>", html)
    assert '<link rel="stylesheet" href="/static/loop/admin.css">' in html
    assert '<link rel="icon" type="image/svg+xml" href="/static/loop/logo.svg">' in html
    assert finders.find("loop/admin.css")
    assert finders.find("loop/logo.svg")


def test_stylesheet_loads_nothing_from_outside():
    css = Path(finders.find("loop/admin.css")).read_text()

    assert "@import" not in css
    assert "url(" not in css
    assert "http" not in css


# --- Sections ----------------------------------------------------------------------------------------------------


def test_sections_appear_in_the_configured_order(admin_client):
    html = admin_client.get("/admin/").content.decode()
    configured = [key for key, _title, _models in ADMIN_SECTIONS]

    shown = section_keys_in_page(html)

    assert shown[0] == "contacts"
    assert "settings" in shown
    assert shown == [key for key in configured if key in shown]


def test_every_registered_model_is_in_exactly_one_section(admin_user):
    app_list = admin.site.get_app_list(superuser_request(admin_user))

    seen = Counter(
        (model["model"]._meta.app_label, model["model"]._meta.model_name) for app in app_list for model in app["models"]
    )
    registered = {(model._meta.app_label, model._meta.model_name) for model in admin.site._registry}

    assert set(seen) == registered
    assert all(count == 1 for count in seen.values()), seen


def test_every_crm_model_with_an_admin_is_placed_explicitly(admin_user):
    """The fallback section is for apps added later; the product's own models are placed on purpose."""
    placed = {label for _key, _title, labels in ADMIN_SECTIONS for label in labels}

    for model in admin.site._registry:
        label = f"{model._meta.app_label}.{model._meta.model_name}"
        if model._meta.app_label in {"crm", "campaigns", "journeys", "auth", "django_celery_beat"}:
            assert label in placed, f"{label} is registered but not listed in ADMIN_SECTIONS"


def test_no_model_is_listed_in_two_sections():
    labels = [label for _key, _title, models in ADMIN_SECTIONS for label in models]

    assert len(labels) == len(set(labels))
    assert FALLBACK_SECTION in {key for key, _title, _models in ADMIN_SECTIONS}


def test_unknown_models_fall_back_to_settings_and_empty_sections_are_hidden():
    apps = [
        {
            "app_label": "someapp",
            "models": [{"object_name": "Widget", "name": "Widgets", "admin_url": "/admin/someapp/widget/"}],
        },
        {
            "app_label": "crm",
            "models": [{"object_name": "Contact", "name": "Contacts", "admin_url": "/admin/crm/contact/"}],
        },
    ]

    sections = group_by_section(apps)

    assert [section["app_label"] for section in sections] == ["contacts", FALLBACK_SECTION]
    assert sections[0]["app_url"] == "/admin/crm/contact/"
    assert [model["object_name"] for model in sections[1]["models"]] == ["Widget"]


def test_an_app_index_keeps_djangos_grouping(admin_client):
    response = admin_client.get("/admin/crm/")

    assert response.status_code == 200
    assert "app-crm module" in response.content.decode()


# --- Capped count ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_capped_paginator_counts_at_most_cap_rows(django_assert_num_queries):
    from django.contrib.auth.models import Group

    Group.objects.bulk_create([Group(name=f"g{i}") for i in range(12)])
    queryset = Group.objects.filter(name__startswith="g").order_by("name")  # not the role groups

    paginator = CappedCountPaginator(queryset, 5, cap=10)
    with django_assert_num_queries(1) as captured:
        assert paginator.count == 10
    assert "LIMIT 11" in captured.captured_queries[0]["sql"]
    assert paginator.count_is_capped
    assert paginator.num_pages == 2

    exact = CappedCountPaginator(queryset, 5, cap=100)
    assert exact.count == 12
    assert not exact.count_is_capped
    assert CappedCountPaginator([1, 2, 3], 2, cap=2).count == 2


# --- Translations ------------------------------------------------------------------------------------------------


def read_po(path: Path) -> list[dict]:
    """A tiny .po reader: entries with their flags, msgid, msgid_plural and msgstr(s). Obsolete entries skipped."""
    entries: list[dict] = []
    entry: dict = {}
    field = None

    def finish():
        if "msgid" in entry:
            entries.append(dict(entry))
        entry.clear()

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            finish()
            field = None
            continue
        if line.startswith("#~"):
            continue
        if line.startswith("#,"):
            entry.setdefault("flags", set()).update(flag.strip() for flag in line[2:].split(","))
            continue
        if line.startswith("#"):
            continue
        match = re.match(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)\s+(".*")$', line)
        if match:
            if match.group(1) == "msgid" and "msgid" in entry:
                finish()
            field = match.group(1)
            entry[field] = ast.literal_eval(match.group(2))
        elif line.startswith('"') and field:
            entry[field] += ast.literal_eval(line)
        else:
            raise AssertionError(f"unexpected line in {path.name}: {raw!r}")
    finish()
    return entries


def test_po_file_has_every_string_translated_and_nothing_fuzzy():
    entries = [entry for entry in read_po(PO_FILE) if entry["msgid"]]

    assert len(entries) > 100
    fuzzy = [entry["msgid"] for entry in entries if "fuzzy" in entry.get("flags", ())]
    untranslated = [
        entry["msgid"]
        for entry in entries
        if not all(value.strip() for key, value in entry.items() if key.startswith("msgstr"))
        or not any(key.startswith("msgstr") for key in entry)
    ]
    assert fuzzy == []
    assert untranslated == []


def test_po_header_is_final():
    header = next(entry for entry in read_po(PO_FILE) if entry["msgid"] == "")

    assert "fuzzy" not in header.get("flags", ())
    assert "Language: ko\n" in header["msgstr"]
    assert "Plural-Forms: nplurals=1; plural=0;" in header["msgstr"]


def test_po_placeholders_are_kept():
    for entry in read_po(PO_FILE):
        if not entry["msgid"]:
            continue
        wanted = sorted(re.findall(r"%\(\w+\)[sd]|\{\{ ?\w+ ?\}\}", entry["msgid"]))
        for key, value in entry.items():
            if key.startswith("msgstr"):
                assert sorted(re.findall(r"%\(\w+\)[sd]|\{\{ ?\w+ ?\}\}", value)) == wanted, entry["msgid"]


def test_compiled_catalogue_matches_the_po_file():
    """The .mo is git-ignored and built by `make` (compilemessages); a stale one means untranslated pages."""
    assert MO_FILE.exists(), "locale/ko/LC_MESSAGES/django.mo is missing: run `make compilemessages`"
    with MO_FILE.open("rb") as handle:
        catalogue = gettext.GNUTranslations(handle)
    stale = []
    for entry in read_po(PO_FILE):
        if not entry["msgid"] or "msgid_plural" in entry:
            continue
        key = entry["msgid"] if "msgctxt" not in entry else f"{entry['msgctxt']}\x04{entry['msgid']}"
        if catalogue._catalog.get(key) != entry["msgstr"]:
            stale.append(entry["msgid"])
    assert stale == [], "django.mo is older than django.po: run `make compilemessages`"
