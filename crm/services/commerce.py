"""Commerce state derived from events: carts, wishlists, coupons, orders and the contact's order history.

Recognised event names follow Segment's e-commerce spec (``COMMERCE_EVENTS``); any other name is a plain event.
Applied by the event processing worker to each stored event exactly once (a retried message is not stored again),
a whole batch with a constant number of queries. Rules for events that arrive out of order:

- Cart events older than the contact's last order belong to that order and do not reopen the cart.
- A cart snapshot ("Cart Viewed" or "Checkout Started" with ``products``) replaces the items only if it is newer
  than the cart's last change.
- "Order Completed" empties the cart unless the cart changed after the order.
- Order history (count, revenue, first and last order) is recomputed from the Order rows, so it is always exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from django.db.models import Count, DecimalField, Max, Min, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Least

from crm.db import bulk_upsert
from crm.ingest.messages import parse_timestamp
from crm.models import Cart, Contact, Coupon, Order, WishlistItem

PRODUCT_ADDED = "Product Added"
PRODUCT_REMOVED = "Product Removed"
CART_VIEWED = "Cart Viewed"
CHECKOUT_STARTED = "Checkout Started"
ORDER_COMPLETED = "Order Completed"
WISHLIST_ADDED = "Product Added to Wishlist"
WISHLIST_REMOVED = "Product Removed from Wishlist"
COUPON_ISSUED = "Coupon Issued"
COUPON_APPLIED = "Coupon Applied"
COUPON_REDEEMED = "Coupon Redeemed"
PROMOTION_VIEWED = "Promotion Viewed"
SIGNED_UP = "Signed Up"

CART_EVENTS = {PRODUCT_ADDED, PRODUCT_REMOVED, CART_VIEWED, CHECKOUT_STARTED, ORDER_COMPLETED}
COUPON_USED = {COUPON_APPLIED, COUPON_REDEEMED}
COMMERCE_EVENTS = CART_EVENTS | {WISHLIST_ADDED, WISHLIST_REMOVED, COUPON_ISSUED, PROMOTION_VIEWED, SIGNED_UP}
COMMERCE_EVENTS |= COUPON_USED
#: The cart's columns that events change.
CART_FIELDS = ["items", "value", "currency", "updated_at", "checkout_started_at"]


class Message(Protocol):
    """What commerce rules read of an event (``crm.services.event_processing.StoredEvent``)."""

    message_id: str
    type: str
    name: str
    properties: dict[str, Any]
    occurred_at: datetime


#: The largest amount the money columns (``max_digits=14, decimal_places=2``) hold.
MAX_AMOUNT = Decimal("999999999999.99")


def money(value: Any) -> Decimal | None:
    """An amount with 2 decimal places, or None when there is none or it is beyond what the columns hold."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
        if not amount.is_finite() or abs(amount) > MAX_AMOUNT:
            return None
        amount = amount.quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return None
    return amount if abs(amount) <= MAX_AMOUNT else None


