"""The crm admin: every page renders, the contact page shows the whole customer, lists stay cheap, history is locked."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm.admin import RECENT_EVENTS, items_table, money, phone_display
from crm.models import (
    ApiKey,
    Cart,
    ConsentChange,
    ConsentPurpose,
    Contact,
    ContactList,
    Coupon,
    Device,
    Event,
    Heartbeat,
    Order,
    RejectedMessage,
    Source,
    Tag,
    WishlistItem,
)
from crm.services.apikeys import api_key_create
from crm.tests.factories import (
    CartFactory,
    ConsentChangeFactory,
    ConsentFactory,
    ContactFactory,
    ContactListFactory,
    CouponFactory,
    DeviceFactory,
    EventFactory,
    OrderFactory,
    SourceFactory,
    TagFactory,
    WishlistItemFactory,
)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """The admin_user fixture hashes a password for every test: a fast hasher keeps these tests quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


#: The crm models whose admin these tests cover in detail (the ``rows`` fixture makes some of each).
CRM_MODELS = [
    Contact,
    Event,
    Tag,
    ContactList,
    Coupon,
    Order,
    Cart,
    WishlistItem,
    Device,
    ConsentChange,
    Source,
    ApiKey,
    RejectedMessage,
    Heartbeat,
]


def admin_url(model_or_obj, view: str, *args) -> str:
    opts = model_or_obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def make_customer(source: Source, *, events: int = 3, name: str = "김민준") -> Contact:
    """One contact with a bit of everything: consent, cart, coupon, order, device, wishlist, tag, events."""
    tag = TagFactory()
    contact = ContactFactory(name=name, tags=[tag], attributes={"membership_grade": "VIP", "city": "서울"})
    ConsentFactory(contact=contact, purpose=ConsentPurpose.EMAIL, granted=True, history=True)
    ConsentFactory(contact=contact, purpose=ConsentPurpose.SMS, granted=False, history=True)
    CartFactory(
        contact=contact,
        items=[{"product_id": "P1001", "name": "캐시미어 니트", "quantity": 1, "price": 89000}],
        value=Decimal("89000"),
    )
    CouponFactory(contact=contact, code=f"WELCOME-{contact.pk}")
    OrderFactory(contact=contact, order_id=f"ORDER-{contact.pk}")
    DeviceFactory(contact=contact)
    WishlistItemFactory(contact=contact, name="가죽 스니커즈")
    now = timezone.now()
    for index in range(events):
        EventFactory(
            contact=contact,
            source=source,
            name=f"Event {index:02d}",
            occurred_at=now - timedelta(minutes=index),
            properties={"product_id": f"P{index}"},
        )
    return contact


@pytest.fixture
def source(db):
    return SourceFactory(name="shop")


@pytest.fixture
def rows(source, admin_user):
    """A few rows of every crm model that has an admin page."""
    customers = [make_customer(source, name=name) for name in ("김민준", "이서연", "박지훈")]
    ContactListFactory()
    api_key_create(source=source, name="shop backend")
    Heartbeat.objects.create(name="beat", beat_at=timezone.now(), count=3)
    RejectedMessage.objects.create(source=source, endpoint="track", index=0, payload={"type": "track"}, errors={})
    return customers


# --- Every page --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m._meta.label_lower)
def test_changelist_add_and_change_pages_render(admin_client, rows, model):
    model_admin = admin.site._registry[model]

    response = admin_client.get(admin_url(model, "changelist"))
    assert response.status_code == 200

    obj = model._default_manager.first()
    if obj is not None:
        assert admin_client.get(admin_url(model, "change", obj.pk)).status_code == 200
    if model_admin.has_add_permission(response.wsgi_request):
        assert admin_client.get(admin_url(model, "add")).status_code == 200
    else:
        assert admin_client.get(admin_url(model, "add")).status_code == 403


