"""The language switch remembers the choice on the user: the admin speaks it on any browser after login."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from crm.models import UserPreference
from crm.roles import MARKETER
from crm.tests.factories import user_with_role

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Loop-2026!"


def login(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def html_lang(client: Client) -> str:
    page = client.get(reverse("admin:index")).content.decode()
    return page.split('<html lang="', 1)[1].split('"', 1)[0]


def test_korean_by_default_and_the_choice_follows_the_user_to_another_browser():
    user_with_role(MARKETER, username="mina")
    user_with_role(MARKETER, username="joon")
    laptop = login("mina")
    assert html_lang(laptop) == "ko"

    response = laptop.post(reverse("set_language"), {"language": "en", "next": "/admin/"})
    assert response.status_code == 302
    assert UserPreference.objects.get(user__username="mina").language == "en"
    assert html_lang(laptop) == "en"

    phone = login("mina")  # a new browser: no language cookie
    assert "django_language" not in phone.cookies
    assert html_lang(phone) == "en"
    page = phone.get(reverse("admin:index")).content.decode()
    assert "Segments" in page

    assert html_lang(login("joon")) == "ko"  # another user keeps the default


def test_an_unknown_language_is_ignored_and_anonymous_switching_still_works(client):
    user_with_role(MARKETER, username="mina")
    browser = login("mina")
    browser.post(reverse("set_language"), {"language": "xx", "next": "/admin/"})
    assert not UserPreference.objects.exists()
    response = client.post(reverse("set_language"), {"language": "en", "next": "/admin/login/"})
    assert response.cookies["django_language"].value == "en"
    assert not UserPreference.objects.exists()
