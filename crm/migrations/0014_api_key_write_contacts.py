"""The ``write_contacts`` scope: ``PUT``/``DELETE /contacts/{external_id}`` no longer come with ``write_events``.

Upgrading keeps every running server integration working: each key holding ``write_events`` is granted
``write_contacts`` too (an audit entry per key says so), except the keys of **App** sources: those ship inside an app,
where anyone can take them out, and an app never needed to overwrite or erase contacts. Operators then remove the
scope from keys embedded in web pages (docs/api.md).
Reversing restores the old meaning, under which ``write_events`` allowed the contact writes: ``write_contacts`` is
removed everywhere, and a key that held it without ``write_events`` gets ``write_events`` instead.
"""

from django.db import migrations

WRITE_EVENTS, WRITE_CONTACTS = "write_events", "write_contacts"


APP = "app"  # crm.Source.Kind.APP


def _rescope(apps, schema_editor, rescope, *, skip_apps: bool = False) -> None:
    db = schema_editor.connection.alias
    ApiKey = apps.get_model("crm", "ApiKey")
    AuditEntry = apps.get_model("crm", "AuditEntry")
    keys = ApiKey.objects.using(db).order_by("pk")
    if skip_apps:
        keys = keys.exclude(source__kind=APP)
    for key in keys:
        before = list(key.scopes or [])
        after = rescope(before)
        if after == before:
            continue
        ApiKey.objects.using(db).filter(pk=key.pk).update(scopes=after)
        AuditEntry.objects.using(db).create(
            actor_repr="migration crm.0014",
            via="migration",
            action="changed",
            object_type="crm.apikey",
            object_id=str(key.pk),
            object_repr=f"{key.name} ({key.prefix}…)"[:200],
            changes={"scopes": [before, after]},
        )


def _granted(scopes: list[str]) -> list[str]:
    if WRITE_EVENTS in scopes and WRITE_CONTACTS not in scopes:
        return [*scopes, WRITE_CONTACTS]
    return scopes


def _withdrawn(scopes: list[str]) -> list[str]:
    if WRITE_CONTACTS not in scopes:
        return scopes
    kept = [scope for scope in scopes if scope != WRITE_CONTACTS]
    return kept if WRITE_EVENTS in kept else [*kept, WRITE_EVENTS]


def grant_write_contacts(apps, schema_editor):
    _rescope(apps, schema_editor, _granted, skip_apps=True)


def withdraw_write_contacts(apps, schema_editor):
    _rescope(apps, schema_editor, _withdrawn)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0013_admin_list_indexes"),
    ]

    operations = [migrations.RunPython(grant_write_contacts, withdraw_write_contacts)]