@pytest.mark.parametrize("model", CRM_MODELS, ids=lambda m: m._meta.label_lower)
def test_crm_lists_show_their_rows_and_search_and_filter(admin_client, rows, model):
    model_admin = admin.site._registry[model]
    assert model._default_manager.exists()

    response = admin_client.get(admin_url(model, "changelist"))
    changelist = response.context["cl"]
    assert len(changelist.result_list) == model._default_manager.count()
    assert model_admin.show_full_result_count is False
    # Every list of a growing table can be filtered (tags and heartbeats are a handful of rows).
    assert model_admin.list_filter or model in {Heartbeat, Tag}
    if model_admin.search_fields:
        assert admin_client.get(admin_url(model, "changelist"), {"q": "김민준"}).status_code == 200


# --- The contact page --------------------------------------------------------------------------------------------


def test_contact_page_shows_profile_consent_cart_coupons_orders_and_recent_events(admin_client, source):
    contact = make_customer(source, events=RECENT_EVENTS + 5)

    response = admin_client.get(admin_url(Contact, "change", contact.pk))

    assert response.status_code == 200
    html = response.content.decode()
    for fieldset in ("프로필", "속성", "주문 이력"):
        assert f">{fieldset}</h2>" in html
    assert "membership_grade" in html
    assert "VIP" in html
    # consent (read-only), cart (read-only), coupons, orders, devices, wishlist
    assert "수신 동의 (현재)" in html
    assert "이메일" in html
    assert "SMS/LMS" in html
    assert "캐시미어 니트" in html
    assert "₩89,000" in html
    assert f"WELCOME-{contact.pk}" in html
    assert f"ORDER-{contact.pk}" in html
    assert "test-push-token" in html
    assert "가죽 스니커즈" in html
    # the newest 20 events, newest first, and a link to all of them
    events = response.context["recent_events"]
    assert [event.name for event in events] == [f"Event {index:02d}" for index in range(RECENT_EVENTS)]
    assert "Event 00" in html
    assert f"Event {RECENT_EVENTS - 1:02d}" in html
    assert f"Event {RECENT_EVENTS:02d}" not in html
    assert f"{admin_url(Event, 'changelist')}?contact__id__exact={contact.pk}" in html
    # inlines are read-only: no inline form fields for consent, cart, coupons, orders
    assert 'name="consents-0-granted"' not in html
    assert 'name="orders-0-total"' not in html


def test_contact_page_queries_do_not_depend_on_the_number_of_events(admin_client, source):
    few = make_customer(source, events=2)
    many = make_customer(source, events=40)

    with CaptureQueriesContext(connection) as few_queries:
        admin_client.get(admin_url(Contact, "change", few.pk))
    with CaptureQueriesContext(connection) as many_queries:
        admin_client.get(admin_url(Contact, "change", many.pk))

    assert len(many_queries) == len(few_queries)


def test_all_events_link_filters_the_event_list_by_contact(admin_client, source):
    contact = make_customer(source, events=3)
    make_customer(source, events=2)

    response = admin_client.get(admin_url(Event, "changelist"), {"contact__id__exact": contact.pk})

    assert response.status_code == 200
    assert {event.contact_id for event in response.context["cl"].result_list} == {contact.pk}


