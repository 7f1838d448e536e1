"""Demo data, so that the admin shows something meaningful on first start (`make run` calls ``load_demo``).

A Korean online shop that also sells an online course, built from the scenarios in the seed documents: sign-ups with a
welcome coupon, the weekly weekend promotion page ("주말 한정 할인", /promo/weekend), product views, carts and
abandoned checkouts (a reminder 30 minutes after leaving), wishlists (a message a day later), coupons expiring today,
orders and repeat orders, a lead form for the course, consent per channel with its history (some withdrawn, some
advertising consent older than two years, due for re-confirmation), app installs with push tokens; and the ready-made
segments of ``crm.segments.examples`` (created once by name, never overwritten).

Rules:

- **Deterministic.** Every contact is planned from its own seeded ``random.Random`` (``SEED`` + external ID), so
  contact ``demo-0042`` is the same person whether 50 or 5,000 contacts are loaded. Times are relative to ``now``.
- **Idempotent.** Contacts are keyed by external ID (``demo-0001``…). Everything that belongs to a contact (consent
  and its history, devices, events, cart, wishlist, coupons, orders, tags, list membership) is created together with
  the contact, so a contact that already exists is left exactly as it is (a marketer may have edited it) and a
  second run, on the same or a later day, creates nothing. Events carry a stable ``message_id`` per contact and index
  (``demo-0001-003``) on the ``demo`` source, and one already stored there is never stored again; coupon codes
  (``WELCOME-0001``) and order IDs (``ORD-0001-01``) are stable per contact too.
- **Consistent.** Commerce state is what the events imply: carts hold the products added since the last order,
  coupons are redeemed by the order that used them, a contact's order count, revenue and first/last order equal its
  Order rows, and first/last seen are its first and last event. Every Consent has a ConsentChange that set it.
- **Set-based.** Rows are written with ``bulk_create`` in batches (``BATCH_SIZE``, fewer on SQLite, which allows 999
  parameters per statement): a few queries per table plus one per batch, never one per contact. 300 contacts load in
  well under a second on SQLite.

Other apps contribute their own demo data from their own ``<app>/demo.py``: a function decorated with
``@register_demo(labels=...)`` that takes ``now`` and returns how many rows of each kind it created. ``demo_load_all``
(what ``load_demo`` runs) loads the contacts, then each app's loader in ``INSTALLED_APPS`` order (crm ← campaigns ←
journeys), so a loader can use the contacts and what the apps before it made. A loader follows the same rules:
deterministic, idempotent (a second run creates nothing), through the app's services.

The phone numbers are well-formed Korean mobile numbers generated from the contact's index; they may belong to real
people, so never send real messages to demo contacts (the emails are on the reserved example.* domains).
"""

from __future__ import annotations

import hashlib
import random
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules

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
    Segment,
    Source,
    Tag,
    WishlistItem,
)
from crm.segments.examples import EXAMPLES

SEED = "loop-crm-demo-v1"
DEMO_SOURCE_NAME = "demo"
EXTERNAL_ID_PREFIX = "demo-"
#: Rows per INSERT statement and ids per ``__in`` lookup: far below SQLite's and PostgreSQL's parameter limits.
BATCH_SIZE = 500
#: Events are generated over this period before ``now``.
ACTIVITY_WINDOW = timedelta(days=30)

TAG_VIP = "VIP"
TAG_NEWSLETTER = "뉴스레터"
TAG_COURSE = "강의 수강생"
DEMO_TAGS = (TAG_VIP, TAG_NEWSLETTER, TAG_COURSE)
DEMO_LIST_NAME = "성수 팝업스토어 방문 고객"
DEMO_LIST_DESCRIPTION = "성수 팝업스토어 현장에서 QR 코드로 수집한 연락처 (데모 데이터)."

#: The keys of the dict ``demo_load`` returns: how many rows of each kind it created.
CREATED_KEYS = (
    "sources",
    "contacts",
    "consents",
    "consent_changes",
    "devices",
    "events",
    "carts",
    "wishlist_items",
    "coupons",
    "orders",
    "tags",
    "contact_lists",
    "tag_assignments",
    "list_memberships",
    "segments",
)

# --- Event names (Segment's e-commerce spec where it has one) ----------------------------------------------------
SIGNED_UP = "Signed Up"
PROMOTION_VIEWED = "Promotion Viewed"
PRODUCT_VIEWED = "Product Viewed"
PRODUCT_ADDED = "Product Added"
CHECKOUT_STARTED = "Checkout Started"
ORDER_COMPLETED = "Order Completed"
COUPON_ISSUED = "Coupon Issued"
COUPON_REDEEMED = "Coupon Redeemed"
WISHLIST_ADDED = "Product Added to Wishlist"
LEAD_FORM_SUBMITTED = "Lead Form Submitted"

PROMO_PAGE_NAME = "주말 한정 할인"
PROMO_PATH = "/promo/weekend"
PROMO_ID = "weekend-sale"
SHOP_URL = "https://shop.example.com"
LEAD_FORM = {"form_id": "course-waitlist", "form_name": "노코드 마케팅 자동화 강의 사전 신청"}
FREE_SHIPPING_FROM = 50_000
SHIPPING_FEE = 3_000


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    price: int  # KRW, an integer
    category: str

    def properties(self, quantity: int = 1) -> dict[str, Any]:
        """The product as Segment's e-commerce spec puts it in event properties."""
        return {
            "product_id": self.product_id,
            "sku": self.product_id,
            "name": self.name,
            "price": self.price,
            "quantity": quantity,
            "category": self.category,
        }

    def item(self, quantity: int = 1) -> dict[str, Any]:
        """The product as a cart or order line (the shape the commerce service stores)."""
        return {
            "product_id": self.product_id,
            "name": self.name,
            "quantity": quantity,
            "price": self.price,
            "category": self.category,
        }