def product_item(props: dict[str, Any]) -> dict[str, Any] | None:
    """A cart line from a product's properties, or None when it names no product."""
    product_id = props.get("product_id", props.get("sku", props.get("id")))
    if product_id in (None, ""):
        return None
    quantity = props.get("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        quantity = 1
    price = money(props.get("price"))
    item = {"product_id": str(product_id), "name": str(props.get("name") or ""), "quantity": quantity}
    if price is not None:
        item["price"] = float(price) if price % 1 else int(price)
    for key in ("variant", "category", "brand", "image_url", "url"):
        if props.get(key) not in (None, ""):
            item[key] = props[key]
    return item


def _line_key(item: dict[str, Any]) -> tuple[str, str]:
    return item["product_id"], str(item.get("variant", ""))


def _cart_value(items: list[dict[str, Any]]) -> Decimal:
    total = sum((money(i.get("price")) or Decimal(0)) * i["quantity"] for i in items) or Decimal("0")
    return max(-MAX_AMOUNT, min(total, MAX_AMOUNT))  # absurd quantities must not overflow the column


def _snapshot(props: dict[str, Any]) -> list[dict[str, Any]] | None:
    products = props.get("products")
    if not isinstance(products, list):
        return None
    return [item for p in products if isinstance(p, dict) and (item := product_item(p)) is not None]


def _apply_cart(cart: Cart, message: Message, last_order_at: datetime | None) -> bool:
    props = message.properties
    at = message.occurred_at
    if message.name == ORDER_COMPLETED:
        if at >= cart.updated_at:
            cart.items, cart.value, cart.checkout_started_at, cart.updated_at = [], Decimal("0"), None, at
            return True
        return False
    if last_order_at is not None and at < last_order_at:
        return False  # belongs to an order already completed
    if message.name in (CART_VIEWED, CHECKOUT_STARTED):
        changed = False
        items = _snapshot(props)
        if items is not None and at >= cart.updated_at:
            cart.items, cart.updated_at, changed = items, at, True
        if message.name == CHECKOUT_STARTED:
            cart.checkout_started_at = max(cart.checkout_started_at or at, at)
            changed = True
        declared = money(props.get("value", props.get("total", props.get("revenue"))))
        cart.value = declared if declared is not None and message.name == CHECKOUT_STARTED else _cart_value(cart.items)
        if isinstance(props.get("currency"), str) and len(props["currency"]) == 3:
            cart.currency = props["currency"].upper()
        return changed
    item = product_item(props)
    if item is None:
        return False
    lines = {_line_key(i): i for i in cart.items}
    key = _line_key(item)
    if message.name == PRODUCT_ADDED:
        if key in lines:
            lines[key]["quantity"] += item["quantity"]
        else:
            cart.items.append(item)
    elif key in lines:  # PRODUCT_REMOVED
        remaining = lines[key]["quantity"] - item["quantity"]
        if remaining > 0:
            lines[key]["quantity"] = remaining
        else:
            cart.items = [i for i in cart.items if _line_key(i) != key]
    else:
        return False
    cart.updated_at = max(cart.updated_at, at)
    cart.value = _cart_value(cart.items)
    return True


def _order_row(contact_id: int, message: Message) -> dict[str, Any]:
    props = message.properties
    order_id = props.get("order_id", props.get("orderId", props.get("checkout_id")))
    products = _snapshot(props) or []
    total = money(props.get("total", props.get("revenue", props.get("value"))))
    if total is None:
        total = _cart_value(products)
    currency = props.get("currency") if isinstance(props.get("currency"), str) else "KRW"
    return {
        "contact_id": contact_id,
        "order_id": str(order_id or message.message_id)[:200],
        "total": total,
        "currency": (currency or "KRW").upper()[:3],
        "items": products,
        "placed_at": message.occurred_at,
    }


def _coupon_code(props: dict[str, Any]) -> str | None:
    code = props.get("coupon_code", props.get("code", props.get("coupon", props.get("coupon_id"))))
    return str(code)[:100] if code not in (None, "") and not isinstance(code, dict | list) else None


def commerce_apply(*, messages: Iterable[tuple[int, Message]]) -> None:
    """Apply stored track events (as ``(contact_id, event)``, in time order) to commerce state."""
    relevant = [(cid, m) for cid, m in messages if m.type == "track" and m.name in COMMERCE_EVENTS]
    if not relevant:
        return
    relevant.sort(key=lambda pair: pair[1].occurred_at)

    orders = [_order_row(cid, m) for cid, m in relevant if m.name == ORDER_COMPLETED]
    bulk_upsert(Order, orders, unique_fields=["contact", "order_id"])

    cart_messages = [(cid, m) for cid, m in relevant if m.name in CART_EVENTS]
    if cart_messages:
        _apply_carts(cart_messages)

    _apply_wishlist([(cid, m) for cid, m in relevant if m.name in (WISHLIST_ADDED, WISHLIST_REMOVED)])
    _apply_coupons(relevant)

    if orders:
        order_history_refresh(contact_ids={row["contact_id"] for row in orders})


def _apply_carts(cart_messages: list[tuple[int, Message]]) -> None:
    contact_ids = {cid for cid, _m in cart_messages}
    carts = {cart.contact_id: cart for cart in Cart.objects.filter(contact_id__in=contact_ids)}
    last_orders = dict(
        Contact.objects.filter(id__in=contact_ids, last_order_at__isnull=False).values_list("id", "last_order_at")
    )
    # Orders in this very batch count as "last order" for the cart events that precede them.
    changed: dict[int, Cart] = {}
    for cid, message in cart_messages:
        cart = carts.get(cid)
        if cart is None:
            if message.name == ORDER_COMPLETED:
                continue
            cart = carts[cid] = Cart(contact_id=cid, items=[], value=Decimal("0"), updated_at=message.occurred_at)
        if _apply_cart(cart, message, last_orders.get(cid)):
            changed[cid] = cart
        if message.name == ORDER_COMPLETED:
            last_orders[cid] = max(last_orders.get(cid) or message.occurred_at, message.occurred_at)
    bulk_upsert(
        Cart,
        [{"contact_id": cid, **{f: getattr(cart, f) for f in CART_FIELDS}} for cid, cart in sorted(changed.items())],
        unique_fields=["contact"],
        update_fields=CART_FIELDS,
    )


def _apply_wishlist(wish_messages: list[tuple[int, Message]]) -> None:
    for cid, message in wish_messages:
        item = product_item(message.properties)
        if item is None:
            continue
        if message.name == WISHLIST_ADDED:
            WishlistItem.objects.bulk_create(
                [
                    WishlistItem(
                        contact_id=cid,
                        product_id=item["product_id"],
                        name=item["name"][:300],
                        properties=message.properties,
                        added_at=message.occurred_at,
                    )
                ],
                ignore_conflicts=True,
            )
        else:
            WishlistItem.objects.filter(
                contact_id=cid, product_id=item["product_id"], added_at__lte=message.occurred_at
            ).delete()


def _apply_coupons(relevant: list[tuple[int, Message]]) -> None:
    issued: dict[tuple[int, str], dict[str, Any]] = {}
    for cid, message in relevant:
        if message.name != COUPON_ISSUED or not (code := _coupon_code(message.properties)):
            continue
        props = message.properties
        expires = props.get("expires_at", props.get("expiresAt", props.get("expiration")))
        try:
            expires_at = parse_timestamp(expires) if expires else None
        except (ValueError, TypeError):
            expires_at = None
        percent = money(props.get("discount_percent", props.get("percent_off")))
        issued[(cid, code)] = {
            "contact_id": cid,
            "code": code,
            "discount_amount": money(props.get("discount", props.get("discount_amount", props.get("amount")))),
            "discount_percent": percent if percent is not None and 0 <= percent <= 100 else None,
            "issued_at": message.occurred_at,
            "expires_at": expires_at,
            "redeemed_at": None,
        }
    bulk_upsert(
        Coupon,
        list(issued.values()),
        unique_fields=["contact", "code"],
        update_fields=["discount_amount", "discount_percent", "expires_at"],
    )
    used: dict[tuple[int, str], datetime] = {}
    for cid, message in relevant:
        if message.name in COUPON_USED or message.name == ORDER_COMPLETED:
            code = _coupon_code(message.properties)
            if code:
                key = (cid, code)
                used[key] = min(used.get(key, message.occurred_at), message.occurred_at)
    for (cid, code), at in used.items():
        updated = Coupon.objects.filter(contact_id=cid, code=code, redeemed_at__isnull=True).update(redeemed_at=at)
        if not updated and not Coupon.objects.filter(contact_id=cid, code=code).exists():
            # A coupon redeemed that was issued outside the CRM: keep it, so "unused coupons" stay right.
            Coupon.objects.bulk_create(
                [Coupon(contact_id=cid, code=code, issued_at=at, redeemed_at=at)], ignore_conflicts=True
            )


def order_history_refresh(*, contact_ids: Iterable[int]) -> None:
    """Recompute order count, revenue and first/last order time of these contacts from their Order rows."""
    orders = Order.objects.filter(contact=OuterRef("pk")).order_by().values("contact")
    Contact.objects.filter(id__in=list(contact_ids)).update(
        order_count=Coalesce(Subquery(orders.annotate(n=Count("id")).values("n")), Value(0)),
        total_revenue=Least(
            Coalesce(
                Subquery(orders.annotate(s=Sum("total")).values("s")),
                Value(Decimal("0")),
                output_field=DecimalField(max_digits=14, decimal_places=2),
            ),
            Value(MAX_AMOUNT),
        ),
        first_order_at=Subquery(orders.annotate(t=Min("placed_at")).values("t")),
        last_order_at=Subquery(orders.annotate(t=Max("placed_at")).values("t")),
    )
