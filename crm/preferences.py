"""Per-user language: the switch at the top of the admin remembers the choice on the user, not just the browser.

- ``set_language`` (mounted at ``/i18n/setlang/``) is Django's view, plus: for a logged-in user the language is
  saved in ``UserPreference`` and the session.
- On login the saved language is put in the session (``user_logged_in``), and ``UserLanguageMiddleware`` (after
  ``AuthenticationMiddleware``) activates it for every request of that session, so the admin speaks the user's
  language on any browser. Without a saved choice: the language cookie, the browser's Accept-Language, then
  ``LANGUAGE_CODE`` (Korean).
"""

from __future__ import annotations

from django.conf import settings
from django.utils import translation
from django.views.i18n import set_language as django_set_language

from crm.models import UserPreference

SESSION_KEY = "loop_language"


def _valid(code: str | None) -> bool:
    return bool(code) and code in dict(settings.LANGUAGES)


def set_language(request):
    response = django_set_language(request)
    code = request.POST.get("language")
    user = getattr(request, "user", None)
    if request.method == "POST" and _valid(code) and user is not None and user.is_authenticated:
        UserPreference.objects.update_or_create(user=user, defaults={"language": code})
        request.session[SESSION_KEY] = code
    return response


def on_user_logged_in(sender, request, user, **kwargs) -> None:
    code = UserPreference.objects.filter(user=user).values_list("language", flat=True).first()
    if request is not None and hasattr(request, "session") and _valid(code):
        request.session[SESSION_KEY] = code


class UserLanguageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        session = getattr(request, "session", None)
        code = session.get(SESSION_KEY) if session is not None else None
        user = getattr(request, "user", None)
        if _valid(code) and user is not None and user.is_authenticated:
            translation.activate(code)
            request.LANGUAGE_CODE = code
        response = self.get_response(request)
        if _valid(code) and user is not None and user.is_authenticated:
            response.headers.setdefault("Content-Language", code)
        return response
