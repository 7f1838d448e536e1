"""The demo data: its shape, exact relative times under a frozen clock, consistency, idempotency and speed."""

from __future__ import annotations

import re
import zoneinfo
from collections import defaultdict
from datetime import datetime, time, timedelta
from decimal import Decimal
from io import StringIO

import phonenumbers
import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count, Max, Min, Sum
from django.test.utils import CaptureQueriesContext

from crm import demo
from crm.demo import demo_load, demo_plan
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

SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")
#: A Wednesday afternoon in Seoul; the latest weekend day before it is Sunday 2026-03-08.
NOW = datetime(2026, 3, 11, 14, 30, tzinfo=SEOUL)
HANGUL_NAME = re.compile(r"^[\uac00-\ud7a3]{2,4}$")
EVENT_NAMES = {
    "Signed Up",
    "Promotion Viewed",
    "주말 한정 할인",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Coupon Issued",
    "Coupon Redeemed",
    "Product Added to Wishlist",
    "Lead Form Submitted",
}
MODELS = (Source, Contact, Consent, ConsentChange, Device, Event, Cart, WishlistItem, Coupon, Order, Tag, ContactList)
MODELS += (Contact.tags.through, Contact.lists.through)

pytestmark = pytest.mark.django_db


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def loaded(frozen) -> dict[str, int]:
    return demo_load()


def table_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in MODELS}


def contact(external_id: str) -> Contact:
    return Contact.objects.get(external_id=external_id)


def local(at: datetime) -> datetime:
    return at.astimezone(SEOUL)


def test_loads_the_expected_shape(loaded):
    assert loaded["contacts"] == 300
    assert loaded["sources"] == 1
    assert Contact.objects.count() >= 300
    assert Source.objects.get(name="demo").kind == Source.Kind.SHOP

    korean = Contact.objects.filter(locale="ko-KR")
    english = Contact.objects.filter(locale="en-US")
    assert korean.count() >= 270
    assert all(HANGUL_NAME.match(name) for name in korean.values_list("name", flat=True))
    assert 1 <= english.count() <= 30
    assert set(english.values_list("time_zone", flat=True)) <= {"America/New_York", "America/Los_Angeles"}
    assert contact("demo-0008").time_zone == "America/New_York"

    for c in Contact.objects.all():
        assert c.email == c.email.lower()
        assert c.email.split("@")[1] in demo.EMAIL_DOMAINS
        attrs = c.attributes
        assert attrs["gender"] in ("female", "male")
        assert datetime.fromisoformat(attrs["birth_date"]).year >= 1965
        assert attrs["membership_grade"] in ("VIP", "GOLD", "일반")
        assert isinstance(attrs["city"], str)
        assert attrs["interest_category"] in demo.CATEGORIES
        assert isinstance(attrs["points"], int)
        assert isinstance(attrs["app_installed"], bool)
        assert c.created_at <= NOW

    assert set(Event.objects.values_list("name", flat=True)) == EVENT_NAMES
    assert Tag.objects.filter(name__in=["VIP", "뉴스레터", "강의 수강생"]).count() == 3
    for tag in Tag.objects.filter(name__in=["VIP", "뉴스레터", "강의 수강생"]):
        assert tag.contacts.exists()
    assert ContactList.objects.get(name=demo.DEMO_LIST_NAME).contacts.count() >= 10
    vips = Contact.objects.filter(tags__name="VIP")
    assert set(vips.values_list("attributes__membership_grade", flat=True)) == {"VIP"}

    with_devices = Contact.objects.filter(devices__isnull=False).distinct().count()
    assert 0.35 * 300 <= with_devices <= 0.65 * 300
    assert Device.objects.exclude(token="").count() == Device.objects.count()
    assert not Device.objects.filter(contact__attributes__app_installed=False).exists()


