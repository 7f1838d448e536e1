"""Campaign rows of a contact merged into another (``crm.signals.contacts_merging``).

Sends, suppressions and advertising-consent notices move to the surviving contact, so the frequency cap, the
suppression list, "received this campaign" and the reports keep counting what the person received. Where both
profiles have a row that may exist only once (a send of the same run, a suppression of the same channel, a notice
of the same period), the survivor's row is kept and the merged contact's row is deleted with it.
"""

from __future__ import annotations

from campaigns.models import AdsConsentNotice, Send, Suppression


def campaign_rows_merge(*, from_contact_id: int, into_contact_id: int) -> dict[str, int]:
    moved = {}
    sends = Send.objects.filter(contact_id=from_contact_id)
    taken_runs = Send.objects.filter(contact_id=into_contact_id, run__isnull=False).values("run_id")
    moved["sends"] = sends.exclude(run_id__in=taken_runs).update(contact_id=into_contact_id)
    for model, key in ((Suppression, "channel"), (AdsConsentNotice, "anniversary")):
        taken = model.objects.filter(contact_id=into_contact_id).values(key)
        moved[model._meta.model_name] = (
            model.objects.filter(contact_id=from_contact_id)
            .exclude(**{f"{key}__in": taken})
            .update(contact_id=into_contact_id)
        )
    return moved
