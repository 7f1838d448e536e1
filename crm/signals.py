"""The crm app's domain signal: the one hook through which other apps learn about stored events.

``events_recorded`` is sent once per stored batch, after the transaction that stored it has committed, with
``event_ids``: the primary keys of the events that were new in this batch (a retried, already stored message is
not announced again). Receivers live in the other apps' ``receivers.py`` and hand the ids to a service in one line;
``crm`` never imports them.
"""

import django.dispatch

events_recorded = django.dispatch.Signal()
