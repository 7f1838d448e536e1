"""Ready-made segments from the marketers' own examples: loaded with the demo data, shown in ``docs/segments.md``."""

from __future__ import annotations

ORDER_COMPLETED = "Order Completed"
BAG = {"property": "products[].category", "value_type": "text", "op": "eq", "value": "가방"}


def _rules(*children: dict, op: str = "and") -> dict:
    return {"version": 1, "root": {"type": "group", "op": op, "children": list(children)}}


#: (name, description, rules)
EXAMPLES: list[tuple[str, str, dict]] = [
    (
        "이번 주 주말 프로모션 페이지 방문",
        "이번 주(월~일)에 ‘주말 한정 할인’ 페이지를 본 고객. 일요일 오후 마감 알림 푸시 대상.",
        _rules({"type": "event", "op": "did", "name": "주말 한정 할인", "when": {"op": "this_week"}}),
    ),
    (
        "30분 내 장바구니 담고 미주문",
        "최근 30분 안에 장바구니가 바뀌었고 그 사이 주문하지 않은 고객. 장바구니 리마인드 대상.",
        _rules(
            {"type": "cart", "field": "updated_at", "op": "within_last", "value": 30, "unit": "minutes"},
            {
                "type": "event",
                "op": "did_not",
                "name": ORDER_COMPLETED,
                "when": {"op": "within_last", "value": 30, "unit": "minutes"},
            },
        ),
    ),
    (
        "오늘 만료되는 미사용 쿠폰 보유",
        "아직 쓰지 않은 쿠폰이 오늘(한국 시간) 만료되는 고객.",
        _rules({"type": "coupon", "state": "unused", "where": [{"field": "expires_at", "op": "today"}]}),
    ),
    (
        "가방 구매 후 90일간 재구매 없음",
        "가방 카테고리를 산 적이 있지만 최근 90일 동안은 사지 않은 고객.",
        _rules(
            {"type": "event", "op": "did", "name": ORDER_COMPLETED, "where": [BAG]},
            {
                "type": "event",
                "op": "did_not",
                "name": ORDER_COMPLETED,
                "where": [BAG],
                "when": {"op": "within_last", "value": 90, "unit": "days"},
            },
        ),
    ),
    (
        "VIP: 주문 3회 이상 또는 50만원 이상",
        "주문을 3번 이상 했거나 누적 구매 금액이 500,000원 이상인 고객.",
        _rules(
            {"type": "orders", "field": "count", "op": "gte", "value": 3},
            {"type": "orders", "field": "revenue", "op": "gte", "value": 500000},
            op="or",
        ),
    ),
]