CATALOG = (
    Product("P1001", "캐시미어 니트", 89_000, "의류"),
    Product("P1002", "울 블렌드 코트", 259_000, "의류"),
    Product("P1003", "와이드 데님 팬츠", 59_000, "의류"),
    Product("P1004", "린넨 셔츠", 49_000, "의류"),
    Product("P2001", "가죽 스니커즈", 129_000, "신발"),
    Product("P2002", "쿠셔닝 러닝화", 99_000, "신발"),
    Product("P3001", "캔버스 토트백", 39_000, "가방"),
    Product("P3002", "미니 크로스백", 79_000, "가방"),
    Product("P4001", "수분 크림", 32_000, "뷰티"),
    Product("P4002", "비타민C 세럼", 28_000, "뷰티"),
    Product("P4003", "선크림 SPF50+", 19_000, "뷰티"),
    Product("P5001", "핸드드립 커피 세트", 35_000, "리빙"),
    Product("P5002", "아로마 캔들", 22_000, "리빙"),
    Product("P5003", "호텔 수건 세트", 29_000, "리빙"),
    Product("C9001", "노코드 마케팅 자동화 온라인 강의", 199_000, "강의"),
)
PRODUCTS_BY_ID = {p.product_id: p for p in CATALOG}
CATEGORIES = ("의류", "신발", "가방", "뷰티", "리빙", "강의")
COURSE = PRODUCTS_BY_ID["C9001"]
CASHMERE_KNIT = PRODUCTS_BY_ID["P1001"]

# (family name, romanisation, relative frequency)
SURNAMES = (
    ("김", "kim", 21.5),
    ("이", "lee", 14.7),
    ("박", "park", 8.4),
    ("최", "choi", 4.7),
    ("정", "jung", 4.3),
    ("강", "kang", 2.3),
    ("조", "cho", 2.1),
    ("윤", "yoon", 2.1),
    ("장", "jang", 2.0),
    ("임", "lim", 1.7),
    ("한", "han", 1.5),
    ("오", "oh", 1.5),
    ("서", "seo", 1.4),
    ("신", "shin", 1.4),
    ("권", "kwon", 1.4),
    ("황", "hwang", 1.4),
    ("안", "ahn", 1.3),
    ("송", "song", 1.3),
    ("전", "jeon", 1.1),
    ("홍", "hong", 1.1),
    ("유", "yoo", 1.1),
    ("고", "ko", 0.9),
    ("문", "moon", 0.9),
    ("배", "bae", 0.8),
)
GIVEN_NAMES = {
    "female": (
        ("서연", "seoyeon"),
        ("지우", "jiwoo"),
        ("서윤", "seoyun"),
        ("하은", "haeun"),
        ("민서", "minseo"),
        ("지민", "jimin"),
        ("수아", "sua"),
        ("예린", "yerin"),
        ("채원", "chaewon"),
        ("유나", "yuna"),
        ("은지", "eunji"),
        ("수빈", "subin"),
        ("다은", "daeun"),
        ("혜진", "hyejin"),
        ("미영", "miyoung"),
        ("지현", "jihyun"),
        ("소영", "soyoung"),
        ("윤서", "yunseo"),
    ),
    "male": (
        ("민준", "minjun"),
        ("서준", "seojun"),
        ("도윤", "doyun"),
        ("예준", "yejun"),
        ("시우", "siwoo"),
        ("하준", "hajun"),
        ("지호", "jiho"),
        ("주원", "juwon"),
        ("현우", "hyunwoo"),
        ("준서", "junseo"),
        ("건우", "gunwoo"),
        ("우진", "woojin"),
        ("성민", "sungmin"),
        ("동현", "donghyun"),
        ("재원", "jaewon"),
        ("태현", "taehyun"),
        ("영호", "youngho"),
        ("상훈", "sanghoon"),
    ),
}
ENGLISH_NAMES = {
    "female": (("Grace", "Kim"), ("Emily", "Lee"), ("Sophia", "Jung"), ("Hannah", "Cho")),
    "male": (("Daniel", "Park"), ("Jason", "Choi"), ("Ryan", "Kang"), ("Andrew", "Yoon")),
}
ABROAD = (("America/New_York", "New York"), ("America/Los_Angeles", "Los Angeles"))
CITIES = (("서울", 40), ("부산", 8), ("인천", 7), ("수원", 6), ("성남", 5), ("고양", 5), ("대구", 5), ("대전", 4))
CITIES += (("광주", 3), ("울산", 2), ("제주", 2))
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
GRADES = (("VIP", 8), ("GOLD", 20), ("일반", 72))
ACQUISITION_CHANNELS = ("instagram", "naver_search", "kakao_channel", "youtube", "blog", "email_campaign", "friend")
SIGNUP_METHODS = ("email", "kakao", "naver", "apple")
USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S928N) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S918N) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 KAKAOTALK 10.8.5",
    "Mozilla/5.0 (Linux; Android 13; SM-A546N) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Mobile Safari/537.36 NAVER(inapp; search; 2000; 12.5.3)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Safari/605.1.15",
)
APP_ID = "com.example.loopshop"

