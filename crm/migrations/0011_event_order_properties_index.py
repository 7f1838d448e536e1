"""A GIN index on the properties of "Order Completed" events (PostgreSQL only), for segment conditions on what was
bought.

"Bought something of category 가방" (``{"type": "event", "name": "Order Completed", "where": [...]}``) compiles to
``name = 'Order Completed' AND properties @> '{"products": [{"category": "가방"}]}'``. Without a window on time no
B-tree index narrows it, and PostgreSQL read the whole event table (10,000,000 events: 3.6 s of a 6 s count, see
docs/performance.md, "Segments (issue #6)"). This partial ``jsonb_path_ops`` index holds only orders (3–4 % of the
events, 22 MB for 300,000 orders): the containment test becomes a bitmap index scan, and the cost on the ingest path
is limited to the events that are orders. Conditions on other events' properties keep reading the events of their
name (and window) through ``crm_event_name_time_contact``. SQLite has no such index; nothing is created there.
"""

from django.db import migrations

ORDER_PROPERTIES_GIN = "crm_event_order_props_gin"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {ORDER_PROPERTIES_GIN} ON crm_event USING gin (properties jsonb_path_ops)"
            " WHERE name = 'Order Completed'"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {ORDER_PROPERTIES_GIN}")


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0010_user_preference"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
