"""Recording clicks and opens of the tracked links (``campaigns.tracking``): one row per request, and the send's
first ``clicked_at``/``opened_at`` set by one conditional UPDATE (a click implies an open)."""

from __future__ import annotations

from datetime import datetime

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from campaigns.models import Click, Open, Send
from campaigns.tracking import bot_reason, client_ip, hash_ip, over_rate_limit

log = structlog.get_logger(__name__)


def hit_record(*, kind: str, send: dict, request, url: str = "", now: datetime | None = None) -> Click | Open | None:
    """Record a click (``kind="click"``, with its destination ``url``) or an open of ``send`` (a dict with ``id``,
    ``sent_at``, ``delivered_at``). Nothing is written when the client address is over the rate limit."""
    now = now or timezone.now()
    ip = client_ip(request)
    ip_hash = hash_ip(ip)
    if over_rate_limit(ip_hash):
        log.warning("tracking_rate_limited", kind=kind, send_id=send["id"])
        return None
    user_agent = request.META.get("HTTP_USER_AGENT", "")[:500]
    reason = bot_reason(
        method=request.method,
        user_agent=user_agent,
        ip=ip,
        kind=kind,
        at=now,
        delivered_at=send.get("delivered_at") or send.get("sent_at"),
    )
    fields = {"send_id": send["id"], "at": now, "user_agent": user_agent, "ip_hash": ip_hash}
    fields |= {"is_bot": bool(reason), "bot_reason": reason}
    counts = not reason or settings.LOOP_TRACKING_COUNT_BOTS
    with transaction.atomic():
        hit = Click.objects.create(url=url, **fields) if kind == "click" else Open.objects.create(**fields)
        if counts:
            first = Send.objects.filter(pk=send["id"])
            first.filter(opened_at=None).update(opened_at=now)
            if kind == "click":
                first.filter(clicked_at=None).update(clicked_at=now)
    return hit
