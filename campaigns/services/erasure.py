"""Erasure on request (``crm.signals.contact_erased``): what the send pipeline holds about a contact, anonymized.

The rows stay, so that run counts, reports and frequency caps remain correct; what they said and to whom does
not. One ``UPDATE`` per table, inside the erasure's transaction.
"""

from __future__ import annotations

from campaigns.models import OutboxMessage, Send, Suppression


def contact_messages_erase(*, contact_id: int) -> dict[str, int]:
    """Clear the contact's rendered messages, addresses, provider receipts and suppression notes.

    Returns how many rows of each kind were anonymized.
    """
    sends = Send.objects.filter(contact_id=contact_id)
    return {
        "outbox": OutboxMessage.objects.filter(send__in=sends.values("pk")).update(
            to="", subject="", preheader="", body="", html="", link_url="", extra={}
        ),
        "sends": sends.update(content={}, context={}, address="", error="", delivery_detail=""),
        "suppressions": Suppression.objects.filter(contact_id=contact_id).update(detail=""),
    }
