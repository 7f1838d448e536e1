"""Contacts: create or update one contact, merge two, erase personal data on request."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from crm.models import (
    Cart,
    Consent,
    ConsentChange,
    Contact,
    ContactAlias,
    Coupon,
    Device,
    Event,
    Order,
    WishlistItem,
)
from crm.signals import contacts_merging

PROFILE_FIELDS = ("email", "phone", "name", "locale", "time_zone")
CART_FIELDS = ("items", "value", "currency", "updated_at", "checkout_started_at")


@transaction.atomic
def contact_merge(*, from_contact_id: int, into_contact_id: int) -> Contact:
    """Move everything of one contact into another and delete the first (identify of an anonymous visitor, alias).

    The surviving contact keeps its own values; it takes the other's only where it has none. Consent keeps the
    newer decision per purpose; the cart keeps the newer one; duplicates (same coupon code, order id, wishlist
    product) keep the surviving contact's row.
    """
    if from_contact_id == into_contact_id:
        return Contact.objects.get(pk=into_contact_id)
    pair = {c.pk: c for c in Contact.objects.select_for_update().filter(pk__in=[from_contact_id, into_contact_id])}
    source, target = pair.get(from_contact_id), pair.get(into_contact_id)
    if target is None:
        raise Contact.DoesNotExist(into_contact_id)
    if source is None:
        return target

    for attr in PROFILE_FIELDS:
        if not getattr(target, attr) and getattr(source, attr):
            setattr(target, attr, getattr(source, attr))
    target.attributes = {**source.attributes, **target.attributes}
    if target.external_id is None and source.external_id is not None:
        external_id, source.external_id = source.external_id, None
        source.save(update_fields=["external_id"])
        target.external_id = external_id
    target.save()

    Event.objects.filter(contact=source).update(contact=target)
    ContactAlias.objects.filter(contact=source).update(contact=target)
    Device.objects.filter(contact=source).update(contact=target)
    ConsentChange.objects.filter(contact=source).update(contact=target)
    for model, key in ((WishlistItem, "product_id"), (Coupon, "code"), (Order, "order_id")):
        taken = model.objects.filter(contact=target).values(key)
        model.objects.filter(contact=source).exclude(**{f"{key}__in": taken}).update(contact=target)
    for consent in Consent.objects.filter(contact=source):
        mine = Consent.objects.filter(contact=target, purpose=consent.purpose).first()
        if mine is None or mine.changed_at < consent.changed_at:
            Consent.objects.filter(contact=target, purpose=consent.purpose).delete()
            Consent.objects.filter(pk=consent.pk).update(contact=target)
    source_cart = Cart.objects.filter(contact=source).first()
    if source_cart is not None:
        target_cart = Cart.objects.filter(contact=target).first()
        if target_cart is None or target_cart.updated_at < source_cart.updated_at:
            Cart.objects.update_or_create(
                contact=target,
                defaults={
                    f: getattr(source_cart, f)
                    for f in ("items", "value", "currency", "updated_at", "checkout_started_at")
                },
            )
    target.tags.add(*source.tags.all())
    target.lists.add(*source.lists.all())
    contacts_merging.send(sender=Contact, from_contact_id=source.pk, into_contact_id=target.pk)
    source.delete()

    from crm.services.commerce import order_history_refresh
    from crm.services.ingest import contacts_seen_refresh

    order_history_refresh(contact_ids=[target.pk])
    contacts_seen_refresh(contact_ids={target.pk})
    target.refresh_from_db()
    return target


def contact_find(*, external_id: str | None = None, email: str | None = None, phone: str | None = None):
    """The contact matching the external ID, else the email, else the phone (in that order), or None."""
    for field, value in (("external_id", external_id), ("email", email), ("phone", phone)):
        if value:
            found = Contact.objects.filter(**{field: value}).order_by("id").first()
            if found is not None:
                return found
    return None


@transaction.atomic
@transaction.atomic
def contact_erase(*, contact: Contact, actor: str) -> Contact:
    """Erase a contact's personal data on request, everywhere: profile, attributes, event properties, devices,
    aliases, and, through ``crm.signals.contact_erased``, what other apps hold (messages, journeys).

    The row stays (anonymized) so that counts and reports remain consistent; nothing can identify the person. One
    transaction: either everything is erased or nothing. The audit trail records who erased which contact id and
    when, with no personal data.
    """
    from crm.audit import audit_record
    from crm.models import AuditEntry
    from crm.signals import contact_erased

    now = timezone.now()
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    identifiers = [
        value
        for value in (contact.email, contact.phone, contact.name, contact.external_id)
        if value and len(str(value)) >= 3
    ]
    identifiers += list(ContactAlias.objects.filter(contact=contact).values_list("anonymous_id", flat=True))
    contact.external_id = None
    for attr in PROFILE_FIELDS:
        setattr(contact, attr, "")
    contact.attributes = {}
    contact.erased_at = now
    contact.save()
    Event.objects.filter(contact=contact).update(properties={}, context={})
    Device.objects.filter(contact=contact).delete()
    ContactAlias.objects.filter(contact=contact).delete()
    WishlistItem.objects.filter(contact=contact).update(name="", properties={})
    Cart.objects.filter(contact=contact).delete()
    Order.objects.filter(contact=contact).update(items=[])
    Consent.objects.filter(contact=contact).update(granted=False, changed_at=now, source=f"erasure:{actor}"[:100])
    contact.tags.clear()
    contact.lists.clear()
    contact_erased.send(sender=Contact, contact_id=contact.pk, identifiers=identifiers)
    audit_record(
        action=AuditEntry.Action.ERASED,
        object_type=Contact._meta.label_lower,
        object_id=contact.pk,
        object_repr=f"#{contact.pk}",
        changes={"erased_at": now, "requested_via": actor},
    )
    return contact


def contact_profile_update(*, contact: Contact, values: dict[str, Any]) -> Contact:
    """Set profile fields and merge attributes of one contact (values already validated)."""
    changed = []
    for attr in PROFILE_FIELDS:
        if attr in values and values[attr] is not None and getattr(contact, attr) != values[attr]:
            setattr(contact, attr, values[attr])
            changed.append(attr)
    if values.get("attributes"):
        contact.attributes = {**contact.attributes, **values["attributes"]}
        changed.append("attributes")
    if changed:
        contact.save(update_fields=[*changed, "updated_at"])
    return contact


__all__ = ["contact_erase", "contact_find", "contact_merge", "contact_profile_update", "contact_upsert"]


@transaction.atomic
def contact_upsert(
    *, external_id: str, values: dict[str, Any], consents: dict[str, bool] | None = None, source: str
) -> tuple[Contact, bool]:
    """Create or update the contact with this external ID. Returns (contact, created).

    ``values`` are validated profile fields and ``attributes`` (merged into the existing ones); ``consents`` maps
    purposes to granted/withdrawn, recorded now with ``source``.
    """
    from crm.services.consent import ConsentInput, consent_record_many

    now = timezone.now()
    contact = Contact.objects.select_for_update().filter(external_id=external_id).first()
    created = False
    if contact is None:
        try:
            with transaction.atomic():
                contact = Contact.objects.create(external_id=external_id)
            created = True
        except IntegrityError:  # created concurrently by another request
            contact = Contact.objects.select_for_update().get(external_id=external_id)
    contact_profile_update(contact=contact, values=values)
    if consents:
        consent_record_many(
            changes=[ConsentInput(contact.pk, purpose, granted, now, source) for purpose, granted in consents.items()]
        )
    return contact, created