#: The first contacts each tell one story of the seed documents, with exact times, so a demo can point at them.
SHOWCASE = {
    1: "vip",  # a VIP with several orders
    2: "abandoned_checkout",  # started checkout 40 minutes ago (reminder 30 minutes after leaving)
    3: "coupon_today",  # an unused coupon that expires at the end of today
    4: "wishlist",  # added to the wishlist 23 hours ago (message a day later)
    5: "new_signup",  # signed up 10 minutes ago (welcome message at once)
    6: "promo",  # viewed the weekend promotion on the latest weekend day
    7: "lead",  # submitted the course lead form, then bought the course
    8: "abroad",  # English, in New York
    9: "old_ads_consent",  # advertising consent given more than two years ago, never re-confirmed
    10: "withdrawn",  # withdrew SMS and advertising consent
}


# --- Planning: pure Python, no queries ------------------------------------------------------------------------------
@dataclass
class ContactPlan:
    """Everything the demo creates for one contact, before it is written."""

    external_id: str
    fields: dict[str, Any]
    consents: dict[str, tuple[bool, datetime, str]] = field(default_factory=dict)
    consent_changes: list[tuple[str, bool, datetime, str]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    cart: dict[str, Any] | None = None
    wishlist: list[dict[str, Any]] = field(default_factory=list)
    coupons: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    in_list: bool = False


def demo_external_id(index: int) -> str:
    return f"{EXTERNAL_ID_PREFIX}{index:04d}"


def demo_phone(index: int) -> str:
    """A distinct Korean mobile number (E.164) per index: a bijection of the index onto 010-2000-0000…010-9999-9999
    (the multiplier is coprime with 80,000,000)."""
    return f"+8210{(index * 37_249_813 + 12_345_679) % 80_000_000 + 20_000_000:08d}"


def _end_of_day(day: date, tz: zoneinfo.ZoneInfo) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=tz)


def _weighted(rng: random.Random, options: Iterable[tuple[Any, ...]]) -> tuple[Any, ...]:
    options = tuple(options)
    return rng.choices(options, weights=[o[-1] for o in options])[0]