def test_events_lie_in_the_last_30_days_and_are_well_formed(loaded):
    events = Event.objects.all()
    assert events.filter(occurred_at__lt=NOW - timedelta(days=30)).count() == 0
    assert events.filter(occurred_at__gt=NOW).count() == 0
    assert events.filter(received_at__gt=NOW).count() == 0
    for event in events.filter(source__name="demo").select_related("contact"):
        assert event.received_at >= event.occurred_at
        assert event.context["userAgent"].startswith("Mozilla/5.0")
        assert re.fullmatch(r"demo-\d{4}-\d{3}", event.message_id)
        assert event.message_id.startswith(event.contact.external_id)
    for event in events.filter(name="Product Viewed"):
        props = event.properties
        assert isinstance(props["price"], int)
        assert props["product_id"] in demo.PRODUCTS_BY_ID
        assert props["name"] == demo.PRODUCTS_BY_ID[props["product_id"]].name
    for event in events.filter(name="Order Completed"):
        props = event.properties
        assert props["currency"] == "KRW"
        assert props["total"] == props["revenue"] + props["shipping"]
        assert props["revenue"] == sum(p["price"] * p["quantity"] for p in props["products"]) - props["discount"]
        assert all(p.keys() >= {"product_id", "name", "price", "quantity", "category"} for p in props["products"])
    for event in events.filter(name="Coupon Issued"):
        expires = datetime.fromisoformat(event.properties["expires_at"])
        assert expires.tzinfo is not None
        assert event.properties["code"]


def test_relative_times_are_exact_under_a_frozen_clock(loaded):
    # Checkout started 40 minutes ago with the cashmere knit in the cart (reminder 30 minutes after leaving).
    cart = contact("demo-0002").cart
    assert cart.checkout_started_at == NOW - timedelta(minutes=40)
    assert cart.updated_at == NOW - timedelta(minutes=50)
    assert [item["name"] for item in cart.items] == ["캐시미어 니트"]
    assert cart.value == Decimal("89000")

    # A coupon that expires at the end of today, Seoul time, unused.
    coupon = contact("demo-0003").coupons.get(code="COMEBACK-0003")
    assert coupon.expires_at == datetime(2026, 3, 11, 23, 59, 59, tzinfo=SEOUL)
    assert coupon.issued_at == NOW - timedelta(days=7)
    assert coupon.redeemed_at is None

    # Added to the wishlist 23 hours ago.
    item = contact("demo-0004").wishlist.get()
    assert (item.name, item.added_at) == ("캐시미어 니트", NOW - timedelta(hours=23))

    # Signed up 10 minutes ago, with a welcome coupon valid for 14 days.
    newcomer = contact("demo-0005")
    signed_up = newcomer.events.get(name="Signed Up")
    assert signed_up.occurred_at == newcomer.created_at == newcomer.first_seen_at == NOW - timedelta(minutes=10)
    welcome = newcomer.coupons.get(code="WELCOME-0005")
    assert welcome.expires_at == datetime(2026, 3, 25, 23, 59, 59, tzinfo=SEOUL)

    # Viewed the weekend promotion on the latest weekend day.
    views = contact("demo-0006").events.filter(type=Event.Type.PAGE, properties__path="/promo/weekend")
    assert [local(v.occurred_at).date().isoformat() for v in views] == ["2026-03-08"]

    # Submitted the course lead form six days ago and bought the course three days later.
    lead = contact("demo-0007")
    assert lead.events.get(name="Lead Form Submitted").occurred_at == NOW - timedelta(days=6)
    assert lead.tags.filter(name="강의 수강생").exists()
    assert lead.orders.get().items[0]["product_id"] == demo.COURSE.product_id

    # Advertising consent older than two years (due for re-confirmation), and withdrawn consents.
    assert contact("demo-0009").consents.get(purpose=ConsentPurpose.ADS).changed_at < NOW - timedelta(days=730)
    withdrawn = contact("demo-0010").consents.filter(granted=False, changed_at=NOW - timedelta(days=2))
    assert set(withdrawn.values_list("purpose", flat=True)) >= {ConsentPurpose.SMS, ConsentPurpose.ADS}


