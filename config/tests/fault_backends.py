"""Fault injection for the fault tests' worker processes (``celery worker -I config.tests.fault_backends``).

* A slow outbox: the outbox stores each message once (one row per send, idempotent); this one takes
  ``LOOP_FAULT_SEND_DELAY`` seconds per batch of five, so a chunk is still being delivered when the test kills its
  worker or restarts the broker.
* A slow journey send step: with ``LOOP_FAULT_STEP_DELAY`` set (seconds), the engine's send-step handler sleeps that
  long *after* it made its group's sends, inside the batch's advance transaction (the enrollments are claimed, the
  sends written but not committed), and first writes ``fault: journey send step`` to the process's stderr (the
  worker's log), so the test knows a batch is in that window and can kill the worker there.
"""

from __future__ import annotations

import os
import time

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, Message, SendResult
from campaigns.channels.outbox import OutboxBackend
from journeys.models import Step
from journeys.services import engine

STEP_MARK = "fault: journey send step"


@register_backend
class SlowOutboxBackend(OutboxBackend):
    name = "slow_outbox"
    capabilities = Capabilities(max_batch_size=5, idempotent=True)

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        time.sleep(float(os.environ.get("LOOP_FAULT_SEND_DELAY", "0.1")))
        return super().send_batch(messages)


def slow_send_step(handler):
    delay = float(os.environ.get("LOOP_FAULT_STEP_DELAY") or 0)
    if delay <= 0:
        return handler

    def slow(step: Step, moves: list, batch) -> None:
        handler(step, moves, batch)
        os.write(2, f"{STEP_MARK}: {len(moves)} sends made, sleeping {delay}s before the commit\n".encode())
        time.sleep(delay)

    return slow


engine.HANDLERS[Step.Kind.SEND] = slow_send_step(engine.HANDLERS[Step.Kind.SEND])
