"""The outbox backend: stores each rendered message in the database, viewable in the admin.

The default backend of every channel in development and tests, and the target of test sends and of
``LOOP_CHANNEL_DRY_RUN``. Idempotent: one outbox message per send (a re-delivered send stores nothing new).
"""

from __future__ import annotations

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, ChannelBackend, Message, SendResult


@register_backend
class OutboxBackend(ChannelBackend):
    name = "outbox"
    capabilities = Capabilities(max_batch_size=1000, idempotent=True)

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        from campaigns.models import OutboxMessage

        rows = [
            OutboxMessage(
                send_id=m.send_id,
                channel=m.channel,
                to=", ".join(m.to) if isinstance(m.to, list) else m.to,
                subject=m.subject,
                preheader=m.preheader,
                body=m.body,
                html=m.html,
                link_url=m.link_url,
                advertising=m.advertising,
                extra=m.extra,
            )
            for m in messages
        ]
        OutboxMessage.objects.bulk_create(rows, ignore_conflicts=True)
        return [SendResult(send_id=m.send_id, ok=True, provider_message_id=f"outbox-{m.send_id}") for m in messages]