def check_scenarios(now: datetime) -> None:
    """The situations the seed playbooks react to are all present, relative to ``now``."""
    promo_views = Event.objects.filter(
        type=Event.Type.PAGE,
        name="주말 한정 할인",
        properties__path="/promo/weekend",
        properties__name="주말 한정 할인",
    )
    assert promo_views.filter(occurred_at__gte=now - timedelta(days=7)).count() >= 10
    assert all(local(at).weekday() >= 5 for at in promo_views.values_list("occurred_at", flat=True))

    open_checkouts = Cart.objects.exclude(items=[]).filter(checkout_started_at__gte=now - timedelta(hours=1))
    assert open_checkouts.exists()
    assert Cart.objects.exclude(items=[]).filter(checkout_started_at__isnull=True).exists()
    assert Cart.objects.filter(items=[]).exists()  # emptied by an order

    end_of_today = datetime.combine(local(now).date(), time(23, 59, 59), tzinfo=SEOUL)
    unused = Coupon.objects.filter(redeemed_at__isnull=True)
    expiring_today = unused.filter(expires_at__gte=now, expires_at__lte=end_of_today)
    assert expiring_today.exists()
    assert all(local(c.expires_at).date() == local(now).date() for c in expiring_today)
    assert unused.filter(expires_at__gt=end_of_today, expires_at__lte=end_of_today + timedelta(days=5)).count() >= 3
    assert Coupon.objects.filter(redeemed_at__isnull=False).count() >= 10

    assert Contact.objects.filter(order_count__gte=2).count() >= 10
    assert Event.objects.filter(name="Signed Up", occurred_at__gte=now - timedelta(days=1)).exists()
    assert WishlistItem.objects.filter(added_at__gte=now - timedelta(days=1)).exists()


def check_commerce() -> None:
    """Commerce state and contact aggregates are exactly what the events and Order rows say."""
    events_by_contact = defaultdict(list)
    for event in Event.objects.order_by("occurred_at", "id"):
        events_by_contact[event.contact_id].append(event)
    carts = {cart.contact_id: cart for cart in Cart.objects.all()}
    orders = {(o.contact_id, o.order_id): o for o in Order.objects.all()}
    coupons = {(c.contact_id, c.code): c for c in Coupon.objects.all()}
    wishlist = {(w.contact_id, w.product_id): w for w in WishlistItem.objects.all()}

    aggregates = Contact.objects.annotate(
        n=Count("orders"), revenue=Sum("orders__total"), first=Min("orders__placed_at"), last=Max("orders__placed_at")
    )
    for c in aggregates:
        assert c.order_count == c.n
        assert c.total_revenue == (c.revenue or Decimal("0"))
        assert (c.first_order_at, c.last_order_at) == (c.first, c.last)
        events = events_by_contact[c.pk]
        assert c.first_seen_at == (events[0].occurred_at if events else None)
        assert c.last_seen_at == (events[-1].occurred_at if events else None)

        completed = [e for e in events if e.name == "Order Completed"]
        assert len(completed) == c.order_count
        for e in completed:
            order = orders[(c.pk, e.properties["order_id"])]
            assert (order.total, order.placed_at) == (Decimal(e.properties["total"]), e.occurred_at)
            assert [i["product_id"] for i in order.items] == [p["product_id"] for p in e.properties["products"]]
            if "coupon" in e.properties:
                assert coupons[(c.pk, e.properties["coupon"])].redeemed_at is not None

        last_order_at = completed[-1].occurred_at if completed else None
        adds = [
            e for e in events if e.name == "Product Added" and (last_order_at is None or e.occurred_at > last_order_at)
        ]
        cart = carts.get(c.pk)
        if adds:
            assert [i["product_id"] for i in cart.items] == [e.properties["product_id"] for e in adds]
            assert cart.value == sum(Decimal(e.properties["price"]) * e.properties["quantity"] for e in adds)
            assert cart.updated_at == adds[-1].occurred_at
            checkouts = [e for e in events if e.name == "Checkout Started" and e.occurred_at > adds[0].occurred_at]
            assert cart.checkout_started_at == (checkouts[-1].occurred_at if checkouts else None)
        elif completed:
            assert (cart.items, cart.value, cart.updated_at) == ([], Decimal("0"), last_order_at)
        else:
            assert cart is None

        for e in events:
            if e.name == "Coupon Issued":
                coupon = coupons[(c.pk, e.properties["code"])]
                assert coupon.issued_at == e.occurred_at
                assert coupon.expires_at == datetime.fromisoformat(e.properties["expires_at"])
            elif e.name == "Coupon Redeemed":
                assert coupons[(c.pk, e.properties["code"])].redeemed_at == e.occurred_at
            elif e.name == "Product Added to Wishlist":
                assert wishlist[(c.pk, e.properties["product_id"])].added_at == e.occurred_at

    issued = Event.objects.filter(name="Coupon Issued").count()
    redeemed = Event.objects.filter(name="Coupon Redeemed").count()
    assert (issued, redeemed) == (Coupon.objects.count(), Coupon.objects.filter(redeemed_at__isnull=False).count())
    assert Event.objects.filter(name="Product Added to Wishlist").count() == WishlistItem.objects.count()


