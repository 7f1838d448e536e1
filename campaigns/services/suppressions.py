"""Suppressions and unsubscribes: the only writers of ``Suppression`` rows and of consent withdrawn by a message.

- ``suppressions_add``: set-based, idempotent (one row per contact and channel; an existing row is kept).
- ``contact_unsubscribe``: a contact's own opt-out (signed link, RFC 8058 one-click, mailto, the ESP's unsubscribe
  event): withdraws the channel's consent (and advertising consent for the advertising-consent notice) with its
  source in the consent history, and suppresses the channel. Idempotent: a second request changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from campaigns.channels import channel as channel_kind
from campaigns.models import ADS_RECONSENT_BUILTINS, Send, Suppression
from crm.models import Consent, Contact
from crm.services.consent import ConsentInput, consent_record_many


def suppressions_add(
    *, contact_ids: Iterable[int], channel: str, reason: str, detail: str = "", now: datetime | None = None
) -> int:
    """Suppress ``channel`` for ``contact_ids``; returns how many were not suppressed before."""
    ids = sorted(set(contact_ids))
    if not ids:
        return 0
    now = now or timezone.now()
    with transaction.atomic():
        existing = set(
            Suppression.objects.filter(contact_id__in=ids, channel=channel).values_list("contact_id", flat=True)
        )
        rows = [
            Suppression(contact_id=i, channel=channel, reason=reason, detail=detail[:2000], created_at=now)
            for i in ids
            if i not in existing
        ]
        Suppression.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def contact_unsubscribe(
    *, contact_id: int, channel: str, send_id: int | None, source: str, now: datetime | None = None
) -> bool:
    """Apply a contact's opt-out from ``channel``. Returns False when the contact does not exist (erased)."""
    now = now or timezone.now()
    purposes = []
    kind = channel_kind(channel)
    if kind.consent_purpose:
        purposes.append(kind.consent_purpose)
    if send_id is not None:
        builtin = Send.objects.filter(pk=send_id, contact_id=contact_id).values_list("campaign__builtin", flat=True)
        if builtin.first() in ADS_RECONSENT_BUILTINS:
            purposes.append("ads")
    with transaction.atomic():
        if not Contact.objects.select_for_update().filter(pk=contact_id).exists():
            return False
        granted = set(
            Consent.objects.filter(contact_id=contact_id, purpose__in=purposes, granted=True).values_list(
                "purpose", flat=True
            )
        )
        consent_record_many(
            changes=[
                ConsentInput(contact_id=contact_id, purpose=p, granted=False, changed_at=now, source=source)
                for p in purposes
                if p in granted
            ]
        )
        detail = f"send {send_id}" if send_id is not None else ""
        suppressions_add(
            contact_ids=[contact_id], channel=channel, reason=Suppression.Reason.UNSUBSCRIBED, detail=detail, now=now
        )
    return True


def unsubscribe_by_mail(*, subject: str, esp_name: str) -> bool:
    """Apply an unsubscribe request mailed to ``UNSUBSCRIBE_MAILTO`` (subject ``unsubscribe <token>``); a message
    without a valid token is ignored (False)."""
    from django.core import signing

    from campaigns.unsubscribe import read_token

    words = subject.split()
    for word in reversed(words):
        try:
            wanted = read_token(word)
        except signing.BadSignature:
            continue
        source = f"unsubscribe:mailto:{esp_name}"
        if wanted.send_id is not None:
            source = f"{source}:send-{wanted.send_id}"
        return contact_unsubscribe(
            contact_id=wanted.contact_id, channel=wanted.channel, send_id=wanted.send_id, source=source[:100]
        )
    return False
