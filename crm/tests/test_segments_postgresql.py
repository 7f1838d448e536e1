"""On PostgreSQL: the partial GIN index on orders' properties (migration 0008) exists as the segment compiler needs
it, and the planner uses it for a condition on what was bought (with sequential scans off, as on a large table)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from crm.models import Contact
from crm.segments import compile_rules
from crm.tests.factories import ContactFactory, EventFactory

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

INDEX = "crm_event_order_props_gin"
BOUGHT_A_BAG = {
    "version": 1,
    "root": {
        "type": "group",
        "op": "and",
        "children": [
            {
                "type": "event",
                "op": "did",
                "name": "Order Completed",
                "where": [{"property": "products[].category", "value_type": "text", "op": "eq", "value": "가방"}],
            }
        ],
    },
}


def test_order_properties_index_definition(postgresql):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'crm_event' AND indexname = %s", [INDEX])
        (definition,) = cursor.fetchone()
    assert "USING gin (properties jsonb_path_ops)" in definition
    assert "WHERE ((name)::text = 'Order Completed'::text)" in definition


def test_condition_on_bought_products_uses_the_index_and_finds_the_buyers(postgresql):
    now = timezone.now()
    bag_buyer, shoe_buyer, bag_viewer = ContactFactory(), ContactFactory(), ContactFactory()
    bag = {"products": [{"product_id": "B1", "category": "가방"}, {"product_id": "S1", "category": "신발"}]}
    EventFactory(contact=bag_buyer, name="Order Completed", properties=bag, occurred_at=now - timedelta(days=400))
    EventFactory(
        contact=shoe_buyer,
        name="Order Completed",
        properties={"products": [{"category": "신발"}]},
        occurred_at=now - timedelta(days=1),
    )
    EventFactory(contact=bag_viewer, name="Checkout Started", properties=bag, occurred_at=now - timedelta(days=1))
    shoes = {"products": [{"category": "신발"}]}
    EventFactory.create_batch(200, contact=shoe_buyer, name="Order Completed", properties=shoes, occurred_at=now)
    members = Contact.objects.filter(compile_rules(BOUGHT_A_BAG, now=now))
    assert set(members) == {bag_buyer}

    sql, params = members.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE crm_event")
        # As on a large table, where reading every order (or every event) costs more than the index.
        for setting in ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan"):
            cursor.execute(f"SET LOCAL {setting} = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert INDEX in plan, plan