class FormFields(HTMLParser):
    """The values a browser would submit from one form of a page (inputs, selects, textareas)."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id, self.inside, self.data = form_id, False, {}
        self.select = self.textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("id") == self.form_id
        if not self.inside or (not attrs.get("name") and tag != "option"):
            return
        if tag == "input" and attrs.get("type") not in {"submit", "button", "checkbox", "file"}:
            self.data[attrs["name"]] = attrs.get("value", "")
        elif tag == "input" and attrs.get("type") == "checkbox" and "checked" in attrs:
            self.data[attrs["name"]] = attrs.get("value", "on")
        elif tag == "select":
            self.select = attrs["name"]
            self.data.setdefault(self.select, [])
        elif tag == "option" and self.select and "selected" in attrs:
            self.data[self.select].append(attrs.get("value", ""))
        elif tag == "textarea":
            self.textarea = attrs["name"]
            self.data[self.textarea] = ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None

    def handle_data(self, data):
        if self.textarea:
            self.data[self.textarea] += data


def form_data(html: str, form_id: str) -> dict:
    parser = FormFields(form_id)
    parser.feed(html)
    return parser.data


def test_editing_a_contact_stores_the_phone_in_e164_and_keeps_tags(admin_client, source):
    contact = make_customer(source)
    url = admin_url(Contact, "change", contact.pk)
    data = form_data(admin_client.get(url).content.decode(), "contact_form")
    data.update({"name": "김민준 (VIP)", "phone": "010-2222-3333", "_save": "저장"})

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    contact.refresh_from_db()
    assert contact.name == "김민준 (VIP)"
    assert contact.phone == "+821022223333"
    assert contact.tags.count() == 1
    assert contact.consents.count() == 2


def test_adding_a_contact_by_hand(admin_client, db):
    tag = TagFactory(name="VIP")

    response = admin_client.post(
        admin_url(Contact, "add"),
        {"name": "테스트 고객", "email": "me@example.com", "phone": "010 9876 5432", "tags": [tag.pk], "_save": "저장"},
    )

    assert response.status_code == 302
    contact = Contact.objects.get(email="me@example.com")
    assert contact.phone == "+821098765432"
    assert contact.external_id is None
    assert list(contact.tags.all()) == [tag]


def test_an_invalid_phone_is_refused_in_korean(admin_client, source):
    contact = make_customer(source)
    url = admin_url(Contact, "change", contact.pk)
    data = form_data(admin_client.get(url).content.decode(), "contact_form")
    data.update({"phone": "12", "_save": "저장"})

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert (
        "올바른 전화번호가 아닙니다" in response.content.decode() or "전화번호가 아닙니다" in response.content.decode()
    )


def test_contacts_cannot_be_deleted_from_the_admin(admin_client, source):
    contact = make_customer(source)

    assert admin_client.get(admin_url(Contact, "delete", contact.pk)).status_code == 403
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_contact_search_finds_a_phone_typed_in_any_format(admin_client, source):
    contact = make_customer(source)
    contact.phone = "+821012345678"
    contact.save()
    make_customer(source)

    for typed in ("010-1234-5678", "01012345678", "+82 10 1234 5678"):
        response = admin_client.get(admin_url(Contact, "changelist"), {"q": typed})
        assert [c.pk for c in response.context["cl"].result_list] == [contact.pk], typed
    assert "010-1234-5678" in response.content.decode()


@pytest.mark.parametrize("field", ["email", "external_id", "name"])
def test_contact_search_by_email_external_id_and_name(admin_client, source, field):
    contact = make_customer(source, name="홍길동")
    make_customer(source, name="김철수")

    response = admin_client.get(admin_url(Contact, "changelist"), {"q": getattr(contact, field)})

    assert [c.pk for c in response.context["cl"].result_list] == [contact.pk]


def test_contact_filters(admin_client, source):
    buyer = make_customer(source)
    buyer.order_count = 1
    buyer.save()
    other = make_customer(source)
    url = admin_url(Contact, "changelist")

    def found(**params):
        return {c.pk for c in admin_client.get(url, params).context["cl"].result_list}

    assert found(ordered="yes") == {buyer.pk}
    assert found(ordered="no") == {other.pk}
    assert found(consent="email") == {buyer.pk, other.pk}
    assert found(consent="sms") == set()
    assert found(erased="yes") == set()


# --- Query counts: lists cost the same whatever the number of rows ------------------------------------------------


def list_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("model", [Contact, Event, ConsentChange])
def test_list_query_count_does_not_grow_with_rows(admin_client, source, model, django_assert_max_num_queries):
    url = admin_url(model, "changelist")
    make_customer(source, events=2)
    few = list_queries(admin_client, url)

    for _ in range(6):
        make_customer(source, events=5)
    with django_assert_max_num_queries(few):
        response = admin_client.get(url)
    assert len(response.context["cl"].result_list) > 5
    assert few <= 10


def test_event_list_never_counts_the_whole_table(admin_client, source, settings):
    make_customer(source, events=12)
    event_admin = admin.site._registry[Event]
    event_admin.count_cap = 5
    try:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(admin_url(Event, "changelist"))
    finally:
        event_admin.count_cap = type(event_admin).count_cap
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]

    assert counts
    assert all("LIMIT 6" in sql for sql in counts)
    html = response.content.decode()
    assert "이벤트 5+" in html
    assert "결과 5+건" in html
    assert response.context["cl"].paginator.count_is_capped


def test_event_search_is_an_exact_match_on_name_or_message_id(admin_client, source):
    contact = make_customer(source, events=3)
    event = contact.events.get(name="Event 01")
    url = admin_url(Event, "changelist")

    assert [e.pk for e in admin_client.get(url, {"q": "Event 01"}).context["cl"].result_list] == [event.pk]
    assert [e.pk for e in admin_client.get(url, {"q": event.message_id}).context["cl"].result_list] == [event.pk]
    assert list(admin_client.get(url, {"q": "Event"}).context["cl"].result_list) == []


def test_event_list_filters_by_type_and_source(admin_client, source):
    make_customer(source, events=2)
    other = SourceFactory(name="app")
    EventFactory(source=other, type=Event.Type.PAGE, name="Home")
    url = admin_url(Event, "changelist")

    by_type = admin_client.get(url, {"type__exact": "page"}).context["cl"].result_list
    by_source = admin_client.get(url, {"source__id__exact": other.pk}).context["cl"].result_list

    assert [e.name for e in by_type] == ["Home"]
    assert [e.name for e in by_source] == ["Home"]


def test_events_are_read_only(admin_client, source):
    event = make_customer(source, events=1).events.get()
    url = admin_url(Event, "change", event.pk)

    response = admin_client.get(url)
    assert response.status_code == 200
    assert "product_id" in response.content.decode()
    assert admin_client.post(url, {"name": "changed"}).status_code == 403
    assert admin_client.get(admin_url(Event, "delete", event.pk)).status_code == 403
    event.refresh_from_db()
    assert event.name == "Event 00"


# --- Consent history is append-only; API keys never show their hash ----------------------------------------------


def test_consent_history_refuses_add_change_and_delete(admin_client, db):
    change = ConsentChangeFactory(source="signup form")
    model_admin = admin.site._registry[ConsentChange]
    request = admin_client.get(admin_url(ConsentChange, "changelist")).wsgi_request

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, change)
    assert not model_admin.has_delete_permission(request, change)
    assert not model_admin.get_actions(request)
    assert admin_client.get(admin_url(ConsentChange, "add")).status_code == 403
    assert admin_client.post(admin_url(ConsentChange, "add"), {"source": "x"}).status_code == 403
    assert admin_client.get(admin_url(ConsentChange, "change", change.pk)).status_code == 200
    assert admin_client.post(admin_url(ConsentChange, "change", change.pk), {"source": "x"}).status_code == 403
    assert admin_client.get(admin_url(ConsentChange, "delete", change.pk)).status_code == 403
    assert admin_client.post(admin_url(ConsentChange, "delete", change.pk), {"post": "yes"}).status_code == 403
    change.refresh_from_db()
    assert change.source == "signup form"


def test_api_key_page_shows_prefix_and_scopes_never_the_hash(admin_client, source):
    key, raw = api_key_create(source=source, name="shop backend")

    for url in (admin_url(ApiKey, "changelist"), admin_url(ApiKey, "change", key.pk)):
        html = admin_client.get(url).content.decode()
        assert key.prefix in html
        assert key.key_hash not in html
        assert raw not in html
        assert "이벤트 쓰기" in html
    # Keys are added through the dedicated form that shows the secret once (test_admin_apikeys.py).


# --- Display helpers ---------------------------------------------------------------------------------------------


def test_money_and_phone_display():
    assert money(Decimal("39000.00"), "KRW") == "₩39,000"
    assert money(Decimal("5000.4")) == "₩5,000"  # won has no minor unit
    assert money(Decimal("12.5"), "USD") == "$12.50"
    assert money(Decimal("-1200"), "EUR") == "-€1,200"
    assert money(Decimal("7"), "CHF") == "7 CHF"
    assert money(None) == "-"
    assert phone_display("+821012345678") == "010-1234-5678"
    assert phone_display("+14155552671") == "+1 415-555-2671"
    assert phone_display("") == ""


def test_items_table_copes_with_whatever_the_shop_sent():
    html = items_table([{"name": "<b>니트</b>", "price": "39,000원"}, {"product_id": "P1", "price": 12000}, "junk"])

    assert "&lt;b&gt;니트&lt;/b&gt;" in html
    assert "39,000원" in html
    assert "12,000" in html
    assert items_table([]) == "-"
