"""Benchmark of one campaign run (issue #7): schedule → snapshot → every send recorded, outbox channel.

    export LOOP_VAR_DIR=/tmp/var-campaigns DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop_campaigns_bench
    .venv/bin/python manage.py migrate && flock /tmp/loop-bench.lock .venv/bin/python bench/campaign_run.py

Creates the contacts (with email consent) once, removes the sends of earlier benchmark campaigns (so that the
frequency cap, left at its settings, does not skip anyone), then runs a campaign with two variants to all of them in
this process the way one worker would: ``run_start`` (the snapshot) and then every chunk task in turn
(``sends_process``: claim, checks, render, outbox batch, record). Prints the time of each phase, sends/s, the
statements per chunk, the CPU seconds of the process and of its PostgreSQL backend (wall time on a shared machine
depends on the others; CPU time much less), the process's RSS along the run and its peak, and verifies in SQL that
every contact has exactly one send, sent, and one outbox message.

Then, in the same process, the **naive** comparison: the same campaign done the way a straightforward Django app
does it, one ORM ``save()`` per send and per-contact queries for each check, on ``--naive`` contacts (5,000 by
default), extrapolated to sends/s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")

BENCH_PREFIX = "bench "


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS of this process (Linux ≥ 4.0), so the peak is the run's, not the setup's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backend_cpu_seconds() -> float:
    """CPU seconds (user + system) of this connection's PostgreSQL backend process (same machine), from /proc."""
    from django.db import connection

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_quiet(seconds: float, threshold: float = 1.5) -> None:
    """Wait up to ``seconds`` for the 1-minute load average to fall below ``threshold`` (a shared machine)."""
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)


def ensure_contacts(count: int) -> None:
    from django.utils import timezone

    from crm.models import Consent, Contact

    have = Contact.objects.count()
    if have >= count:
        return
    now = timezone.now()
    for start in range(have, count, 10_000):
        batch = [
            Contact(external_id=f"bench-{i}", name=f"고객{i}", email=f"bench{i}@example.com")
            for i in range(start, min(start + 10_000, count))
        ]
        created = Contact.objects.bulk_create(batch, batch_size=5000)
        Consent.objects.bulk_create(
            [Consent(contact=c, purpose="email", granted=True, changed_at=now, source="bench") for c in created],
            batch_size=5000,
        )


def forget_earlier_runs() -> None:
    """Delete the sends and outbox messages of earlier benchmark campaigns (raw SQL: hundreds of thousands)."""
    from django.db import connection

    from campaigns.models import Campaign

    ids = list(Campaign.objects.filter(name__startswith=BENCH_PREFIX).values_list("pk", flat=True))
    if not ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM campaigns_outboxmessage o USING campaigns_send s "
            "WHERE o.send_id = s.id AND s.campaign_id = ANY(%s)",
            [ids],
        )
        cursor.execute("DELETE FROM campaigns_send WHERE campaign_id = ANY(%s)", [ids])
    Campaign.objects.filter(pk__in=ids).delete()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE campaigns_send")
        cursor.execute("VACUUM ANALYZE campaigns_outboxmessage")


def bench_campaign(label: str):
    from django.utils import timezone

    from campaigns.models import Campaign, Variant
    from crm.models import Segment

    segment, _ = Segment.objects.get_or_create(
        name="bench-everyone",
        defaults={"rules": {"version": 1, "root": {"type": "group", "op": "and", "children": []}}},
    )
    campaign = Campaign.objects.create(
        name=f"{BENCH_PREFIX}{label} {timezone.now():%H:%M:%S}",
        channel="email",
        segment=segment,
        status=Campaign.Status.SCHEDULED,
    )
    Variant.objects.create(campaign=campaign, name="A", subject="#{고객명}님", body="#{고객명|고객}님, 주말 한정 할인!")
    Variant.objects.create(campaign=campaign, name="B", subject="#{고객명}님", body="#{고객명|고객}님, 곧 끝나요!")
    return campaign


