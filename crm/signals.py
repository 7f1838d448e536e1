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
"""

import django.dispatch

events_recorded = django.dispatch.Signal()