def check_consents(now: datetime) -> None:
    """Every Consent is the latest of its ConsentChange history."""
    changes = defaultdict(list)
    for change in ConsentChange.objects.order_by("changed_at", "id"):
        changes[(change.contact_id, change.purpose)].append(change)
    assert Consent.objects.count() >= 300 * 5
    for consent in Consent.objects.all():
        history = changes.pop((consent.contact_id, consent.purpose))
        latest = history[-1]
        assert (latest.granted, latest.changed_at, latest.source) == (
            consent.granted,
            consent.changed_at,
            consent.source,
        )
        assert consent.changed_at <= now
    assert not changes  # no history without a current consent

    withdrawn = Consent.objects.filter(granted=False, source__in=["unsubscribe_link", "preference_center", "080_call"])
    assert withdrawn.count() >= 10
    old_ads = Consent.objects.filter(purpose=ConsentPurpose.ADS, granted=True, changed_at__lt=now - timedelta(days=730))
    assert old_ads.count() >= 5
    assert ConsentChange.objects.filter(source="reconfirmation").exists()
    night_without_ads = Consent.objects.filter(purpose=ConsentPurpose.ADS_NIGHT, granted=True).exclude(
        contact__consents__purpose=ConsentPurpose.ADS, contact__consents__granted=True
    )
    assert not night_without_ads.exists()


def test_scenarios_for_the_seed_playbooks_exist(loaded):
    check_scenarios(NOW)


def test_commerce_state_matches_the_events(loaded):
    check_commerce()


def test_every_consent_has_its_history(loaded):
    check_consents(NOW)


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 3, 14, 0, 5, tzinfo=SEOUL),  # just after midnight on a Saturday
        datetime(2026, 3, 15, 23, 58, tzinfo=SEOUL),  # Sunday night, the promotion about to end
        datetime(2027, 1, 1, 0, 0, tzinfo=zoneinfo.ZoneInfo("UTC")),  # 09:00 in Seoul on New Year's Day
    ],
)
def test_the_invariants_hold_whenever_it_is_loaded(now):
    with time_machine.travel(now, tick=False):
        demo_load()
    assert not Event.objects.filter(occurred_at__lt=now - timedelta(days=30)).exists()
    assert not Event.objects.filter(received_at__gt=now).exists()
    check_scenarios(now)
    check_commerce()
    check_consents(now)


def test_phones_and_emails_are_valid_and_distinct(loaded):
    phones = list(Contact.objects.values_list("phone", flat=True))
    for phone in phones:
        number = phonenumbers.parse(phone, None)
        assert phonenumbers.is_valid_number(number)
        assert phonenumbers.region_code_for_number(number) == "KR"
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == phone
        assert phone.startswith("+8210")
    assert len(set(phones)) == len(phones)
    emails = list(Contact.objects.values_list("email", flat=True))
    assert len(set(emails)) == len(emails)


