"""Erasure on request (``crm.signals.contact_erased``): what journeys hold about a contact, anonymized.

Enrollments and their logs stay (journey reports count them) without the trigger data, the log details or errors
that may quote the contact's answers, form fields or addresses. Survey answers and lead-form submissions are events,
cleared by ``crm``. One ``UPDATE`` per table, inside the erasure's transaction.
"""

from __future__ import annotations

from journeys.models import Enrollment, EnrollmentLog


def contact_journeys_erase(*, contact_id: int) -> dict[str, int]:
    """Returns how many rows of each kind were anonymized."""
    enrollments = Enrollment.objects.filter(contact_id=contact_id)
    return {
        "logs": EnrollmentLog.objects.filter(enrollment__in=enrollments.values("pk")).update(detail=""),
        "enrollments": enrollments.update(context={}, last_error=""),
    }
