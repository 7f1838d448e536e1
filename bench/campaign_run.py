"""Benchmark of one campaign run (issue #7): schedule → snapshot → every send recorded, outbox channel.

    export LOOP_VAR_DIR=/tmp/var-campaigns DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop_campaigns_bench
    .venv/bin/python manage.py migrate && .venv/bin/python bench/campaign_run.py [--contacts 100000]

Creates the contacts (with email consent) once, then runs a campaign to all of them in this process the way one
worker would: ``run_start`` (INSERT … SELECT snapshot, bulk assignment) and then every chunk task in turn
(``sends_process``: claim, checks, render, outbox batch, record). Prints the time of each phase, sends/s and peak
RSS, and verifies in SQL that every contact has exactly one send and one outbox message. The frequency cap is off
(the run would otherwise be capped by earlier benchmark runs).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db.models import Count
    from django.utils import timezone

    from campaigns.models import Campaign, OutboxMessage, Send, Variant
    from campaigns.services.runs import run_create, run_start
    from campaigns.services.sending import sends_process
    from crm.models import Consent, Contact, Segment

    settings.LOOP_FREQUENCY_CAP_DAY = settings.LOOP_FREQUENCY_CAP_WEEK = 0
    have = Contact.objects.count()
    if have < args.contacts:
        now = timezone.now()
        batch = [
            Contact(external_id=f"bench-{i}", name=f"고객{i}", email=f"bench{i}@example.com")
            for i in range(have, args.contacts)
        ]
        created = Contact.objects.bulk_create(batch, batch_size=5000)
        Consent.objects.bulk_create(
            [Consent(contact=c, purpose="email", granted=True, changed_at=now, source="bench") for c in created],
            batch_size=5000,
        )
    segment, _ = Segment.objects.get_or_create(
        name="bench-everyone",
        defaults={"rules": {"version": 1, "root": {"type": "group", "op": "and", "children": []}}},
    )
    campaign = Campaign.objects.create(
        name=f"bench {timezone.now():%H:%M:%S}", channel="email", segment=segment, status=Campaign.Status.SCHEDULED
    )
    Variant.objects.create(campaign=campaign, name="A", subject="#{고객명}님", body="#{고객명|고객}님, 주말 한정 할인!")
    Variant.objects.create(campaign=campaign, name="B", subject="#{고객명}님", body="#{고객명|고객}님, 곧 끝나요!")

    from campaigns import tasks

    chunks: list[list[int]] = []
    tasks.send_chunk.delay = chunks.append  # the chunk tasks, run below one after the other like one worker

    started = time.perf_counter()
    run, _ = run_create(campaign=campaign, scheduled_for=timezone.now())
    run_start(run_id=run.pk)
    snapshot = time.perf_counter() - started
    for ids in chunks:
        sends_process(send_ids=ids)
    total = time.perf_counter() - started
    sends = Send.objects.filter(run=run)
    sent = sends.filter(status="sent").count()
    outbox = OutboxMessage.objects.filter(send__run=run).count()
    audience = Contact.objects.count()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"audience {audience:,}; chunks {len(chunks)} of {settings.LOOP_SEND_CHUNK_SIZE}")
    print(f"snapshot (INSERT…SELECT + assignment + enqueue): {snapshot:.2f} s")
    print(f"schedule → every send recorded: {total:.2f} s, {sent / total:,.0f} sends/s, peak RSS {rss:.0f} MiB")
    variants = dict(sends.values_list("variant__name").annotate(n=Count("id")).order_by())
    print(f"sends {sends.count():,}, sent {sent:,}, outbox {outbox:,}, per variant {variants}")
    assert sends.count() == audience == sent == outbox, "lost or duplicated sends"


if __name__ == "__main__":
    main()