def test_a_second_run_creates_nothing_even_on_a_later_day(loaded, frozen):
    assert all(loaded[key] > 0 for key in demo.CREATED_KEYS)
    before = table_counts()
    timeline = list(Event.objects.order_by("id").values_list("message_id", "occurred_at"))

    frozen.shift(timedelta(days=3, hours=5))
    again = demo_load()

    assert again == dict.fromkeys(demo.CREATED_KEYS, 0)
    assert table_counts() == before
    assert list(Event.objects.order_by("id").values_list("message_id", "occurred_at")) == timeline


def test_more_contacts_later_adds_only_the_new_ones(frozen):
    first = demo_load(contacts=20)
    snapshot = {c.external_id: (c.name, c.phone, c.last_seen_at) for c in Contact.objects.all()}
    events = Event.objects.count()

    frozen.shift(timedelta(days=1))
    second = demo_load(contacts=30)

    assert (first["contacts"], second["contacts"]) == (20, 10)
    assert (second["sources"], second["tags"], second["contact_lists"]) == (0, 0, 0)
    assert Contact.objects.count() == 30
    assert {c.external_id: (c.name, c.phone, c.last_seen_at) for c in Contact.objects.all()[10:]} == snapshot
    assert Event.objects.count() == events + second["events"]


def test_a_contact_that_exists_is_left_alone(frozen):
    Contact.objects.create(external_id="demo-0002", name="직접 입력", email="me@example.com")
    created = demo_load(contacts=3)
    assert created["contacts"] == 2
    assert contact("demo-0002").name == "직접 입력"
    assert not contact("demo-0002").events.exists()


def test_an_event_already_stored_on_the_demo_source_is_not_stored_twice(frozen):
    source = Source.objects.create(name="demo", kind=Source.Kind.SHOP)
    other = Contact.objects.create(external_id="someone-else")
    Event.objects.create(contact=other, source=source, message_id="demo-0001-001", name="Custom", occurred_at=NOW)
    plan = demo_plan(contacts=1, now=NOW)[0]

    created = demo_load(contacts=1)

    assert created["events"] == len(plan.events) - 1
    assert Event.objects.get(message_id="demo-0001-001").contact == other


def test_the_plan_is_deterministic():
    first = demo_plan(contacts=40, now=NOW)
    assert first == demo_plan(contacts=40, now=NOW)
    later = demo_plan(contacts=40, now=NOW + timedelta(days=9, minutes=17))
    identity = ("external_id", "name", "email", "phone", "locale", "time_zone")
    assert [[p.fields[k] for k in identity] for p in first] == [[p.fields[k] for k in identity] for p in later]
    # Contact n is the same person whatever the number of contacts loaded.
    assert demo_plan(contacts=10, now=NOW) == first[:10]


def test_the_load_is_set_based(frozen):
    with CaptureQueriesContext(connection) as queries:
        created = demo_load(contacts=300)
    # A few statements per table plus one per batch of rows (SQLite allows 999 parameters, so ~99 events per
    # INSERT): far fewer than one per contact, let alone one per row.
    assert len(queries) < 300 // 2
    assert len(queries) < sum(created.values()) // 50


def test_the_command_prints_a_one_line_summary(frozen):
    out = StringIO()
    call_command("load_demo", "--contacts", "12", stdout=out)
    assert re.fullmatch(r"Demo data loaded: 1 source, 12 contacts, .*\. \(\d+\.\d s\)\n", out.getvalue())

    out = StringIO()
    call_command("load_demo", "--contacts", "12", stdout=out)
    assert out.getvalue().startswith("Demo data is already loaded: nothing created.")

    with pytest.raises(CommandError, match="between 0 and"):
        call_command("load_demo", "--contacts", "-1")


def test_the_command_refuses_production_unless_forced(frozen, settings):
    settings.IS_PRODUCTION = True
    with pytest.raises(CommandError, match="LOOP_ENV=production"):
        call_command("load_demo", "--contacts", "2")
    assert not Contact.objects.exists()

    call_command("load_demo", "--contacts", "2", "--force", stdout=StringIO())
    assert Contact.objects.count() == 2


def test_now_must_be_aware(db):
    with pytest.raises(ValueError, match="aware"):
        demo_load(contacts=1, now=datetime(2026, 3, 11, 14, 30))