class _Planner:
    """Plans one contact: identity from one seeded generator, activity from another, times relative to ``now``."""

    def __init__(self, index: int, now: datetime, tz: zoneinfo.ZoneInfo):
        self.index = index
        self.now = now
        self.tz = tz
        self.external_id = demo_external_id(index)
        self.story = SHOWCASE.get(index)
        # Identity never depends on ``now``: the same contact on every day. Activity is drawn from its own stream.
        self.ident = random.Random(f"{SEED}:{self.external_id}:identity")  # noqa: S311 (demo data, not security)
        self.rng = random.Random(f"{SEED}:{self.external_id}:activity")  # noqa: S311
        self.events: list[dict[str, Any]] = []
        self.coupons: dict[str, dict[str, Any]] = {}
        self.orders: list[dict[str, Any]] = []
        self.wishlist: dict[str, dict[str, Any]] = {}
        self.cart_plan: tuple[datetime, datetime | None] | None = None  # (last product added, checkout started)
        self.cart_products: list[Product] = []

    # --- identity ---------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        ident = self.ident
        gender = ident.choice(("female", "male"))
        english = self.story == "abroad" or (self.story is None and ident.random() < 0.04)
        surname, surname_roman, _freq = _weighted(ident, SURNAMES)
        given, given_roman = ident.choice(GIVEN_NAMES[gender])
        first, last = ident.choice(ENGLISH_NAMES[gender])
        abroad_tz, abroad_city = ABROAD[0] if self.story == "abroad" else ident.choice(ABROAD)
        city = _weighted(ident, CITIES)[0]
        domain = ident.choice(EMAIL_DOMAINS)
        birth = date(1965, 1, 1) + timedelta(days=ident.randrange(40 * 365))
        self.user_agent = ident.choice(USER_AGENTS)
        self.ip = f"203.0.113.{ident.randrange(1, 255)}"
        if english:
            name, local = f"{first} {last}", f"{first}.{last}{self.index}"
            self.locale, self.time_zone, city = "en-US", abroad_tz, abroad_city
        else:
            name, local = f"{surname}{given}", f"{given_roman}.{surname_roman}{self.index}"
            self.locale, self.time_zone = "ko-KR", ""
        return {
            "external_id": self.external_id,
            "name": name,
            "email": f"{local}@{domain}".lower(),
            "phone": demo_phone(self.index),
            "locale": self.locale,
            "time_zone": self.time_zone,
            "attributes": {"gender": gender, "birth_date": birth.isoformat(), "city": city},
        }

    # --- events -----------------------------------------------------------------------------------------------
    def context(self, page: dict[str, Any] | None = None) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "userAgent": self.user_agent,
            "ip": self.ip,
            "locale": self.locale,
            "timezone": self.time_zone or str(self.tz),
            "library": {"name": "analytics.js", "version": "4.1.0"},
        }
        if page:
            ctx["page"] = page
        return ctx

    def event(self, name: str, at: datetime, properties: dict[str, Any], *, kind: str = Event.Type.TRACK) -> None:
        at = min(at, self.now)
        page = None
        if kind == Event.Type.PAGE:
            page = {"path": properties["path"], "url": properties["url"], "title": properties.get("title", name)}
        self.events.append(
            {
                "type": kind,
                "name": name,
                "properties": properties,
                "context": self.context(page),
                "occurred_at": at,
                "received_at": min(at + timedelta(milliseconds=self.rng.randint(150, 2500)), self.now),
            }
        )

    def pick_products(self, interest: str, count: int) -> list[Product]:
        favourites = [p for p in CATALOG if p.category == interest and p is not COURSE] or list(CATALOG)
        others = [p for p in CATALOG if p is not COURSE]
        picked: list[Product] = []
        while len(picked) < count:
            product = self.rng.choice(favourites if self.rng.random() < 0.6 else others)
            if product not in picked:
                picked.append(product)
        return picked

    def view(self, product: Product, at: datetime) -> None:
        props = {**product.properties(), "url": f"{SHOP_URL}/products/{product.product_id}"}
        del props["quantity"]
        self.event(PRODUCT_VIEWED, at, props)

    def issue_coupon(self, code: str, at: datetime, expires_at: datetime, *, amount: int = 0, percent: int = 0) -> None:
        name = f"{amount:,}원 할인" if amount else f"{percent}% 할인"
        self.coupons[code] = {
            "code": code,
            "discount_amount": Decimal(amount) if amount else None,
            "discount_percent": Decimal(percent) if percent else None,
            "issued_at": at,
            "expires_at": expires_at,
            "redeemed_at": None,
        }
        props: dict[str, Any] = {"code": code, "coupon_name": name, "expires_at": expires_at.isoformat()}
        props.update({"discount": amount} if amount else {"discount_percent": percent})
        self.event(COUPON_ISSUED, at, props)

    def usable_coupon(self, at: datetime) -> dict[str, Any] | None:
        for coupon in self.coupons.values():
            if coupon["redeemed_at"] is None and coupon["issued_at"] < at <= coupon["expires_at"]:
                return coupon
        return None

    def order(self, at: datetime, products: list[Product], *, use_coupon: bool) -> None:
        """A whole purchase: views, cart adds, checkout, coupon, order, at ``at`` and the minutes after."""
        lines = [(p, 2 if self.rng.random() < 0.1 and p is not COURSE else 1) for p in products]
        for n, (product, quantity) in enumerate(lines):
            self.view(product, at + timedelta(minutes=n * 2))
            self.event(PRODUCT_ADDED, at + timedelta(minutes=n * 2 + 1), product.properties(quantity))
        subtotal = sum(p.price * q for p, q in lines)
        order_id = f"ORD-{self.index:04d}-{len(self.orders) + 1:02d}"
        checkout_at = at + timedelta(minutes=len(lines) * 2 + 2)
        placed_at = checkout_at + timedelta(minutes=self.rng.randint(2, 6))
        products_props = [p.properties(q) for p, q in lines]
        self.event(
            CHECKOUT_STARTED,
            checkout_at,
            {"order_id": order_id, "value": subtotal, "currency": "KRW", "products": products_props},
        )
        coupon = self.usable_coupon(placed_at) if use_coupon else None
        discount = 0
        if coupon is not None:
            if coupon["discount_amount"] is not None:
                discount = min(int(coupon["discount_amount"]), subtotal)
            else:
                discount = subtotal * int(coupon["discount_percent"]) // 100 // 100 * 100
            coupon["redeemed_at"] = placed_at - timedelta(seconds=1)
            self.event(
                COUPON_REDEEMED,
                coupon["redeemed_at"],
                {"code": coupon["code"], "order_id": order_id, "discount": discount},
            )
        revenue = subtotal - discount
        shipping = 0 if revenue >= FREE_SHIPPING_FROM else SHIPPING_FEE
        total = revenue + shipping
        props: dict[str, Any] = {
            "order_id": order_id,
            "total": total,
            "revenue": revenue,
            "shipping": shipping,
            "discount": discount,
            "currency": "KRW",
            "products": products_props,
        }
        if coupon is not None:
            props["coupon"] = coupon["code"]
        self.event(ORDER_COMPLETED, placed_at, props)
        self.orders.append(
            {
                "order_id": order_id,
                "total": Decimal(total),
                "currency": "KRW",
                "items": [p.item(q) for p, q in lines],
                "placed_at": placed_at,
            }
        )

    def promo_visit(self, at: datetime) -> None:
        self.event(
            PROMOTION_VIEWED,
            at,
            {"promotion_id": PROMO_ID, "name": PROMO_PAGE_NAME, "creative": "main_banner", "position": "home_top"},
        )
        page = {
            "name": PROMO_PAGE_NAME,
            "path": PROMO_PATH,
            "url": f"{SHOP_URL}{PROMO_PATH}",
            "title": f"{PROMO_PAGE_NAME} | 루프샵",
            "category": "promotion",
        }
        self.event(PROMO_PAGE_NAME, at + timedelta(seconds=20), page, kind=Event.Type.PAGE)

    def weekend_moments(self, start: datetime, *, latest_only: bool = False) -> list[datetime]:
        """Times on weekend days (the weekend promotion runs Saturday and Sunday) after ``start``, before now."""
        today = timezone.localtime(self.now, self.tz).date()
        moments = []
        for day in (today - timedelta(days=d) for d in range(31)):
            if day.weekday() < 5:
                continue
            at = datetime.combine(day, time(self.rng.randint(10, 21), self.rng.randint(0, 59)), tzinfo=self.tz)
            if at >= self.now - timedelta(minutes=2):  # later today: make it a little while ago instead
                at = self.now - timedelta(minutes=self.rng.randint(3, 90))
            if start < at and timezone.localtime(at, self.tz).date() == day:
                moments.append(at)
        if latest_only:
            return moments[:1]
        latest = moments[:8]  # the last four weekends (the promotion runs every weekend)
        return self.rng.sample(latest, k=min(len(latest), self.rng.choice((1, 1, 2))))

    # --- the whole contact ------------------------------------------------------------------------------------
    def plan(self) -> ContactPlan:
        now, rng, story = self.now, self.rng, self.story
        fields = self.identity()
        attributes = fields["attributes"]

        grade = "VIP" if story == "vip" else _weighted(rng, GRADES)[0]
        interest = "강의" if story == "lead" else rng.choice(CATEGORIES)
        app_installed = story in ("vip", "abandoned_checkout") or rng.random() < 0.5
        points = {"VIP": rng.randint(50, 300), "GOLD": rng.randint(10, 80), "일반": rng.randint(0, 30)}[grade] * 100
        attributes.update(
            {
                "membership_grade": grade,
                "interest_category": interest,
                "points": points,
                "app_installed": app_installed,
                "acquisition_channel": rng.choice(ACQUISITION_CHANNELS),
            }
        )
        new_signup = rng.random() < 0.3
        dormant = rng.random() < 0.08
        if story == "new_signup":
            created = now - timedelta(minutes=10)
        elif story == "old_ads_consent":
            created = now - timedelta(days=2 * 365 + 100)
        elif story is None and new_signup:
            created = now - timedelta(seconds=rng.randint(3600, int(ACTIVITY_WINDOW.total_seconds()) - 3600))
        else:
            created = now - timedelta(days=rng.randint(45, 3 * 365), seconds=rng.randint(0, 86_399))
        dormant = dormant and story is None and created < now - ACTIVITY_WINDOW
        start = max(created, now - ACTIVITY_WINDOW)

        if start == created:
            self.event(
                SIGNED_UP, created, {"method": rng.choice(SIGNUP_METHODS), "channel": attributes["acquisition_channel"]}
            )
            expires = _end_of_day(timezone.localtime(created, self.tz).date() + timedelta(days=14), self.tz)
            self.issue_coupon(f"WELCOME-{self.index:04d}", created + timedelta(seconds=5), expires, amount=5000)

        if not dormant:
            self.plan_activity(start, grade, interest)

        # Coupons about to expire, unused: "쿠폰 미사용 고객 → 쿠폰 만료 당일 메시지 발송".
        if story == "coupon_today" or (story is None and created < now - timedelta(days=10) and rng.random() < 0.12):
            days_left = 0 if story == "coupon_today" else rng.choice((0, 0, 1, 2, 3, 5))
            issued = now - timedelta(days=7) if story == "coupon_today" else now - timedelta(days=rng.randint(3, 9))
            expires = _end_of_day(timezone.localtime(now, self.tz).date() + timedelta(days=days_left), self.tz)
            self.issue_coupon(f"COMEBACK-{self.index:04d}", issued, expires, percent=10)

        return self.finish(fields, created, grade, app_installed, dormant)

    def plan_activity(self, start: datetime, grade: str, interest: str) -> None:
        now, rng, story = self.now, self.rng, self.story
        # The open cart, if any, comes last: it holds what was added after the last order.
        if story == "abandoned_checkout":
            self.cart_plan = (now - timedelta(minutes=50), now - timedelta(minutes=40))
        elif story is None:
            roll = rng.random()
            if roll < 0.05:
                checkout = now - timedelta(minutes=rng.randint(31, 58))
                self.cart_plan = (checkout - timedelta(minutes=rng.randint(3, 15)), checkout)
            elif roll < 0.12:
                checkout = now - timedelta(minutes=rng.randint(90, 20 * 60))
                self.cart_plan = (checkout - timedelta(minutes=rng.randint(3, 15)), checkout)
            elif roll < 0.22:
                self.cart_plan = (now - timedelta(minutes=rng.randint(60, 4 * 24 * 60)), None)
        if self.cart_plan is not None and self.cart_plan[0] - timedelta(minutes=10) <= start:
            self.cart_plan = None
        end = self.cart_plan[0] - timedelta(hours=1) if self.cart_plan else now - timedelta(minutes=30)

        # Browsing and buying sessions, in time order.
        sessions = rng.randint(1, 5) + (2 if grade == "VIP" else 0)
        sessions = max(sessions, 6) if story == "vip" else sessions
        span = (end - start).total_seconds()
        times = (
            sorted(start + timedelta(seconds=rng.uniform(0.05, 1) * span) for _ in range(sessions))
            if span > 7200
            else []
        )
        buy_rate = {"VIP": 0.95, "GOLD": 0.7, "일반": 0.3}[grade]
        orders = 0
        if times and (story in ("vip", "lead") or rng.random() < buy_rate):
            orders = {"VIP": rng.randint(2, 4), "GOLD": rng.randint(1, 3), "일반": rng.randint(1, 2)}[grade]
            orders = 4 if story == "vip" else 1 if story == "lead" else orders
        order_sessions = set(rng.sample(range(len(times)), k=min(orders, len(times))))
        lead_at = None
        if story == "lead":  # the lead form six days ago, the course bought three days ago
            lead_at = now - timedelta(days=6)
            times = [t for t in times if t < lead_at - timedelta(hours=1)] + [now - timedelta(days=3)]
            order_sessions = {len(times) - 1}
        elif story is None and rng.random() < 0.06 and span > 7200:
            lead_at = start + timedelta(seconds=rng.uniform(0, span))
        if lead_at is not None:
            self.event(LEAD_FORM_SUBMITTED, lead_at, {**LEAD_FORM, "interest": "CRM 자동화", "utm_source": "blog"})

        for n, at in enumerate(times):
            if n in order_sessions:
                wants_course = interest == "강의" and (story == "lead" or rng.random() < 0.5)
                products = [COURSE] if wants_course else self.pick_products(interest, rng.choice((1, 1, 2, 3)))
                self.order(at, products, use_coupon=rng.random() < 0.7)
                if len(self.orders) == 1 and at + timedelta(days=1) < now:
                    expires = _end_of_day(timezone.localtime(at, self.tz).date() + timedelta(days=31), self.tz)
                    self.issue_coupon(f"THANKS-{self.index:04d}", at + timedelta(days=1), expires, percent=10)
            else:
                for k, product in enumerate(self.pick_products(interest, rng.randint(1, 4))):
                    self.view(product, at + timedelta(minutes=k * 3))
                    if rng.random() < 0.08:
                        self.add_to_wishlist(product, at + timedelta(minutes=k * 3 + 1))

        if story == "wishlist":
            self.view(CASHMERE_KNIT, now - timedelta(hours=23, minutes=2))
            self.add_to_wishlist(CASHMERE_KNIT, now - timedelta(hours=23))

        promo = self.weekend_moments(start, latest_only=True) if story == "promo" else []
        if story is None and rng.random() < 0.6:  # the weekly promotion is the shop's main traffic driver
            promo = self.weekend_moments(start)
        for at in promo:
            self.promo_visit(at)
            if rng.random() < 0.5:
                self.view(rng.choice(CATALOG[:8]), at + timedelta(minutes=1))

        if self.cart_plan is not None:
            added_at, checkout_at = self.cart_plan
            products = (
                [CASHMERE_KNIT] if story == "abandoned_checkout" else self.pick_products(interest, rng.randint(1, 2))
            )
            for k, product in enumerate(products):
                self.view(product, added_at - timedelta(minutes=2 - k))
                self.event(PRODUCT_ADDED, added_at - timedelta(seconds=len(products) - 1 - k), product.properties())
            if checkout_at is not None:
                value = sum(p.price for p in products)
                props = {"value": value, "currency": "KRW", "products": [p.properties() for p in products]}
                self.event(CHECKOUT_STARTED, checkout_at, props)
            self.cart_products = products

    def add_to_wishlist(self, product: Product, at: datetime) -> None:
        if product.product_id in self.wishlist:
            return
        props = {**product.properties(), "wishlist_id": f"wl-{self.external_id}", "wishlist_name": "찜 목록"}
        del props["quantity"]
        self.event(WISHLIST_ADDED, at, props)
        self.wishlist[product.product_id] = {
            "product_id": product.product_id,
            "name": product.name,
            "properties": props,
            "added_at": min(at, self.now),
        }

    def consents(self, plan: ContactPlan, created: datetime, app_installed: bool) -> None:
        rng, now, story = self.rng, self.now, self.story
        granted = {
            ConsentPurpose.EMAIL: rng.random() < 0.85,
            ConsentPurpose.SMS: rng.random() < 0.75,
            ConsentPurpose.KAKAO: rng.random() < 0.65,
            ConsentPurpose.ADS: story in ("old_ads_consent", "withdrawn") or rng.random() < 0.55,
        }
        if story == "withdrawn":
            granted[ConsentPurpose.SMS] = True
        granted[ConsentPurpose.ADS_NIGHT] = granted[ConsentPurpose.ADS] and rng.random() < 0.35
        if app_installed:
            granted[ConsentPurpose.PUSH] = rng.random() < 0.85
        for purpose in ConsentPurpose.values:
            if purpose not in granted:
                continue
            changes = [(purpose, granted[purpose], created, "signup")]
            withdraw = story == "withdrawn" and purpose in (ConsentPurpose.SMS, ConsentPurpose.ADS)
            withdraw = withdraw or (story is None and granted[purpose] and rng.random() < 0.08)
            ads = plan.consents.get(ConsentPurpose.ADS)
            if purpose == ConsentPurpose.ADS_NIGHT and granted[purpose] and ads and not ads[0]:
                # Withdrawing advertising consent withdraws the night-time consent with it.
                changes.append((purpose, False, ads[1], ads[2]))
            elif withdraw:
                at = (
                    now - timedelta(days=2)
                    if story == "withdrawn"
                    else created + (now - created) * rng.uniform(0.2, 0.95)
                )
                changes.append((purpose, False, at, rng.choice(("unsubscribe_link", "preference_center", "080_call"))))
            elif (
                purpose == ConsentPurpose.ADS
                and granted[purpose]
                and story is None
                and created < now - timedelta(days=2 * 365)
                and rng.random() < 0.5
            ):
                # Re-confirmed within the last year after the two-year notice; the others are due for it now.
                changes.append((purpose, True, now - timedelta(days=rng.randint(20, 300)), "reconfirmation"))
            plan.consent_changes.extend(changes)
            purpose_, state, at, source = changes[-1]
            plan.consents[purpose_] = (state, at, source)

    def finish(
        self, fields: dict[str, Any], created: datetime, grade: str, app_installed: bool, dormant: bool
    ) -> ContactPlan:
        rng = self.rng
        self.events.sort(key=lambda e: e["occurred_at"])
        for n, event in enumerate(self.events, start=1):
            event["message_id"] = f"{self.external_id}-{n:03d}"
        orders = self.orders
        fields.update(
            {
                "created_at": created,
                "first_seen_at": self.events[0]["occurred_at"] if self.events else None,
                "last_seen_at": self.events[-1]["occurred_at"] if self.events else None,
                "order_count": len(orders),
                "total_revenue": sum((o["total"] for o in orders), Decimal("0")),
                "first_order_at": min((o["placed_at"] for o in orders), default=None),
                "last_order_at": max((o["placed_at"] for o in orders), default=None),
            }
        )
        plan = ContactPlan(external_id=self.external_id, fields=fields, events=self.events, orders=orders)
        plan.coupons = list(self.coupons.values())
        plan.wishlist = list(self.wishlist.values())

        if self.cart_plan is not None:
            added_at, checkout_at = self.cart_plan
            items = [p.item() for p in self.cart_products]
            plan.cart = {
                "items": items,
                "value": Decimal(sum(p.price for p in self.cart_products)),
                "updated_at": added_at,
                "checkout_started_at": checkout_at,
            }
        elif orders:  # emptied by the last order
            plan.cart = {
                "items": [],
                "value": Decimal("0"),
                "updated_at": orders[-1]["placed_at"],
                "checkout_started_at": None,
            }

        self.consents(plan, created, app_installed)
        if app_installed:
            last_seen = fields["last_seen_at"] or created
            platform = Device.Platform.IOS if "iPhone" in self.user_agent else Device.Platform.ANDROID
            digest = hashlib.sha256(f"{SEED}:{self.external_id}:push".encode()).hexdigest()
            token = digest if platform == Device.Platform.IOS else f"{digest[:22]}:APA91b{digest[22:]}{digest[:40]}"
            inactive = dormant and rng.random() < 0.5
            plan.devices.append(
                {
                    "platform": platform,
                    "token": token,
                    "app_id": APP_ID,
                    "active": not inactive,
                    "deactivated_reason": "Unregistered" if inactive else "",
                    "created_at": created,
                    "last_seen_at": last_seen,
                }
            )

        if grade == "VIP":
            plan.tags.add(TAG_VIP)
        if plan.consents.get(ConsentPurpose.EMAIL, (False,))[0] and rng.random() < 0.4:
            plan.tags.add(TAG_NEWSLETTER)
        if any(item["product_id"] == COURSE.product_id for o in orders for item in o["items"]):
            plan.tags.add(TAG_COURSE)
        plan.in_list = self.index % 9 == 4 or self.story == "vip"
        return plan


