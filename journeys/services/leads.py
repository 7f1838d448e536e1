"""Lead form submissions: Typeform webhooks, Google Forms (an Apps Script ``UrlFetchApp`` POST) and plain HTML forms.

- **Typeform** (https://www.typeform.com/developers/webhooks/): JSON with ``form_response.answers`` (each with a
  ``type``, its value under that type's key, and ``field.ref``) and ``form_response.hidden``. With a secret, the
  ``Typeform-Signature`` header is ``sha256=`` + base64 of the HMAC-SHA256 of the raw body: checked before anything
  is read; a missing or wrong one is refused.
- **Google Forms**: Forms has no webhook; an Apps Script on form submit posts JSON, either ``{"responses":
  {"title": "value", …}}`` or the fields themselves.
- **HTML**: ``application/x-www-form-urlencoded`` fields; a filled ``website`` field (a hidden honeypot) is a bot.

Fields named ``email``/``이메일``, ``phone``/``전화번호``, ``name``/``이름`` fill the contact; ``consent`` (checked,
``true``, ``yes``, ``1``) grants the form's consent purposes. Everything else is trigger data for the journey.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.models import Contact
from crm.phones import InvalidPhoneNumber, normalize_phone
from crm.services.consent import ConsentInput, consent_record_many
from journeys.models import Journey, LeadForm
from journeys.services.enrollment import journey_enroll_contacts

FIELD_NAMES = {
    "email": ("email", "e-mail", "이메일"),
    "phone": ("phone", "phone_number", "mobile", "전화번호", "휴대폰"),
    "name": ("name", "full_name", "이름", "성함"),
}
TRUE = {"true", "on", "yes", "1", "y", "예", "동의"}
HONEYPOT = "website"


class SignatureInvalid(Exception):
    """The Typeform signature is missing or wrong."""


@dataclass
class Submission:
    fields: dict[str, Any] = field(default_factory=dict)
    token: str = ""


def typeform_signature_valid(*, secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, header or "")


def _typeform_value(answer: dict[str, Any]) -> Any:
    kind = answer.get("type")
    value = answer.get(kind) if isinstance(kind, str) else None
    if kind == "choice" and isinstance(value, dict):
        return value.get("label") or value.get("other")
    if kind == "choices" and isinstance(value, dict):
        return value.get("labels") or []
    return value


def parse_typeform(payload: dict[str, Any]) -> Submission:
    response = payload.get("form_response") or {}
    fields: dict[str, Any] = {}
    for answer in response.get("answers") or []:
        if not isinstance(answer, dict):
            continue
        value = _typeform_value(answer)
        kind = answer.get("type")
        ref = (answer.get("field") or {}).get("ref") or (answer.get("field") or {}).get("id") or kind
        fields[str(ref)] = value
        if kind == "email":
            fields.setdefault("email", value)
        elif kind == "phone_number":
            fields.setdefault("phone", value)
    hidden = response.get("hidden")
    if isinstance(hidden, dict):
        for key, value in hidden.items():
            fields.setdefault(str(key), value)
    return Submission(fields=fields, token=str(response.get("token") or payload.get("event_id") or ""))


def parse_json(payload: dict[str, Any]) -> Submission:
    responses = payload.get("responses")
    fields = responses if isinstance(responses, dict) else payload
    return Submission(fields={str(k): v for k, v in fields.items()})


def _pick(fields: dict[str, Any], kind: str) -> str:
    lowered = {str(k).strip().lower(): v for k, v in fields.items()}
    for name in FIELD_NAMES[kind]:
        value = lowered.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def lead_submit(*, form: LeadForm, submission: Submission) -> tuple[Contact, bool]:
    """Create or update the contact of a submission and enter it in the form's journey. Returns (contact, entered).
    Raises ValidationError (by field) when neither a valid email nor a valid phone number is given."""
    fields = submission.fields
    if str(fields.get(HONEYPOT) or "").strip():
        raise ValidationError({HONEYPOT: [_("This field must be left empty.")]})
    email, phone, name = _pick(fields, "email"), _pick(fields, "phone"), _pick(fields, "name")
    errors: dict[str, list[str]] = {}
    if email:
        try:
            validate_email(email)
        except ValidationError:
            errors["email"] = [_("Enter a valid email address.")]
    if phone:
        try:
            phone = normalize_phone(phone)
        except InvalidPhoneNumber as exc:
            errors["phone"] = [str(exc)]
    if not errors and not (email or phone):
        errors["email"] = [_("An email address or a phone number is required.")]
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    with transaction.atomic():
        contacts = Contact.objects.not_erased().select_for_update()
        contact = (contacts.filter(email__iexact=email).order_by("id").first() if email else None) or (
            contacts.filter(phone=phone).order_by("id").first() if phone else None
        )
        if contact is None:
            contact = Contact.objects.create(email=email, phone=phone, name=name[:200])
        else:
            changed = [
                attr
                for attr, value in (("email", email), ("phone", phone), ("name", name[:200]))
                if value and not getattr(contact, attr)
            ]
            for attr in changed:
                setattr(contact, attr, {"email": email, "phone": phone, "name": name[:200]}[attr])
            if changed:
                contact.save(update_fields=[*changed, "updated_at"])
        if str(fields.get("consent") or "").strip().lower() in TRUE and form.consent_purposes:
            consent_record_many(
                changes=[
                    ConsentInput(contact.pk, purpose, True, now, f"form:{form.slug}")
                    for purpose in form.consent_purposes
                ]
            )
        entered = False
        journey = form.journey
        if journey is not None and journey.trigger == Journey.Trigger.FORM:
            data = {k: v for k, v in fields.items() if k not in (HONEYPOT, "csrfmiddlewaretoken")}
            data["form"] = form.slug
            entered = bool(journey_enroll_contacts(journey=journey, contact_ids=[contact.pk], context=data, now=now))
    return contact, entered
