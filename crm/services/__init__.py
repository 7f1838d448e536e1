"""The crm app's writers. Every change to contacts, consent, events and commerce state goes through here.

Split by topic; import from ``crm.services`` (this module re-exports the public functions).
"""

from crm.services.system import heartbeat_record

__all__ = ["heartbeat_record"]