def demo_plan(*, contacts: int, now: datetime) -> list[ContactPlan]:
    """The demo contacts ``demo-0001``…, planned in memory (no queries)."""
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    return [_Planner(index, now, tz).plan() for index in range(1, contacts + 1)]


# --- Writing ------------------------------------------------------------------------------------------------------
def _chunks(values: list[Any], size: int = BATCH_SIZE) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _values_in(queryset: models.QuerySet, field_name: str, values: list[Any], *fields: str) -> list[Any]:
    """``queryset.filter(<field>__in=values).values_list(*fields)``, in batches of BATCH_SIZE values."""
    rows: list[Any] = []
    for chunk in _chunks(values):
        rows.extend(
            queryset.filter(**{f"{field_name}__in": chunk}).values_list(*fields or (field_name,), flat=not fields)
        )
    return rows


def _bulk(model: type[models.Model], objects: list[models.Model], **kwargs: Any) -> int:
    model.objects.bulk_create(objects, batch_size=BATCH_SIZE, **kwargs)
    return len(objects)


@transaction.atomic
def demo_load(*, contacts: int = 300, now: datetime | None = None) -> dict[str, int]:
    """Create the demo contacts ``demo-0001``…``demo-<contacts>`` and everything they did; skip those that exist.

    Returns how many rows of each kind (``CREATED_KEYS``) were created: all zero when the demo is already loaded.
    """
    if contacts < 0:
        raise ValueError("contacts must not be negative")
    now = now or timezone.now()
    if timezone.is_naive(now):
        raise ValueError("now must be an aware datetime")
    created = dict.fromkeys(CREATED_KEYS, 0)

    source, made = Source.objects.get_or_create(name=DEMO_SOURCE_NAME, defaults={"kind": Source.Kind.SHOP})
    created["sources"] += made
    tags = {}
    for name in DEMO_TAGS:
        tags[name], made = Tag.objects.get_or_create(name=name)
        created["tags"] += made
    contact_list, made = ContactList.objects.get_or_create(
        name=DEMO_LIST_NAME, defaults={"description": DEMO_LIST_DESCRIPTION}
    )
    created["contact_lists"] += made
    for name, description, rules in EXAMPLES:
        _segment, made = Segment.objects.get_or_create(name=name, defaults={"description": description, "rules": rules})
        created["segments"] += made

    wanted = [demo_external_id(i) for i in range(1, contacts + 1)]
    existing = set(_values_in(Contact.objects.all(), "external_id", wanted))
    if len(existing) == len(wanted):
        return created
    plans = [plan for plan in demo_plan(contacts=contacts, now=now) if plan.external_id not in existing]

    created["contacts"] = _bulk(Contact, [Contact(**plan.fields) for plan in plans])
    ids = dict(_values_in(Contact.objects.all(), "external_id", [p.external_id for p in plans], "external_id", "id"))

    consents, changes, devices, carts, wishes, coupons, orders = [], [], [], [], [], [], []
    tag_links, list_links = [], []
    events: list[Event] = []
    for plan in plans:
        cid = ids[plan.external_id]
        for purpose, (granted, at, origin) in plan.consents.items():
            consents.append(Consent(contact_id=cid, purpose=purpose, granted=granted, changed_at=at, source=origin))
        for purpose, granted, at, origin in plan.consent_changes:
            changes.append(
                ConsentChange(
                    contact_id=cid, purpose=purpose, granted=granted, changed_at=at, source=origin, recorded_at=at
                )
            )
        devices.extend(Device(contact_id=cid, **row) for row in plan.devices)
        events.extend(Event(contact_id=cid, source_id=source.pk, **row) for row in plan.events)
        if plan.cart is not None:
            carts.append(Cart(contact_id=cid, currency="KRW", **plan.cart))
        wishes.extend(WishlistItem(contact_id=cid, **row) for row in plan.wishlist)
        coupons.extend(Coupon(contact_id=cid, **row) for row in plan.coupons)
        orders.extend(Order(contact_id=cid, **row) for row in plan.orders)
        tag_links.extend(Contact.tags.through(contact_id=cid, tag_id=tags[name].pk) for name in sorted(plan.tags))
        if plan.in_list:
            list_links.append(Contact.lists.through(contact_id=cid, contactlist_id=contact_list.pk))

    # A message ID already stored on the demo source (sent through the API, say) is never stored twice.
    taken = set(_values_in(Event.objects.filter(source=source), "message_id", [e.message_id for e in events]))
    taken_tokens = set(_values_in(Device.objects.all(), "token", [d.token for d in devices]))
    created["consents"] = _bulk(Consent, consents)
    created["consent_changes"] = _bulk(ConsentChange, changes)
    created["devices"] = _bulk(Device, [d for d in devices if d.token not in taken_tokens])
    created["events"] = _bulk(Event, [e for e in events if e.message_id not in taken])
    created["carts"] = _bulk(Cart, carts)
    created["wishlist_items"] = _bulk(WishlistItem, wishes)
    created["coupons"] = _bulk(Coupon, coupons)
    created["orders"] = _bulk(Order, orders)
    created["tag_assignments"] = _bulk(Contact.tags.through, tag_links)
    created["list_memberships"] = _bulk(Contact.lists.through, list_links)
    return created


