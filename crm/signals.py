"""The crm app's domain signal: the one hook through which other apps learn about stored events.

``events_recorded`` is sent by the event processing worker (``crm.services.event_processing``) when it applies a
batch of stored events to derived state, with ``event_ids``: the primary keys of that batch's events. Every stored
event is announced once (a retried message is not stored again), after its contact's profile, consent and commerce
state reflect it, normally within a second of the API's answer.

Receivers run **inside the batch's transaction**, each in a savepoint of its own: what a receiver writes (a journey
enrollment, an attributed conversion) commits together with the batch, so it happens exactly once, and never for a
batch that rolls back and is retried. A receiver that raises is logged, its writes are undone, and the batch and the
other receivers go on. Receivers must be quick and set-based (a batch has up to 1,000 events) and must queue Celery
tasks with ``transaction.on_commit``. They live in the other apps' ``receivers.py`` and hand the ids to a service
in one line; ``crm`` never imports them.

``contact_erased`` is sent by ``crm.services.contacts.contact_erase`` once a contact's crm data is anonymized, with
``contact_id`` and ``identifiers``: the personal values the contact had (email, phone, name, external ID,
anonymous IDs), so that a receiver can also clear copies held outside rows linked to the contact. It is sent
**inside the erasure's transaction** (no savepoint): a receiver that raises rolls the whole erasure back, so a contact
is never half-erased. Receivers anonymize their rows set-based (one ``UPDATE`` per table).
"""

import django.dispatch

events_recorded = django.dispatch.Signal()

contact_erased = django.dispatch.Signal()

#: Sent by ``crm.services.contacts.contact_merge`` inside its transaction, before the merged contact is deleted, with
#: ``from_contact_id`` and ``into_contact_id``: apps move their rows of the merged contact to the surviving one (what
#: the merged contact received counts for the survivor: frequency cap, suppressions, reports) instead of losing them
#: to the cascade.
contacts_merging = django.dispatch.Signal()
