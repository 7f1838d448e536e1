"""factory_boy factories for the crm models: plain and predictable, for every app's tests.

- Values come from sequences, not random fakers: the n-th contact is always 김민준n… with the same email and phone.
- Times default to ``timezone.now()`` when the factory runs, so they follow a frozen clock (time_machine).
- No side effects: ``OrderFactory`` does not update the contact's order history fields and ``ConsentFactory``
  writes no ConsentChange unless asked (``ConsentFactory(history=True)``). For derived state call ``crm.services``
  or set the fields explicitly.
- Related objects are created by ``SubFactory`` unless given: ``EventFactory(contact=c, source=s)``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone

from crm.models import (
    Cart,
    Consent,
    ConsentChange,
    ConsentPurpose,
    Contact,
    ContactList,
    Coupon,
    Device,
    Event,
    Order,
    Source,
    Tag,
    WishlistItem,
)

#: Korean names cycled by sequence number (family name first, no space).
KOREAN_NAMES = ("김민준", "이서연", "박지훈", "최수아", "정하준", "강지우", "조예린", "윤도윤", "장하은", "임시우")


def korean_phone(n: int) -> str:
    """A valid Korean mobile number in E.164, distinct for each n below 10⁸: +8210 followed by 8 digits."""
    return f"+8210{20_000_000 + n % 80_000_000:08d}"


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source

    name = factory.Sequence(lambda n: f"source-{n}")
    kind = Source.Kind.SHOP


class TagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tag

    name = factory.Sequence(lambda n: f"tag-{n}")


class ContactListFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContactList

    name = factory.Sequence(lambda n: f"list-{n}")
    description = ""


class ContactFactory(factory.django.DjangoModelFactory):
    """``ContactFactory(tags=[tag], lists=[contact_list])`` adds the contact to them."""

    class Meta:
        model = Contact
        skip_postgeneration_save = True

    external_id = factory.Sequence(lambda n: f"user-{n:04d}")
    name = factory.Sequence(lambda n: KOREAN_NAMES[n % len(KOREAN_NAMES)])
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    phone = factory.Sequence(korean_phone)
    locale = "ko-KR"
    time_zone = ""
    attributes = factory.LazyFunction(dict)

    @factory.post_generation
    def tags(self, create: bool, extracted, **kwargs) -> None:
        if create and extracted:
            self.tags.add(*extracted)

    @factory.post_generation
    def lists(self, create: bool, extracted, **kwargs) -> None:
        if create and extracted:
            self.lists.add(*extracted)


class ConsentFactory(factory.django.DjangoModelFactory):
    """The current consent for one purpose. ``history=True`` also writes the ConsentChange that set it."""

    class Meta:
        model = Consent
        skip_postgeneration_save = True

    contact = factory.SubFactory(ContactFactory)
    purpose = ConsentPurpose.EMAIL
    granted = True
    changed_at = factory.LazyFunction(timezone.now)
    source = "test"

    @factory.post_generation
    def history(self, create: bool, extracted, **kwargs) -> None:
        if create and extracted:
            ConsentChange.objects.create(
                contact=self.contact,
                purpose=self.purpose,
                granted=self.granted,
                changed_at=self.changed_at,
                source=self.source,
            )


class ConsentChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConsentChange

    contact = factory.SubFactory(ContactFactory)
    purpose = ConsentPurpose.EMAIL
    granted = True
    changed_at = factory.LazyFunction(timezone.now)
    source = "test"


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device

    contact = factory.SubFactory(ContactFactory)
    platform = Device.Platform.ANDROID
    token = factory.Sequence(lambda n: f"test-push-token-{n:06d}")
    app_id = "com.example.loopshop"
    active = True


class EventFactory(factory.django.DjangoModelFactory):
    """A track event; ``received_at`` equals ``occurred_at`` unless given."""

    class Meta:
        model = Event

    contact = factory.SubFactory(ContactFactory)
    source = factory.SubFactory(SourceFactory)
    message_id = factory.Sequence(lambda n: f"message-{n:06d}")
    type = Event.Type.TRACK
    name = "Product Viewed"
    properties = factory.LazyFunction(dict)
    context = factory.LazyFunction(dict)
    occurred_at = factory.LazyFunction(timezone.now)
    received_at = factory.SelfAttribute("occurred_at")


class CartFactory(factory.django.DjangoModelFactory):
    """An empty cart; give ``items`` and ``value`` together (the factory does not add them up)."""

    class Meta:
        model = Cart

    contact = factory.SubFactory(ContactFactory)
    items = factory.LazyFunction(list)
    value = Decimal("0")
    currency = "KRW"
    updated_at = factory.LazyFunction(timezone.now)
    checkout_started_at = None


class WishlistItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WishlistItem

    contact = factory.SubFactory(ContactFactory)
    product_id = factory.Sequence(lambda n: f"P{n:04d}")
    name = "캐시미어 니트"
    properties = factory.LazyFunction(dict)
    added_at = factory.LazyFunction(timezone.now)


class CouponFactory(factory.django.DjangoModelFactory):
    """An unused 5,000 KRW coupon issued now, expiring in 7 days."""

    class Meta:
        model = Coupon

    contact = factory.SubFactory(ContactFactory)
    code = factory.Sequence(lambda n: f"COUPON-{n:04d}")
    discount_amount = Decimal("5000")
    discount_percent = None
    issued_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda o: o.issued_at + timedelta(days=7))
    redeemed_at = None


class OrderFactory(factory.django.DjangoModelFactory):
    """One order of one 39,000 KRW item. Does not touch the contact's order history fields."""

    class Meta:
        model = Order

    contact = factory.SubFactory(ContactFactory)
    order_id = factory.Sequence(lambda n: f"ORDER-{n:06d}")
    total = Decimal("39000")
    currency = "KRW"
    items = factory.LazyFunction(
        lambda: [{"product_id": "P3001", "name": "캔버스 토트백", "quantity": 1, "price": 39000, "category": "가방"}]
    )
    placed_at = factory.LazyFunction(timezone.now)


def user_with_role(role: str, username: str | None = None, password: str = "pw-Loop-2026!"):
    """A staff user in one of the role groups (crm.roles: "Admin", "Marketer", "Analyst")."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(
        username=username or f"{role.lower()}-user", password=password, is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    return user
