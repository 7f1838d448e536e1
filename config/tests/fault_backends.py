"""A slow outbox, for the fault tests' worker processes (``celery worker -I config.tests.fault_backends``).

The outbox stores each message once (one row per send, idempotent); this one takes ``LOOP_FAULT_SEND_DELAY``
seconds per batch of five, so a chunk is still being delivered when the test kills its worker or restarts the
broker.
"""

from __future__ import annotations

import os
import time

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, Message, SendResult
from campaigns.channels.outbox import OutboxBackend


@register_backend
class SlowOutboxBackend(OutboxBackend):
    name = "slow_outbox"
    capabilities = Capabilities(max_batch_size=5, idempotent=True)

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        time.sleep(float(os.environ.get("LOOP_FAULT_SEND_DELAY", "0.1")))
        return super().send_batch(messages)
