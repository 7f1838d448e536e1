"""The role groups: Admin, Marketer, Analyst (crm.roles). Their permissions are set after every migrate."""

from django.db import migrations

ROLES = ("Admin", "Marketer", "Analyst")


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.using(schema_editor.connection.alias).get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("crm", "0008_audit_trail"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
