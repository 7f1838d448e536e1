"""The ingest service: identity resolution, idempotency, and (applied by the event processing that follows)
profile/consent, devices and commerce state."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from crm.ingest.messages import MessageError, parse_message
from crm.models import Cart, Consent, ConsentChange, Contact, ContactAlias, Coupon, Device, Event, Order, Source
from crm.services.event_processing import events_process_pending
from crm.services.ingest import event_record_batch
from crm.signals import events_recorded

T0 = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)  # Sunday 20:00 in Seoul


@pytest.fixture
def source(db):
    return Source.objects.create(name="shop")


def msgs(*raws, received_at=T0):
    return [parse_message(raw, index=i, received_at=received_at) for i, raw in enumerate(raws)]


def record(*, source, messages, received_at=None):
    """Store a batch, then apply the queued events as the worker does right after: the derived state asserted
    below is what processing makes of them."""
    result = event_record_batch(source=source, messages=messages, received_at=received_at)
    events_process_pending()
    return result


def track(event, user="u1", mid=None, at=T0, **props):
    raw = {"type": "track", "event": event, "userId": user, "timestamp": at.isoformat(), "properties": props}
    if mid:
        raw["messageId"] = mid
    return raw


def test_same_message_id_is_stored_once_even_much_later(source):
    first = record(source=source, messages=msgs(track("Signed Up", mid="m-1")))
    again = record(source=source, messages=msgs(track("Signed Up", mid="m-1")), received_at=T0 + timedelta(days=400))
    assert first.stored == 1
    assert first.duplicates == 0
    assert again.stored == 0
    assert again.duplicates == 1
    assert Event.objects.count() == 1


def test_duplicates_inside_one_batch_are_stored_once(source):
    result = record(source=source, messages=msgs(track("A", mid="x"), track("A", mid="x")))
    assert result.stored == 1
    assert result.duplicates == 1


def test_same_message_id_from_another_source_is_a_different_event(source):
    other = Source.objects.create(name="app")
    record(source=source, messages=msgs(track("A", mid="x")))
    record(source=other, messages=msgs(track("A", mid="x")))
    assert Event.objects.count() == 2


def test_message_without_id_gets_a_content_id_so_a_resend_is_idempotent(source):
    record(source=source, messages=msgs(track("Product Viewed", product_id="p1")))
    record(source=source, messages=msgs(track("Product Viewed", product_id="p1")))
    assert Event.objects.count() == 1
    assert Event.objects.get().message_id.startswith("auto-")


def test_anonymous_visitor_becomes_the_identified_contact(source):
    record(
        source=source,
        messages=msgs({"type": "page", "name": "주말 한정 할인", "anonymousId": "anon-1", "timestamp": T0.isoformat()}),
    )
    anon = Contact.objects.get()
    assert anon.external_id is None
    record(
        source=source,
        messages=msgs(
            {
                "type": "identify",
                "userId": "u-42",
                "anonymousId": "anon-1",
                "traits": {"email": "Kim@Example.COM", "phone": "010-1234-5678", "name": "김민지", "grade": "VIP"},
                "timestamp": (T0 + timedelta(minutes=1)).isoformat(),
            }
        ),
    )
    contact = Contact.objects.get()
    assert contact.pk == anon.pk
    assert contact.external_id == "u-42"
    assert contact.email == "Kim@example.com"
    assert contact.phone == "+821012345678"
    assert contact.name == "김민지"
    assert contact.attributes == {"grade": "VIP"}
    assert contact.events.count() == 2
    assert contact.first_seen_at == T0
    assert contact.last_seen_at == T0 + timedelta(minutes=1)


def test_anonymous_contact_is_merged_into_a_known_user(source):
    record(source=source, messages=msgs(track("Signed Up", user="u-1")))
    record(
        source=source,
        messages=msgs(
            {"type": "track", "event": "Product Added", "anonymousId": "a-9", "properties": {"product_id": "p"}}
        ),
    )
    assert Contact.objects.count() == 2
    record(source=source, messages=msgs({"type": "identify", "userId": "u-1", "anonymousId": "a-9", "traits": {}}))
    assert Contact.objects.count() == 1
    contact = Contact.objects.get()
    assert contact.events.count() == 3
    assert ContactAlias.objects.get().contact == contact
    assert Cart.objects.get().contact == contact


def test_korean_first_and_last_name_are_joined_family_name_first(source):
    record(
        source=source,
        messages=msgs({"type": "identify", "userId": "u", "traits": {"firstName": "길동", "lastName": "홍"}}),
    )
    assert Contact.objects.get().name == "홍길동"


def test_consent_traits_are_recorded_with_history_and_old_messages_do_not_override(source):
    def identify(granted, at, mid):
        return {
            "type": "identify",
            "userId": "u",
            "messageId": mid,
            "timestamp": at.isoformat(),
            "traits": {"consents": {"sms": granted, "advertising": granted}},
        }

    record(source=source, messages=msgs(identify(True, T0, "1")))
    record(source=source, messages=msgs(identify(False, T0 + timedelta(days=1), "2")))
    record(source=source, messages=msgs(identify(True, T0 + timedelta(hours=1), "3")))  # late, older
    sms = Consent.objects.get(purpose="sms")
    assert sms.granted is False
    assert sms.changed_at == T0 + timedelta(days=1)
    assert sms.source == "api:shop"
    assert ConsentChange.objects.filter(purpose="sms").count() == 2
    assert Consent.objects.get(purpose="ads").granted is False


def test_push_token_from_context_registers_a_device(source):
    raw = track("App Opened")
    raw["context"] = {"device": {"token": "tok-1", "type": "ios"}, "app": {"namespace": "kr.shop"}}
    record(source=source, messages=msgs(raw))
    device = Device.objects.get()
    assert (device.token, device.platform, device.app_id, device.active) == ("tok-1", "ios", "kr.shop", True)


def test_cart_follows_add_remove_and_is_emptied_by_an_order(source):
    record(
        source=source,
        messages=msgs(
            track("Product Added", mid="1", at=T0, product_id="p1", name="캐시미어 니트", price=59000, quantity=2),
            track(
                "Product Added", mid="2", at=T0 + timedelta(minutes=1), product_id="p2", name="울 머플러", price=25000
            ),
            track("Product Removed", mid="3", at=T0 + timedelta(minutes=2), product_id="p1", quantity=1),
        ),
    )
    cart = Cart.objects.get()
    assert [(i["product_id"], i["quantity"]) for i in cart.items] == [("p1", 1), ("p2", 1)]
    assert cart.value == Decimal("84000")
    assert cart.updated_at == T0 + timedelta(minutes=2)

    record(
        source=source,
        messages=msgs(track("Checkout Started", mid="4", at=T0 + timedelta(minutes=3), value=84000)),
    )
    assert Cart.objects.get().checkout_started_at == T0 + timedelta(minutes=3)

    record(
        source=source,
        messages=msgs(
            track(
                "Order Completed", mid="5", at=T0 + timedelta(minutes=5), order_id="o-1", total=84000, coupon="WELCOME"
            )
        ),
    )
    cart = Cart.objects.get()
    assert cart.items == []
    assert cart.value == 0
    assert cart.checkout_started_at is None
    contact = Contact.objects.get()
    assert (contact.order_count, contact.total_revenue) == (1, Decimal("84000"))
    assert contact.first_order_at == contact.last_order_at == T0 + timedelta(minutes=5)
    # A coupon used in an order that the CRM never saw issued is kept as redeemed.
    assert Coupon.objects.get(code="WELCOME").redeemed_at == T0 + timedelta(minutes=5)

    # A late cart event from before the order does not reopen the cart.
    record(source=source, messages=msgs(track("Product Added", mid="6", at=T0 + timedelta(minutes=4), product_id="p9")))
    assert Cart.objects.get().items == []


def test_a_retried_order_is_counted_once(source):
    order = track("Order Completed", mid="o", order_id="o-1", total=10000)
    record(source=source, messages=msgs(order))
    record(source=source, messages=msgs(order))
    assert Order.objects.count() == 1
    assert Contact.objects.get().order_count == 1


def test_coupon_issued_then_redeemed(source):
    expires = (T0 + timedelta(days=3)).isoformat()
    record(
        source=source,
        messages=msgs(track("Coupon Issued", mid="1", coupon_id="SALE5", discount=5000, expires_at=expires)),
    )
    coupon = Coupon.objects.get()
    assert (coupon.code, coupon.discount_amount, coupon.redeemed_at) == ("SALE5", Decimal("5000"), None)
    assert coupon.expires_at == T0 + timedelta(days=3)
    record(
        source=source, messages=msgs(track("Coupon Redeemed", mid="2", at=T0 + timedelta(hours=1), coupon_id="SALE5"))
    )
    assert Coupon.objects.get().redeemed_at == T0 + timedelta(hours=1)


def test_wishlist_add_and_remove(source):
    record(source=source, messages=msgs(track("Product Added to Wishlist", mid="1", product_id="p1")))
    contact = Contact.objects.get()
    assert list(contact.wishlist.values_list("product_id", flat=True)) == ["p1"]
    record(
        source=source,
        messages=msgs(track("Product Removed from Wishlist", mid="2", at=T0 + timedelta(hours=1), product_id="p1")),
    )
    assert not contact.wishlist.exists()


def test_only_new_events_are_announced_after_commit(source, django_capture_on_commit_callbacks):
    received = []

    def receiver(sender, event_ids, **kwargs):
        received.append(sorted(event_ids))

    events_recorded.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            record(source=source, messages=msgs(track("A", mid="1"), track("B", mid="2")))
        with django_capture_on_commit_callbacks(execute=True):
            record(source=source, messages=msgs(track("A", mid="1"), track("C", mid="3")))
    finally:
        events_recorded.disconnect(receiver)
    ids = dict(Event.objects.values_list("message_id", "id"))
    assert received == [sorted([ids["1"], ids["2"]]), [ids["3"]]]


class TestParsing:
    def test_skew_corrected_time_from_original_timestamp_and_sent_at(self):
        raw = {
            "type": "track",
            "event": "X",
            "userId": "u",
            "originalTimestamp": "2026-11-22T10:00:00Z",
            "sentAt": "2026-11-22T10:05:00Z",  # the device's clock says 5 minutes later
        }
        message = parse_message(raw, received_at=datetime(2026, 11, 22, 10, 0, 30, tzinfo=UTC))
        assert message.occurred_at == datetime(2026, 11, 22, 9, 55, 30, tzinfo=UTC)

    def test_explicit_timestamp_is_used_as_is(self):
        message = parse_message(
            {"type": "track", "event": "X", "userId": "u", "timestamp": "2026-11-22T20:00:00+09:00"}, received_at=T0
        )
        assert message.occurred_at == datetime(2026, 11, 22, 11, 0, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            ({"type": "track", "event": "X"}, "userId"),
            ({"type": "track", "userId": "u"}, "event"),
            ({"type": "nope", "userId": "u"}, "type"),
            ({"type": "track", "event": "X", "userId": "u", "timestamp": "yesterday"}, "timestamp"),
            ({"type": "track", "event": "X", "userId": "u", "properties": []}, "properties"),
            ({"type": "identify", "userId": "u", "traits": {"phone": "010-12"}}, "traits.phone"),
            ({"type": "identify", "userId": "u", "traits": {"email": "no-at-sign"}}, "traits.email"),
            ({"type": "identify", "userId": "u", "traits": {"timezone": "Mars/Base"}}, "traits.timezone"),
            ({"type": "alias", "userId": "u"}, "previousId"),
            ({"type": "group", "userId": "u"}, "groupId"),
        ],
    )
    def test_invalid_messages_name_the_field(self, raw, field):
        with pytest.raises(MessageError) as excinfo:
            parse_message(raw, received_at=T0)
        assert field in excinfo.value.errors

    def test_oversized_message_is_refused(self):
        raw = {"type": "track", "event": "X", "userId": "u", "properties": {"blob": "x" * 33_000}}
        with pytest.raises(MessageError) as excinfo:
            parse_message(raw, received_at=T0)
        assert "32 KB" in excinfo.value.errors["non_field_errors"][0]

    def test_batch_context_is_merged_into_each_message(self):
        message = parse_message(
            {"type": "track", "event": "X", "userId": "u", "context": {"ip": "1.2.3.4"}},
            received_at=T0,
            batch_context={"library": {"name": "analytics-python"}, "ip": "9.9.9.9"},
            batch_integrations={"All": True},
        )
        assert message.context["ip"] == "1.2.3.4"
        assert message.context["library"] == {"name": "analytics-python"}
        assert message.context["integrations"] == {"All": True}


def test_absurd_device_clock_falls_back_to_the_time_of_receipt():
    raw = {
        "type": "identify",
        "userId": "u",
        "originalTimestamp": "0338-05-03T02:05:04Z",
        "sentAt": "8296-01-11T04:02:58.9Z",
    }
    assert parse_message(raw, received_at=T0).occurred_at == T0
