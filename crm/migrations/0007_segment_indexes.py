"""Indexes for segment queries.

- Events: (name, occurred_at, contact) replaces (name, occurred_at): "who did NAME in this window" is a range scan
  that yields the contact ids without reading the table (index-only on PostgreSQL).
- Contact attributes (PostgreSQL only): a GIN ``jsonb_path_ops`` index serves the containment test (``@>``) that
  text-equality and yes/no conditions on attributes compile to. SQLite has no such index; nothing is created there.
"""

from django.db import migrations, models

ATTRIBUTES_GIN = "crm_contact_attributes_gin"


def create_attributes_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {ATTRIBUTES_GIN} ON crm_contact USING gin (attributes jsonb_path_ops)"
        )


def drop_attributes_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {ATTRIBUTES_GIN}")


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0006_unprocessed_event"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["name", "occurred_at", "contact"], name="crm_event_name_time_contact"),
        ),
        migrations.RemoveIndex(
            model_name="event",
            name="crm_event_name_time",
        ),
        migrations.RunPython(create_attributes_index, drop_attributes_index, elidable=False),
    ]
