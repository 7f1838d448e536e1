"""The seed's weekend promo, set up in a real browser as a marketer would, fired by beat's schedule, reported.

Every Sunday at 20:00 Asia/Seoul, 4 hours before the weekend promotion ends, everyone who viewed the promo page this
week gets "고객님, 주말 한정 할인이 4시간 뒤 종료돼요!" as an app push. In the browser: the segment, the campaign with
two weighted variants, a 10 % holdout and the recurring schedule, saved and scheduled. Outside it, with time-machine:
the campaign's own beat entry is not due at 19:59 and due at 20:00; what beat then runs sends exactly to the
segment's consenting, reachable members minus the holdout, each message personalized. Back in the browser: the run's
report with its per-variant counts. Screenshots for docs/campaigns.md: campaign-weekend-promo*.png,
campaign-run-report.png.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from datetime import datetime, time, timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

import campaigns.tasks  # noqa: F401  (registers the tasks beat sends, as a worker does at start)
from campaigns.models import Campaign, OutboxMessage, Run, Send, SkipReason
from campaigns.services.attribution import conversions_attribute
from config.celery import app as celery_app
from crm.models import Segment
from crm.tests.factories import ConsentFactory, ContactFactory, DeviceFactory, EventFactory, SourceFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")
PROMO_PAGE = "주말 한정 할인"
SEGMENT_NAME = "이번 주 주말 프로모션 페이지 방문"
SEGMENT_RULES = {
    "version": 1,
    "root": {
        "type": "group",
        "op": "and",
        "children": [{"type": "event", "op": "did", "name": PROMO_PAGE, "when": {"op": "this_week"}}],
    },
}
BODY_A = "#{고객명|고객}님, 주말 한정 할인이 4시간 뒤 종료돼요!"
BODY_B = "#{고객명|고객}님, 오늘 밤 12시에 주말 할인이 끝나요. 지금 #{할인 금액:number}원 더 할인받으세요!"
#: Viewers with push and advertising consent and an app install: the ones who can get it (enough that a 10 % holdout
#: is never empty: 0.9^60 < 0.2 %).
REACHABLE_VIEWERS = 60


def next_sunday_8pm(now: datetime) -> datetime:
    """The first Sunday 20:00 in Seoul at least a day after ``now``."""
    local = now.astimezone(SEOUL) + timedelta(days=1)
    days = (6 - local.weekday()) % 7
    return datetime.combine(local.date() + timedelta(days=days), time(20, 0), tzinfo=SEOUL)


@pytest.fixture
def shop(db):
    """Contacts around the coming Sunday: who viewed the promo page that week, with and without consent."""
    sunday = next_sunday_8pm(timezone.now())
    saturday = sunday - timedelta(days=1, hours=5)  # Saturday 15:00: the promotion's first day
    source = SourceFactory(name="shop")

    def viewer(*, at=saturday, push=True, ads=True, device=True, **fields):
        contact = ContactFactory(**fields)
        EventFactory(contact=contact, source=source, type="page", name=PROMO_PAGE, occurred_at=at)
        for purpose, granted in (("push", push), ("ads", ads)):
            if granted:
                ConsentFactory(contact=contact, purpose=purpose)
        if device:
            DeviceFactory(contact=contact)
        return contact

    reachable = [viewer() for _ in range(REACHABLE_VIEWERS - 1)]
    reachable.append(viewer(name=""))  # no name: "고객님"
    return {
        "sunday": sunday,
        "reachable": reachable,
        "no_push_consent": viewer(push=False),
        "no_ads_consent": viewer(ads=False),
        "no_device": viewer(device=False),
        "last_week": viewer(at=saturday - timedelta(days=7)),
        "never_viewed": ContactFactory(),
        "source": source,
    }


def fill_variant(page, index: int, *, name: str, weight: int, subject: str, body: str, variables: str = "{}"):
    prefix = f"#id_variants-{index}-"
    page.fill(prefix + "name", name)
    page.fill(prefix + "weight", str(weight))
    page.fill(prefix + "subject", subject)
    page.fill(prefix + "body", body)
    page.fill(prefix + "variables", variables)


def report_cells(page, selector: str) -> list[str]:
    return [cell.strip() for cell in page.locator(f"{selector} > *").all_text_contents()]


def test_the_marketer_schedules_the_weekend_promo_and_reads_the_run_report(admin_page, shop, screenshot):
    page = admin_page

    # 1. The audience: a segment of this week's promo page viewers, as JSON rules.
    page.goto(reverse("admin:crm_segment_add"))
    page.fill("#id_name", SEGMENT_NAME)
    page.fill("#id_description", "이번 주(월~일)에 ‘주말 한정 할인’ 페이지를 본 고객")
    page.click(".loop-rb-json-toggle")  # the rule builder's "JSON (advanced)" view
    page.fill("#id_rules", json.dumps(SEGMENT_RULES, ensure_ascii=False))
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    assert Segment.objects.get(name=SEGMENT_NAME).rules == SEGMENT_RULES

    # 2. The campaign: channel, purpose, audience, goal, recurring schedule, holdout, two weighted variants.
    page.goto(reverse("admin:campaigns_campaign_add"))
    page.fill("#id_name", "주말 프로모션 마감 알림")
    page.select_option("#id_channel", "push")
    page.select_option("#id_purpose", "advertising")
    page.select_option("#id_segment", label=SEGMENT_NAME)
    page.fill("#id_goal_event", "Order Completed")
    page.fill("#id_attribution_window_hours", "72")
    page.select_option("#id_schedule", "recurring")
    page.fill("#id_cron_minute", "0")
    page.fill("#id_cron_hour", "20")
    page.fill("#id_cron_day_of_week", "sun")
    page.fill("#id_time_zone", "Asia/Seoul")
    page.fill("#id_holdout_percent", "10")
    fill_variant(page, 0, name="A", weight=2, subject="주말 한정 할인", body=BODY_A)
    page.locator("#variants-group .add-row a").click()
    fill_variant(page, 1, name="B", weight=1, subject="오늘 밤 12시 마감", body=BODY_B, variables='{"할인 금액": 5000}')
    page.click("#toggle-nav-sidebar")  # the whole form, without the navigation beside it
    screenshot(page, "campaign-weekend-promo-form", full_page=True)
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")

    campaign = Campaign.objects.get()
    assert campaign.status == Campaign.Status.DRAFT
    assert [(v.name, v.weight) for v in campaign.variants.order_by("name")] == [("A", 2), ("B", 1)]

    # 3. Schedule it: the campaign's own beat entry is created.
    page.click("button[data-action=schedule]")
    page.wait_for_selector(".messagelist .success")
    assert page.locator(".field-status .readonly").text_content().strip() == "예약됨"
    next_run = page.locator(".field-next_run_display .readonly").text_content().strip()
    assert next_run == shop["sunday"].strftime("%Y-%m-%d 20:00 KST")
    screenshot(page, "campaign-weekend-promo")
    schedule = page.locator("fieldset.module", has=page.locator("#id_schedule"))
    box = schedule.bounding_box()  # in the viewport: the clip of a full-page screenshot is in the page
    box["y"] += page.evaluate("window.scrollY")
    screenshot(page, "campaign-weekend-promo-schedule", full_page=True, clip=box)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
    assert task.name == f"campaign:{campaign.pk}"
    assert task.enabled
    assert task.task == "campaigns.fire_recurring"
    assert json.loads(task.kwargs) == {"campaign_id": campaign.pk}
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week) == ("0", "20", "sun")
    assert (crontab.day_of_month, crontab.month_of_year) == ("*", "*")
    assert str(crontab.timezone) == "Asia/Seoul"
    assert crontab.schedule.day_of_week == {0}  # celery's Sunday
    assert crontab.schedule.hour == {20}
    assert crontab.schedule.minute == {0}

    # 4. Beat, outside the browser: the entry is due at Sunday 20:00 Seoul time, not a minute before.
    task.last_run_at = timezone.now()
    task.save(update_fields=["last_run_at"])
    sunday = shop["sunday"]
    with time_machine.travel(sunday - timedelta(seconds=30), tick=False):
        entry = ModelEntry(PeriodicTask.objects.get(pk=task.pk), app=celery_app)
        assert not entry.is_due().is_due
    with time_machine.travel(sunday + timedelta(seconds=5), tick=False):
        assert entry.is_due().is_due
        # What beat sends, run by this process's worker (the campaigns tests run tasks eagerly, on commit).
        celery_app.tasks[task.task].apply(kwargs=json.loads(task.kwargs))

    run = Run.objects.get(campaign=campaign)
    assert run.scheduled_for == sunday
    assert run.status == Run.Status.COMPLETED
    viewers = {c.pk for c in shop["reachable"]} | {
        shop[k].pk for k in ("no_push_consent", "no_ads_consent", "no_device")
    }
    sends = {s.contact_id: s for s in run.sends.select_related("variant")}
    assert set(sends) == viewers  # the segment that Sunday: not last week's viewer, not the one who never looked
    holdout = {cid for cid, s in sends.items() if s.is_holdout}
    assert holdout
    assert all(sends[cid].skip_reason == SkipReason.HOLDOUT for cid in holdout)
    reasons = {
        "no_push_consent": SkipReason.NO_CONSENT,
        "no_ads_consent": SkipReason.NO_ADS_CONSENT,
        "no_device": SkipReason.UNREACHABLE,
    }
    for key, reason in reasons.items():
        if shop[key].pk not in holdout:
            assert sends[shop[key].pk].skip_reason == reason, key
    expected = {c.pk for c in shop["reachable"]} - holdout
    delivered = {cid for cid, s in sends.items() if s.status == Send.Status.SENT}
    assert delivered == expected  # exactly the consenting, reachable members minus the holdout
    assert {s.variant.name for cid, s in sends.items() if cid in delivered} == {"A", "B"}

    messages = {m.send.contact_id: m for m in OutboxMessage.objects.select_related("send__contact", "send__variant")}
    assert set(messages) == expected
    for message in messages.values():
        contact, variant = message.send.contact, message.send.variant
        greeting = f"{contact.name or '고객'}님"
        if variant.name == "A":
            assert message.body == f"{greeting}, 주말 한정 할인이 4시간 뒤 종료돼요!"
        else:
            assert message.body == f"{greeting}, 오늘 밤 12시에 주말 할인이 끝나요. 지금 5,000원 더 할인받으세요!"
        assert message.subject.startswith("(광고)")  # the advertising form, added by the pipeline
    # A recipient of A orders at 21:00 that Sunday: a conversion of A.
    buyer = next(cid for cid in sorted(expected) if sends[cid].variant.name == "A")
    EventFactory(
        contact_id=buyer, source=shop["source"], name="Order Completed", occurred_at=sunday + timedelta(hours=1)
    )

    conversions_attribute(now=sunday + timedelta(hours=2))  # the beat task's pass after the order

    # 5. The run's report in the browser.
    page.goto(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    page.locator("#runs-group a.inlineviewlink").first.click()
    page.wait_for_selector("[data-testid=run-report]")
    by_variant = {
        name: [s for s in sends.values() if not s.is_holdout and s.variant.name == name] for name in ("A", "B")
    }
    for name, rows in by_variant.items():
        sent = sum(s.status == Send.Status.SENT for s in rows)
        skipped = sum(s.status == Send.Status.SKIPPED for s in rows)
        converted = int(name == "A")
        rate = f"{converted / sent:.1%}"
        cells = report_cells(page, f"tr[data-variant={name}]")
        assert cells[:6] == [name, str(len(rows)), str(sent), str(skipped), "0", "0"]
        assert cells[6:11] == ["0 (0.0%)", "0 (0.0%)", "0 (0.0%)", str(converted), rate]  # no receipts in the outbox
        assert cells[-1] == ("대조군" if name == "A" else "판단하기에 표본이 너무 적음")
    assert report_cells(page, "tr[data-variant=holdout]")[:2] == ["대조군", str(len(holdout))]
    reason_rows = page.locator("[data-testid=run-skip-reasons] tbody tr")
    shown = {row.get_attribute("data-reason") for row in reason_rows.all()}
    assert shown == {reason for key, reason in reasons.items() if shop[key].pk not in holdout}
    assert re.search(r"채널 수신 동의 없음|광고 수신 동의 없음|채널 연락처 없음", reason_rows.first.text_content())
    screenshot(page, "campaign-run-report", full_page=True)