def verify(run) -> dict:
    """Counts straight from SQL: sends, sent, distinct contacts, contacts with more than one send or outbox
    message, outbox messages of the run."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'sent'), count(DISTINCT contact_id) "
            "FROM campaigns_send WHERE run_id = %s",
            [run.pk],
        )
        sends, sent, contacts = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM (SELECT contact_id FROM campaigns_send WHERE run_id = %s "
            "GROUP BY contact_id HAVING count(*) > 1) d",
            [run.pk],
        )
        (duplicate_sends,) = cursor.fetchone()
        cursor.execute(
            "SELECT count(*), count(DISTINCT s.contact_id) FROM campaigns_outboxmessage o "
            "JOIN campaigns_send s ON s.id = o.send_id WHERE s.run_id = %s",
            [run.pk],
        )
        outbox, outbox_contacts = cursor.fetchone()
    return {
        "sends": sends,
        "sent": sent,
        "contacts": contacts,
        "duplicate_sends": duplicate_sends,
        "outbox": outbox,
        "duplicate_outbox": outbox - outbox_contacts,
    }


def set_based(args) -> dict:
    from django.conf import settings
    from django.db import connection, reset_queries
    from django.utils import timezone

    from campaigns import tasks
    from campaigns.models import Run
    from campaigns.services.runs import run_create, run_start
    from campaigns.services.sending import sends_process
    from crm.models import Contact

    campaign = bench_campaign("set-based")
    chunks: list[list[int]] = []
    real_delay = tasks.send_chunk.delay
    tasks.send_chunk.delay = chunks.append  # the chunk tasks, run below one after the other like one worker
    reset_peak_rss()
    rss = {"start": rss_mib()}
    cpu_before = own_cpu_seconds(), backend_cpu_seconds()
    load_before = os.getloadavg()[0]
    try:
        started = time.perf_counter()
        run, _ = run_create(campaign=campaign, scheduled_for=timezone.now())
        run_start(run_id=run.pk)
        snapshot = time.perf_counter() - started
        rss["after snapshot"] = rss_mib()
        chunk_times, statements = [], []
        for index, ids in enumerate(chunks):
            connection.force_debug_cursor = index == 1  # count the statements of one chunk
            reset_queries()
            begun = time.perf_counter()
            sends_process(send_ids=ids)
            chunk_times.append(time.perf_counter() - begun)
            if index == 1:
                statements.append(len(connection.queries))
                connection.force_debug_cursor = False
            if index in (len(chunks) // 4, len(chunks) // 2, 3 * len(chunks) // 4):
                rss[f"after {index + 1} chunks"] = rss_mib()
        total = time.perf_counter() - started
        cpu = own_cpu_seconds() - cpu_before[0], backend_cpu_seconds() - cpu_before[1]
    finally:
        tasks.send_chunk.delay = real_delay
    rss["end"] = rss_mib()
    run.refresh_from_db()
    counts = verify(run)
    audience = Contact.objects.count()
    return {
        "audience": audience,
        "chunks": len(chunks),
        "chunk_size": settings.LOOP_SEND_CHUNK_SIZE,
        "snapshot": snapshot,
        "sending": total - snapshot,
        "total": total,
        "sends_per_s": counts["sent"] / total,
        "chunk_median": statistics.median(chunk_times) if chunk_times else 0,
        "chunk_max": max(chunk_times, default=0),
        "statements_per_chunk": statements[0] if statements else None,
        "rss": rss,
        "peak_rss": peak_rss_mib(),
        "cpu_python": cpu[0],
        "cpu_postgres": cpu[1],
        "load": (load_before, os.getloadavg()[0]),
        "run_status": run.status,
        "verify": counts,
        "ok": (
            counts["sends"] == counts["sent"] == counts["outbox"] == counts["contacts"] == audience
            and counts["duplicate_sends"] == counts["duplicate_outbox"] == 0
            and run.status == Run.Status.COMPLETED
        ),
    }


def naive(count: int) -> dict:
    """The campaign as a straightforward Django app writes it: a ``Send`` saved per contact, then per send a query
    per check, the render data of one contact, one outbox ``create()`` and one ``save()``."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from campaigns.assignment import Assigner
    from campaigns.models import OutboxMessage, Run, Send, Suppression
    from campaigns.personalization import build_render_data
    from campaigns.services.sending import render_content
    from crm.models import Consent, Contact

    campaign = bench_campaign("naive")
    variants = list(campaign.variants.order_by("id"))
    assigner = Assigner(
        campaign_id=campaign.pk,
        seed=campaign.assignment_seed,
        variants=[(v.pk, v.weight) for v in variants],
        holdout_percent=0,
    )
    by_id = {v.pk: v for v in variants}
    started = time.perf_counter()
    now = timezone.now()
    run = Run.objects.create(campaign=campaign, scheduled_for=now, status=Run.Status.SENDING, started_at=now)
    for contact in Contact.objects.order_by("id")[:count]:
        Send(
            campaign=campaign,
            run=run,
            contact=contact,
            variant=by_id[assigner.assign(contact.pk).variant_id],
            channel="email",
            due_at=now,
        ).save()
    snapshot = time.perf_counter() - started
    day_cap = settings.LOOP_FREQUENCY_CAP_DAY
    for send in Send.objects.filter(run=run).select_related("contact", "variant", "campaign").order_by("id"):
        contact = send.contact
        send.status = Send.Status.SKIPPED
        if not Consent.objects.filter(contact=contact, purpose="email", granted=True).exists():
            send.skip_reason = "no_consent"
        elif Suppression.objects.filter(contact=contact, channel="email").exists():
            send.skip_reason = "suppressed"
        elif day_cap and (
            Send.objects.filter(contact=contact, status="sent", sent_at__gt=now - timedelta(days=1)).count() >= day_cap
        ):
            send.skip_reason = "frequency_cap"
        else:
            data = build_render_data([contact.pk], variables=send.variant.variables)[contact.pk]
            content = render_content(campaign=send.campaign, variant=send.variant, data=data)
            OutboxMessage.objects.create(send=send, channel="email", to=contact.email, **content)
            send.status, send.sent_at, send.content, send.address = Send.Status.SENT, now, content, contact.email
        send.finished_at = now
        send.save()
    total = time.perf_counter() - started
    run.status = Run.Status.COMPLETED
    run.save(update_fields=["status"])
    counts = verify(run)
    return {"contacts": count, "snapshot": snapshot, "total": total, "sends_per_s": counts["sent"] / total, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=5_000, help="contacts of the naive comparison (0: skip it)")
    parser.add_argument("--chunk-size", type=int, help="LOOP_SEND_CHUNK_SIZE for this run")
    parser.add_argument("--wait-quiet", type=float, default=0, help="wait up to S seconds for a load average < 1.5")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("the benchmark runs on PostgreSQL: set DATABASE_URL")
    if args.chunk_size:
        settings.LOOP_SEND_CHUNK_SIZE = args.chunk_size
    ensure_contacts(args.contacts)
    forget_earlier_runs()
    wait_quiet(args.wait_quiet)
    print(
        f"frequency cap {settings.LOOP_FREQUENCY_CAP_DAY}/day {settings.LOOP_FREQUENCY_CAP_WEEK}/week; "
        f"chunk size {settings.LOOP_SEND_CHUNK_SIZE}; load average {os.getloadavg()[0]:.2f}"
    )

    result = set_based(args)
    print(f"audience {result['audience']:,}; {result['chunks']} chunks of {result['chunk_size']}")
    print(f"  snapshot (INSERT…SELECT with assignment + enqueue): {result['snapshot']:.2f} s")
    print(
        f"  sending ({result['chunks']} chunks, one after the other): {result['sending']:.2f} s; per chunk median "
        f"{result['chunk_median'] * 1000:.0f} ms, max {result['chunk_max'] * 1000:.0f} ms; "
        f"{result['statements_per_chunk']} statements per chunk"
    )
    print(f"  schedule → every send recorded: {result['total']:.2f} s, {result['sends_per_s']:,.0f} sends/s")
    print(
        f"  CPU: Python {result['cpu_python']:.1f} s + PostgreSQL backend {result['cpu_postgres']:.1f} s "
        f"(load average {result['load'][0]:.2f} before, {result['load'][1]:.2f} after)"
    )
    print("  RSS: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in result["rss"].items()))
    print(f"  peak RSS during the run {result['peak_rss']:.0f} MiB; run {result['run_status']}")
    print(f"  verified in SQL: {result['verify']}")

    if args.naive:
        slow = naive(args.naive)
        print(f"naive (one ORM save per send, queries per contact), {slow['contacts']:,} contacts:")
        print(
            f"  snapshot {slow['snapshot']:.2f} s, total {slow['total']:.2f} s, {slow['sends_per_s']:,.0f} sends/s; "
            f"100,000 extrapolated: {100_000 / slow['sends_per_s']:.0f} s"
        )
        print(f"  verified in SQL: sent {slow['sent']:,}, duplicates {slow['duplicate_sends']}")
        print(f"ratio: {result['sends_per_s'] / slow['sends_per_s']:.1f}× the naive sends/s")
    if not result["ok"]:
        sys.exit("lost, duplicated or unsent sends")


if __name__ == "__main__":
    main()