SUMMARY_LABELS = {
    "sources": ("source", "sources"),
    "contacts": ("contact", "contacts"),
    "consents": ("consent", "consents"),
    "consent_changes": ("consent change", "consent changes"),
    "devices": ("device", "devices"),
    "events": ("event", "events"),
    "carts": ("cart", "carts"),
    "wishlist_items": ("wishlist item", "wishlist items"),
    "coupons": ("coupon", "coupons"),
    "orders": ("order", "orders"),
    "tags": ("tag", "tags"),
    "contact_lists": ("static list", "static lists"),
    "tag_assignments": ("tag assignment", "tag assignments"),
    "list_memberships": ("list membership", "list memberships"),
    "segments": ("segment", "segments"),
}


# --- Other apps' demo data ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoLoader:
    """An app's contribution to the demo: ``load(now=...)`` returns ``{kind: rows created}``; ``labels`` names each
    kind for the summary as (singular, plural)."""

    app_label: str
    load: Callable[..., dict[str, int]]
    labels: dict[str, tuple[str, str]]


_LOADERS: dict[str, DemoLoader] = {}


def register_demo(*, labels: dict[str, tuple[str, str]]) -> Callable:
    """Decorator for an app's demo loader, in the app's ``demo.py`` (found by ``demo_loaders``)::

    @register_demo(labels={"campaigns": ("campaign", "campaigns")})
    def load(*, now: datetime) -> dict[str, int]: ...
    """

    def decorator(load: Callable[..., dict[str, int]]) -> Callable[..., dict[str, int]]:
        config = apps.get_containing_app_config(load.__module__)
        if config is None:
            raise ValueError(f"{load.__module__} is not in an installed app")
        _LOADERS[config.label] = DemoLoader(app_label=config.label, load=load, labels=labels)
        return load

    return decorator


