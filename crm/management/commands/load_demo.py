"""``python manage.py load_demo [--contacts N]``: load the demo data of every app (idempotent; `make run` calls it)."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.demo import demo_load_all, demo_summary

MAX_CONTACTS = 9999  # external IDs are demo-0001…demo-9999


class Command(BaseCommand):
    help = (
        "Load demo contacts, events, carts, coupons and orders, then the other apps' demo data (campaigns with "
        "their past runs). Running it again creates nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--contacts",
            type=int,
            default=300,
            help=f"How many demo contacts (default 300, at most {MAX_CONTACTS}).",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Load even with LOOP_ENV=production (a staging copy, say). Demo phone numbers may be real people's.",
        )

    def handle(self, *args, contacts: int, force: bool, **options) -> None:
        if settings.IS_PRODUCTION and not force:
            raise CommandError(
                "Refusing to load demo contacts with LOOP_ENV=production: their made-up phone numbers may belong to "
                "real people. Use --force on a staging copy if you really mean it."
            )
        if not 0 <= contacts <= MAX_CONTACTS:
            raise CommandError(f"--contacts must be between 0 and {MAX_CONTACTS}.", returncode=2)
        started = time.monotonic()
        created = demo_load_all(contacts=contacts)
        self.stdout.write(f"{demo_summary(created)} ({time.monotonic() - started:.1f} s)")
