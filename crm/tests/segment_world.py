"""A crafted data set for segment tests: eight contacts whose membership of every condition is worked out by hand.

The clock is frozen at ``NOW`` = 2026-02-28 16:00 UTC, which is **Sunday 2026-03-01 01:00 in Seoul**: "today" and
"this month" in the workspace time zone are already March while UTC is still in February, so an implementation
that used UTC days would get different members.

=========  ==============================================================================================
minji      서울, age 34, VIP tag, static list, consents email/ads/ads_night, active push, 4 orders (last 2 days
           ago, 가방), weekend promo viewed Saturday, cart 89,000 changed 10 min ago, coupon expiring today 20:00
junho      부산, age 25, US phone, email consent withdrawn, 1 order of 600,000 101 days ago (가방), promo viewed
           Monday, cart 45,000 changed 2 h ago with checkout started, coupon expiring in exactly 3 days
seoyeon    no email/phone, attributes of the wrong types, created yesterday 23:00 (Seoul), 5 product views in
           the last 5 days, an emptied cart, a redeemed coupon
dohyun     "Seoul", age 41.5, kakao/push consent, ads withdrawn, inactive device, 3 orders (last today 00:30,
           신발), an expired coupon, wishlist 캐시미어 니트 (니트)
erased     would match a lot, but was erased: in no segment
hana       no attributes, email/ads consent, static list, promo viewed last week, cart 30,000 changed 20 min ago,
           coupon without expiry, wishlist 가죽 스니커즈 (신발)
yuna       created today 00:30 (Seoul), tag newbie, 2 orders = 500,000 (last 30 days ago; 가방 96 days ago),
           a coupon that expired 30 min ago and one expiring tomorrow 00:30
minho      "Minho@example.com", score 7.5, ads_night consent only, active and inactive devices, signed up with
           kakao, last seen 40 days ago
=========  ==============================================================================================
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from crm.models import ConsentPurpose, Contact, Segment
from crm.tests.factories import (
    CartFactory,
    ConsentFactory,
    ContactFactory,
    ContactListFactory,
    CouponFactory,
    DeviceFactory,
    EventFactory,
    SourceFactory,
    TagFactory,
    WishlistItemFactory,
)

SEOUL = ZoneInfo("Asia/Seoul")
NOW = datetime(2026, 2, 28, 16, 0, tzinfo=UTC)
NAMES = ("minji", "junho", "seoyeon", "dohyun", "erased", "hana", "yuna", "minho")
#: Everybody who can be in a segment (not erased).
ALL = frozenset(NAMES) - {"erased"}
PROMO = "주말 한정 할인"
ORDER = "Order Completed"


def kst(*args: int) -> datetime:
    return datetime(*args, tzinfo=SEOUL)


def ago(**kwargs) -> datetime:
    return NOW - timedelta(**kwargs)


class World:
    """The contacts by name, the static list, the tags, and a VIP segment (3+ orders or 500,000+ revenue)."""

    def __init__(self) -> None:
        self.source = SourceFactory(name="shop")
        self.vip_tag = TagFactory(name="vip")
        self.newbie_tag = TagFactory(name="newbie")
        self.spring = ContactListFactory(name="봄 행사")
        self.contacts: dict[str, Contact] = {}
        for name in NAMES:
            getattr(self, f"make_{name}")()
        self.vip_segment = Segment.objects.create(
            name="VIP",
            rules={
                "version": 1,
                "root": {
                    "type": "group",
                    "op": "or",
                    "children": [
                        {"type": "orders", "field": "count", "op": "gte", "value": 3},
                        {"type": "orders", "field": "revenue", "op": "gte", "value": 500000},
                    ],
                },
            },
        )

    def names(self, contacts) -> set[str]:
        by_pk = {c.pk: name for name, c in self.contacts.items()}
        return {by_pk[c.pk] for c in contacts}

    def event(self, contact: Contact, name: str, at: datetime, **properties) -> None:
        EventFactory(contact=contact, source=self.source, name=name, occurred_at=at, properties=properties)

    def order(self, contact: Contact, at: datetime, category: str, total: int) -> None:
        self.event(contact, ORDER, at, products=[{"product_id": f"P-{category}", "category": category}], total=total)

    def consent(self, contact: Contact, purpose: str, granted: bool) -> None:
        ConsentFactory(contact=contact, purpose=purpose, granted=granted, changed_at=ago(days=30))

    def cart(self, contact: Contact, value: int, changed: datetime, **extra) -> None:
        items = [{"product_id": "P1", "quantity": 1, "price": value}] if value else []
        CartFactory(contact=contact, items=items, value=Decimal(value), updated_at=changed, **extra)

    # -- the contacts --

    def make_minji(self) -> None:
        c = self.contacts["minji"] = ContactFactory(
            name="민지",
            external_id="u-minji",
            email="minji@example.com",
            phone="+821011110001",
            attributes={
                "city": "서울",
                "age": 34,
                "vip": True,
                "birth_date": "1992-03-01",
                "grade": "gold",
                "joined": "2026-02-27T10:00:00+09:00",
                "interests": ["요가", "러닝"],
            },
            created_at=kst(2025, 11, 1, 9, 0),
            first_seen_at=kst(2025, 11, 1, 9, 0),
            last_seen_at=ago(minutes=30),
            tags=[self.vip_tag],
            lists=[self.spring],
            order_count=4,
            total_revenue=Decimal("120000"),
            first_order_at=kst(2025, 12, 1, 12, 0),
            last_order_at=kst(2026, 2, 27, 20, 0),
        )
        for purpose in (ConsentPurpose.EMAIL, ConsentPurpose.ADS, ConsentPurpose.ADS_NIGHT):
            self.consent(c, purpose, True)
        DeviceFactory(contact=c, active=True)
        self.order(c, kst(2025, 12, 1, 12, 0), "니트", 30000)
        self.order(c, kst(2026, 1, 10, 12, 0), "니트", 30000)
        self.order(c, kst(2026, 2, 10, 12, 0), "니트", 30000)
        self.order(c, kst(2026, 2, 27, 20, 0), "가방", 30000)
        self.event(
            c,
            PROMO,
            kst(2026, 2, 28, 14, 0),
            path="/promo/weekend",
            tags=["summer", "sale"],
            page={"section": "promo", "top": True},
        )
        self.cart(c, 89000, ago(minutes=10))
        CouponFactory(contact=c, code="TODAY", issued_at=ago(days=3), expires_at=kst(2026, 3, 1, 20, 0))

    def make_junho(self) -> None:
        c = self.contacts["junho"] = ContactFactory(
            name="준호",
            external_id="u-junho",
            email="junho@example.com",
            phone="+14155550100",
            attributes={"city": "부산", "age": 25, "vip": False, "birth_date": "2001-12-24", "grade": "silver"},
            created_at=kst(2026, 1, 15, 10, 0),
            last_seen_at=ago(days=3),
            order_count=1,
            total_revenue=Decimal("600000"),
            first_order_at=kst(2025, 11, 20, 15, 0),
            last_order_at=kst(2025, 11, 20, 15, 0),
        )
        self.consent(c, ConsentPurpose.EMAIL, False)
        self.consent(c, ConsentPurpose.SMS, True)
        self.order(c, kst(2025, 11, 20, 15, 0), "가방", 600000)
        self.event(c, PROMO, kst(2026, 2, 23, 9, 0), path="/promo/weekend", tags="sale", page={"section": "home"})
        self.event(c, "Product Added", ago(hours=2), product_id="P2")
        self.cart(c, 45000, ago(hours=2), checkout_started_at=ago(hours=2) + timedelta(minutes=5))
        CouponFactory(contact=c, code="SOON", issued_at=ago(days=3), expires_at=NOW + timedelta(days=3))

    def make_seoyeon(self) -> None:
        c = self.contacts["seoyeon"] = ContactFactory(
            name="서연",
            external_id=None,
            email="",
            phone="",
            attributes={"city": ["서울"], "age": "30", "vip": "true", "birth_date": "not a date"},
            created_at=kst(2026, 2, 28, 23, 0),
        )
        for days in range(1, 6):
            self.event(c, "Product Viewed", ago(days=days), product_id="P9", price=10000)
        self.cart(c, 0, ago(days=1))
        CouponFactory(
            contact=c, code="USED", issued_at=ago(days=5), expires_at=NOW + timedelta(days=10), redeemed_at=ago(days=2)
        )

    def make_dohyun(self) -> None:
        c = self.contacts["dohyun"] = ContactFactory(
            name="도현",
            external_id="u-dohyun",
            email="dohyun@test.co.kr",
            phone="+821099990004",
            attributes={"city": "Seoul", "nickname": "", "age": 41.5},
            created_at=kst(2024, 6, 1, 9, 0),
            last_seen_at=kst(2026, 3, 1, 0, 20),
            order_count=3,
            total_revenue=Decimal("90000"),
            first_order_at=kst(2026, 2, 5, 12, 0),
            last_order_at=kst(2026, 3, 1, 0, 30),
        )
        self.consent(c, ConsentPurpose.KAKAO, True)
        self.consent(c, ConsentPurpose.PUSH, True)
        self.consent(c, ConsentPurpose.ADS, False)
        DeviceFactory(contact=c, active=False)
        self.order(c, kst(2026, 2, 5, 12, 0), "신발", 30000)
        self.order(c, kst(2026, 2, 20, 12, 0), "신발", 30000)
        self.order(c, kst(2026, 3, 1, 0, 30), "신발", 30000)
        CouponFactory(contact=c, code="OLD", issued_at=ago(days=10), expires_at=kst(2026, 2, 28, 12, 0))
        WishlistItemFactory(
            contact=c,
            product_id="P100",
            name="캐시미어 니트",
            properties={"category": "니트"},
            added_at=kst(2026, 2, 20, 12, 0),
        )

    def make_erased(self) -> None:
        c = self.contacts["erased"] = ContactFactory(
            name="",
            external_id=None,
            email="erased@example.com",
            phone="+821011110005",
            attributes={"city": "서울", "vip": True, "age": 50},
            created_at=kst(2026, 3, 1, 0, 10),
            tags=[self.vip_tag],
            lists=[self.spring],
            order_count=9,
            total_revenue=Decimal("900000"),
            last_order_at=ago(days=1),
            erased_at=ago(hours=1),
        )
        self.consent(c, ConsentPurpose.EMAIL, True)
        self.order(c, ago(days=1), "가방", 900000)
        self.event(c, PROMO, ago(days=1))
        self.cart(c, 10000, ago(minutes=5))
        CouponFactory(contact=c, code="ERASED", issued_at=ago(days=1), expires_at=kst(2026, 3, 1, 18, 0))
        WishlistItemFactory(contact=c, product_id="P100", properties={"category": "신발"})
        DeviceFactory(contact=c, active=True)

    def make_hana(self) -> None:
        c = self.contacts["hana"] = ContactFactory(
            name="하나",
            external_id="u-hana",
            email="hana@example.com",
            phone="+821011110006",
            attributes={},
            created_at=kst(2025, 3, 1, 9, 0),
            last_seen_at=ago(minutes=20),
            lists=[self.spring],
        )
        self.consent(c, ConsentPurpose.EMAIL, True)
        self.consent(c, ConsentPurpose.ADS, True)
        self.consent(c, ConsentPurpose.SMS, False)
        self.event(c, PROMO, kst(2026, 2, 21, 15, 0), path="/promo/weekend")
        self.event(c, "Product Added", ago(minutes=20), product_id="P3")
        self.cart(c, 30000, ago(minutes=20))
        CouponFactory(contact=c, code="FOREVER", issued_at=ago(days=3), expires_at=None)
        WishlistItemFactory(
            contact=c, product_id="P200", name="가죽 스니커즈", properties={"category": "신발"}, added_at=ago(days=5)
        )

    def make_yuna(self) -> None:
        c = self.contacts["yuna"] = ContactFactory(
            name="유나",
            external_id=None,
            email="yuna@example.com",
            phone="",
            attributes={"joined": "2026-03-01"},
            created_at=kst(2026, 3, 1, 0, 30),
            tags=[self.newbie_tag],
            order_count=2,
            total_revenue=Decimal("500000"),
            first_order_at=kst(2025, 11, 25, 10, 0),
            last_order_at=kst(2026, 1, 30, 12, 0),
        )
        self.order(c, kst(2025, 11, 25, 10, 0), "가방", 450000)
        self.order(c, kst(2026, 1, 30, 12, 0), "신발", 50000)
        CouponFactory(contact=c, code="EDGE1", issued_at=ago(days=3), expires_at=kst(2026, 3, 1, 0, 30))
        CouponFactory(contact=c, code="EDGE2", issued_at=ago(days=3), expires_at=kst(2026, 3, 2, 0, 30))

    def make_minho(self) -> None:
        c = self.contacts["minho"] = ContactFactory(
            name="민호",
            external_id="u-minho",
            email="Minho@example.com",
            phone="+821011110008",
            attributes={"score": 7.5, "visits": 10, "vip": True, "grade": "Gold"},
            created_at=kst(2026, 2, 1, 9, 0),
            last_seen_at=ago(days=40),
        )
        self.consent(c, ConsentPurpose.ADS_NIGHT, True)
        DeviceFactory(contact=c, active=True)
        DeviceFactory(contact=c, active=False)
        self.event(c, "Signed Up", kst(2026, 2, 1, 9, 0), method="kakao", channel="instagram")
        self.event(c, "Product Viewed", ago(days=40), product_id="P9")
