from django.core.management.base import BaseCommand, CommandError

from crm.models import ApiKey, Source
from crm.services.apikeys import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a source and print it. The key is shown only once; the last line is the key."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A name for the key, e.g. 'shop backend'.")
        parser.add_argument("--source", default=None, help="Source name (created if missing; default: the key name).")
        parser.add_argument(
            "--kind", default=Source.Kind.SERVER, choices=Source.Kind.values, help="Kind of a new source."
        )
        parser.add_argument(
            "--scope",
            action="append",
            choices=ApiKey.Scope.values,
            help="Scope (repeatable). Default: write_events.",
        )

    def handle(self, *args, name, source, kind, scope, **options):
        if not name.strip():
            raise CommandError("The key needs a name.")
        source_obj, _created = Source.objects.get_or_create(name=(source or name).strip(), defaults={"kind": kind})
        key, raw = api_key_create(source=source_obj, name=name.strip(), scopes=scope)
        self.stderr.write(
            f"Created API key '{key.name}' for source '{source_obj.name}' with scopes {', '.join(key.scopes)}. "
            "Store it now: it cannot be shown again."
        )
        self.stdout.write(raw)
