"""The shared factories build valid, predictable rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import phonenumbers
import pytest
import time_machine

from crm.models import ConsentChange, ConsentPurpose, Contact
from crm.tests import factories

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 11, 5, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "factory",
    [
        factories.SourceFactory,
        factories.TagFactory,
        factories.ContactListFactory,
        factories.ContactFactory,
        factories.ConsentFactory,
        factories.ConsentChangeFactory,
        factories.DeviceFactory,
        factories.EventFactory,
        factories.CartFactory,
        factories.WishlistItemFactory,
        factories.CouponFactory,
        factories.OrderFactory,
    ],
)
def test_every_factory_saves_a_valid_row(factory):
    first, second = factory(), factory()
    for obj in (first, second):
        obj.full_clean()
        assert type(obj).objects.filter(pk=obj.pk).exists()


def test_contacts_are_korean_and_reachable():
    contacts = factories.ContactFactory.create_batch(12)
    assert (
        len({c.phone for c in contacts})
        == len({c.email for c in contacts})
        == len({c.external_id for c in contacts})
        == 12
    )
    for c in contacts:
        number = phonenumbers.parse(c.phone, None)
        assert phonenumbers.is_valid_number(number)
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == c.phone
        assert c.phone.startswith("+8210")
        assert c.name in factories.KOREAN_NAMES
        assert c.email == c.email.lower()


def test_times_follow_the_clock_and_relations_are_optional():
    with time_machine.travel(NOW, tick=False):
        event = factories.EventFactory(name="Order Completed")
        coupon = factories.CouponFactory()
    assert event.occurred_at == event.received_at == NOW
    assert (coupon.issued_at, coupon.expires_at) == (NOW, NOW + timedelta(days=7))

    contact = factories.ContactFactory()
    tag, contact_list = factories.TagFactory(name="VIP"), factories.ContactListFactory()
    tagged = factories.ContactFactory(tags=[tag], lists=[contact_list])
    assert list(tagged.tags.all()) == [tag]
    assert list(tagged.lists.all()) == [contact_list]
    assert factories.EventFactory(contact=contact).contact == contact
    assert Contact.objects.count() == 4  # the event's and coupon's contacts, and the two above


def test_consent_history_only_when_asked():
    plain = factories.ConsentFactory(purpose=ConsentPurpose.SMS)
    assert not ConsentChange.objects.filter(contact=plain.contact).exists()

    with_history = factories.ConsentFactory(purpose=ConsentPurpose.ADS, granted=False, history=True)
    change = ConsentChange.objects.get(contact=with_history.contact)
    assert (change.purpose, change.granted, change.changed_at) == ("ads", False, with_history.changed_at)