def demo_loaders() -> list[DemoLoader]:
    """The apps' demo loaders (every installed app's ``demo`` module is imported), in ``INSTALLED_APPS`` order."""
    autodiscover_modules("demo")
    order = [config.label for config in apps.get_app_configs()]
    return sorted(_LOADERS.values(), key=lambda loader: order.index(loader.app_label))


def demo_load_all(*, contacts: int = 300, now: datetime | None = None) -> dict[str, int]:
    """The contacts (``demo_load``), then every app's demo data at the same ``now``. Returns the rows created per
    kind, all zero when everything is already loaded."""
    now = now or timezone.now()
    created = demo_load(contacts=contacts, now=now)
    for loader in demo_loaders():
        for key, count in loader.load(now=now).items():
            created[key] = created.get(key, 0) + count
    return created


def demo_summary(created: dict[str, int]) -> str:
    """One line for people: what ``demo_load_all`` created, or that it created nothing."""
    if not any(created.values()):
        return "Demo data is already loaded: nothing created."
    labels = dict(SUMMARY_LABELS)
    for loader in _LOADERS.values():
        labels.update(loader.labels)
    parts = [f"{n:,} {labels.get(key, (key, key))[n != 1]}" for key, n in created.items() if n]
    return "Demo data loaded: " + ", ".join(parts) + "."
