"""The outbox backend: stores each rendered message in the database, viewable in the admin.

The default backend of every channel in development and tests, and the target of test sends and of
``LOOP_CHANNEL_DRY_RUN``. Idempotent: one outbox message per send or team notification (a re-delivered one stores
nothing new).
"""

from __future__ import annotations

from django.utils import timezone

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, ChannelBackend, Message, SendResult
from crm.db import bulk_upsert


@register_backend
class OutboxBackend(ChannelBackend):
    name = "outbox"
    capabilities = Capabilities(max_batch_size=1000, idempotent=True)

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        """One ``INSERT … ON CONFLICT (send) DO NOTHING`` for the batch's sends, one ``ON CONFLICT (notification)``
        for its team notifications (rows as one JSON parameter on PostgreSQL)."""
        from campaigns.models import OutboxMessage

        now = timezone.now()
        rows = [
            {
                # Team notifications (Slack, webhooks) are not sends: they are stored against their ledger row.
                "send_id": None if m.extra.get("notification_id") else m.send_id,
                "notification_id": m.extra.get("notification_id"),
                "channel": m.channel,
                "to": ", ".join(m.to) if isinstance(m.to, list) else m.to,
                "subject": m.subject,
                "preheader": m.preheader,
                "body": m.body,
                "html": m.html,
                "link_url": m.link_url,
                "advertising": m.advertising,
                "extra": m.extra,
                "created_at": now,
            }
            for m in messages
        ]
        bulk_upsert(OutboxMessage, [r for r in rows if r["send_id"] is not None], unique_fields=["send"])
        bulk_upsert(OutboxMessage, [r for r in rows if r["send_id"] is None], unique_fields=["notification"])
        return [SendResult(send_id=m.send_id, ok=True, provider_message_id=f"outbox-{m.send_id}") for m in messages]
