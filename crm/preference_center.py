"""The preference center: a contact's own page, ``/p/<token>/``, to see and change what they receive.

The token is ``django.core.signing`` over ``{"c": contact id}`` with its own salt: it cannot be forged, altered or
reused from another kind of signed link (another salt), and it does not expire (the footer of an old message must
keep working). A forged, altered or malformed token answers 400; an unknown or erased contact 404. The page is a
CSRF-protected form; each change is written by ``consent_record_many`` (current state plus the append-only history,
source ``preference_center``) in one transaction, then the page is shown again (post/redirect/get).
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from crm.models import Consent, ConsentPurpose, Contact
from crm.services.consent import ConsentInput, consent_record_many

SALT = "loop.crm.preference_center"
SOURCE = "preference_center"

#: What the page offers, in order: (purpose, label, explanation).
CHOICES: tuple[tuple[str, object, object], ...] = (
    (ConsentPurpose.EMAIL, _("Email"), _("News and offers by email.")),
    (ConsentPurpose.SMS, _("Text messages (SMS/LMS)"), _("Text messages to your phone.")),
    (ConsentPurpose.KAKAO, _("KakaoTalk"), _("Messages from our KakaoTalk channel.")),
    (ConsentPurpose.PUSH, _("App notifications"), _("Notifications from our app on your devices.")),
    (ConsentPurpose.ADS, _("Advertising messages"), _("Offers, discounts and events on the channels above.")),
    (
        ConsentPurpose.ADS_NIGHT,
        _("Advertising at night (21:00–08:00)"),
        _("Without it, no advertising reaches you between 21:00 and 08:00."),
    ),
)


def make_token(contact_id: int) -> str:
    return signing.dumps({"c": contact_id}, salt=SALT)


def read_token(token: str) -> int:
    """The contact id a token stands for; ``signing.BadSignature`` for a forged, altered or malformed one."""
    payload = signing.loads(token, salt=SALT)
    contact_id = payload.get("c") if isinstance(payload, dict) else None
    if not isinstance(contact_id, int) or isinstance(contact_id, bool):
        raise signing.BadSignature("preference token without a contact id")
    return contact_id


def preference_center_path(contact_id: int) -> str:
    return reverse("preference_center", kwargs={"token": make_token(contact_id)})


def preference_center_url(contact_id: int) -> str:
    """The absolute link for messages (``PUBLIC_URL`` + the signed path)."""
    base = settings.LOOP_PUBLIC_URL
    if not base:
        raise ImproperlyConfigured("PUBLIC_URL must be set to build links in messages (e.g. https://crm.example.com).")
    return f"{base}{preference_center_path(contact_id)}"


class PreferencesForm(forms.Form):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for purpose, label, help_text in CHOICES:
            self.fields[purpose] = forms.BooleanField(label=label, help_text=help_text, required=False)


def _language(request: HttpRequest, contact: Contact | None) -> str:
    languages = dict(settings.LANGUAGES)
    asked = request.GET.get("lang", "")
    if asked in languages:
        return asked
    if contact is not None and contact.locale[:2].lower() in languages:
        return contact.locale[:2].lower()
    return translation.get_language() or settings.LANGUAGE_CODE


def _private(response: HttpResponse) -> HttpResponse:
    """The URL is the key: keep it out of caches, search engines and other sites' Referer headers."""
    response["Referrer-Policy"] = "same-origin"  # "no-referrer" would make form posts "Origin: null" (CSRF)
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def preference_center(request: HttpRequest, token: str) -> HttpResponse:
    try:
        contact_id = read_token(token)
    except signing.BadSignature:
        with translation.override(_language(request, None)):
            return _private(render(request, "preferences/invalid.html", status=400))
    contact = Contact.objects.filter(pk=contact_id, erased_at__isnull=True).first()
    language = _language(request, contact)
    with translation.override(language):
        if contact is None:
            return _private(render(request, "preferences/invalid.html", status=404))
        current = dict(Consent.objects.filter(contact=contact).values_list("purpose", "granted"))
        if request.method == "POST":
            form = PreferencesForm(request.POST)
            if "withdraw_all" in request.POST:
                form = PreferencesForm({})  # every box unticked
            if form.is_valid():
                now = timezone.now()
                changes = [
                    ConsentInput(contact_id=contact.pk, purpose=purpose, granted=wanted, changed_at=now, source=SOURCE)
                    for purpose, wanted in form.cleaned_data.items()
                    if current.get(purpose, False) != wanted
                ]
                with transaction.atomic():
                    consent_record_many(changes=changes)
                return _private(HttpResponseRedirect(f"{request.path}?saved={len(changes)}&lang={language}"))
        else:
            form = PreferencesForm(initial={purpose: current.get(purpose, False) for purpose, *_rest in CHOICES})
        context = {
            "form": form,
            "rows": [(form[purpose], purpose) for purpose, *_rest in CHOICES],
            "saved": request.GET.get("saved"),
            "language": language,
            "sender": settings.LOOP_SENDER_NAME,
        }
        return _private(render(request, "preferences/center.html", context))
