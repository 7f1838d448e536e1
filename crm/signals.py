"""The crm app's domain signal: the one hook through which other apps learn about stored events.

``events_recorded`` is sent by the event processing worker (``crm.services.event_processing``) after it applied a
batch of stored events to derived state and committed, with ``event_ids``: the primary keys of that batch's events.
Every stored event is announced once (a retried message is not stored again), after its contact's profile, consent
and commerce state reflect it, normally within a second of the API's answer. The announcement is not itself
durable: a worker killed between the commit and the send leaves that batch applied but unannounced. It is sent with
``send_robust``: a receiver that raises is logged and does not affect the others. Receivers live in the other apps'
``receivers.py`` and hand the ids to a service in one line; ``crm`` never imports them.
"""

import django.dispatch

events_recorded = django.dispatch.Signal()
