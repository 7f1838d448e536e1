"""``python manage.py load_playbook NAME``: create a playbook as a draft journey (``--list`` shows them)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from journeys.playbooks import PLAYBOOKS, playbook_choices, playbook_load


class Command(BaseCommand):
    help = "Create a ready-made journey (welcome, wishlist, cart_abandonment, coupon_expiry, …) as a draft."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", choices=sorted(PLAYBOOKS), help="The playbook to load.")
        parser.add_argument("--list", action="store_true", help="List the playbooks.")

    def handle(self, *args, name=None, list=False, **options):
        if list or not name:
            for key, label in playbook_choices():
                self.stdout.write(f"{key}: {label}")
            return
        try:
            journey = playbook_load(name=name)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the draft journey #{journey.pk} “{journey.name}” with {journey.steps.count()} steps."
            )
        )
