"""The campaigns' demo data: the seed's two automated campaigns, with a history of real runs and sends.

Loaded by ``load_demo`` after the demo contacts (``crm.demo.register_demo``):

- **주말 프로모션 마감 알림** (the weekend promo): every Sunday at 20:00 Asia/Seoul, 4 hours before the weekend
  promotion ends, an app push to the segment "이번 주 주말 프로모션 페이지 방문"; an A/B test of two copies (A: the
  seed's "고객님, 주말 한정 할인이 4시간 뒤 종료돼요!", B: the midnight deadline with a 5,000원 discount), a 10 %
  holdout, goal ``Order Completed`` within 72 hours. Scheduled: it owns its PeriodicTask, so beat runs it next Sunday.
- **장바구니 리마인드** (the cart reminder): the seed's "#{고객명}님, 최근 장바구니에 담은 #{상품명} #{할인 금액}원
  할인 중이에요!" as an SMS, triggered one contact at a time (journeys send it 30 minutes after a checkout is left);
  skipped rather than held during quiet hours.

**History.** Each campaign is created as if four weeks before the first load (``HISTORY``). Its past is then made by
the real pipeline at past moments, in time order: the weekend promo's run of every Sunday 20:00 in that period
(``campaign_fire_recurring`` with that ``now``: audience snapshot, A/B and holdout assignment, consent, quiet hours and
frequency-cap checks, personalization, delivery, the run's counts), and a cart reminder 30 minutes after every
checkout the demo contacts left in that period (``campaign_send_one``). Sends held by quiet hours are delivered when
their hold ends. Everything is delivered to the outbox (``sends_replayed_to_outbox``): nothing leaves the system,
whatever ``CHANNEL_BACKENDS`` says, and no Celery task is sent.

**Idempotent.** Campaigns are found by name; one with that name that the demo did not make (another description)
is left alone, and so is a campaign a marketer paused or cancelled. The history's period is fixed by the campaign's
creation time, runs are unique per campaign and time and cart reminders per key, so loading again, on the same or a
later day, creates nothing, and a load that was interrupted is completed by the next one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign, OutboxMessage, Purpose, Run, Send, SenderProfile, Variant
from campaigns.senders import sender_profile_save
from campaigns.services.campaigns import campaign_save, campaign_schedule
from campaigns.services.runs import campaign_fire_recurring
from campaigns.services.schedules import cron_next_occurrence
from campaigns.services.sending import campaign_send_one, sends_process, sends_replayed_to_outbox
from crm.demo import EXTERNAL_ID_PREFIX, ORDER_COMPLETED, PROMO_PATH, SHOP_URL, register_demo
from crm.models import Cart, Segment
from crm.segments.examples import EXAMPLES
from crm.services.segments import segment_create

#: How long before the first load the demo campaigns were created: their history covers this period (the demo
#: contacts' activity covers the last 30 days).
HISTORY = timedelta(days=28)
#: A campaign that holds advertising during quiet hours stops its history this long before the first load, so that
#: a held send (at most 11 hours, until 08:00) is delivered within the history: nothing is left for the live
#: pipeline. The cart reminder skips quiet hours instead (a reminder the next morning is stale), so it needs none.
HOLD_MARGIN = timedelta(hours=12)
CART_REMINDER_DELAY = timedelta(minutes=30)

DEMO_DESCRIPTION_MARK = "(데모 데이터)"
PROMO_SEGMENT, CART_SEGMENT = EXAMPLES[0][0], EXAMPLES[1][0]

WEEKEND_PROMO = {
    "name": "주말 프로모션 마감 알림",
    "description": (
        "주말 이틀간 진행하는 할인 프로모션의 마감 4시간 전(일요일 20:00) 앱 푸시. 이번 주 프로모션 페이지를 본 "
        "고객에게 보냅니다. 문구 A/B 테스트, 대조군 10%. " + DEMO_DESCRIPTION_MARK
    ),
    "kind": Campaign.Kind.BROADCAST,
    "channel": "push",
    "purpose": Purpose.ADVERTISING,
    "goal_event": ORDER_COMPLETED,
    "attribution_window_hours": 72,
    "schedule": Campaign.Schedule.RECURRING,
    "cron_minute": "0",
    "cron_hour": "20",
    "cron_day_of_week": "sun",
    "cron_day_of_month": "*",
    "cron_month_of_year": "*",
    "time_zone": "Asia/Seoul",
    "holdout_percent": 10,
}
WEEKEND_PROMO_VARIANTS = [
    {
        "name": "A",
        "weight": 1,
        "subject": "주말 한정 할인",
        "body": "#{고객명|고객}님, 주말 한정 할인이 4시간 뒤 종료돼요!",
        "link_url": f"{SHOP_URL}{PROMO_PATH}",
    },
    {
        "name": "B",
        "weight": 1,
        "subject": "오늘 밤 12시 마감",
        "body": "#{고객명|고객}님, 오늘 밤 12시에 주말 할인이 끝나요. 지금 #{할인 금액:number}원 더 할인받으세요!",
        "link_url": f"{SHOP_URL}{PROMO_PATH}",
        "variables": {"할인 금액": 5000},
    },
]
CART_REMINDER = {
    "name": "장바구니 리마인드",
    "description": (
        "결제 단계에서 이탈한 고객에게 30분 뒤 보내는 문자. 여정이 고객마다 한 건씩 보냅니다. " + DEMO_DESCRIPTION_MARK
    ),
    "kind": Campaign.Kind.TRIGGERED,
    "channel": "sms",
    "purpose": Purpose.ADVERTISING,
    "goal_event": ORDER_COMPLETED,
    "attribution_window_hours": 72,
    "schedule": Campaign.Schedule.NOW,
    "quiet_hours": Campaign.QuietHours.SKIP,
}
CART_REMINDER_VARIANTS = [
    {
        "name": "A",
        "weight": 1,
        "subject": "장바구니 상품 할인 중",
        "body": "#{고객명}님, 최근 장바구니에 담은 #{상품명} #{할인 금액:number}원 할인 중이에요!",
        "variables": {"할인 금액": 10000},
    }
]

CREATED_KEYS = ("campaigns", "variants", "runs", "campaign_sends", "outbox_messages")
LABELS = {
    "campaigns": ("campaign", "campaigns"),
    "variants": ("variant", "variants"),
    "runs": ("run", "runs"),
    "campaign_sends": ("send", "sends"),
    "outbox_messages": ("outbox message", "outbox messages"),
}


#: The demo's SMS caller number, made the default SMS sender profile when there is none (SMS campaigns need one).
DEMO_SMS_SENDER = {"kind": SenderProfile.Kind.SMS, "label": "Loop Shop 고객센터", "value": "+8215880000"}


def _sms_sender() -> None:
    if not SenderProfile.objects.filter(kind=SenderProfile.Kind.SMS, is_default=True).exists():
        profile = SenderProfile.objects.filter(kind=DEMO_SMS_SENDER["kind"], value=DEMO_SMS_SENDER["value"]).first()
        profile = profile or SenderProfile(**DEMO_SMS_SENDER)
        profile.is_default = True
        sender_profile_save(profile=profile)


def _segment(name: str) -> Segment:
    """The ready-made segment the crm demo loaded (made again, through the service, if it was renamed)."""
    segment = Segment.objects.filter(name=name).first()
    if segment is not None:
        return segment
    _name, description, rules = next(example for example in EXAMPLES if example[0] == name)
    return segment_create(name=name, description=description, rules=rules)


@transaction.atomic
def _campaign(spec: dict, variants: list[dict], *, segment: Segment | None, now: datetime) -> tuple[Campaign, int]:
    """The demo campaign named ``spec["name"]``, created (with its variants, then scheduled) as of ``now``.
    Returns it and the number of rows created."""
    existing = Campaign.objects.filter(name=spec["name"]).order_by("id").first()
    if existing is not None:
        return existing, 0
    if spec["channel"] == "sms":
        _sms_sender()
    campaign = Campaign(**spec, segment=segment)
    campaign_save(campaign=campaign, now=now)
    for variant in variants:
        Variant.objects.create(campaign=campaign, **variant)
    campaign_schedule(campaign=campaign, now=now)
    campaign.refresh_from_db()
    return campaign, 1 + len(variants)


def _is_demo(campaign: Campaign) -> bool:
    return DEMO_DESCRIPTION_MARK in campaign.description and campaign.status in (
        Campaign.Status.SCHEDULED,
        Campaign.Status.RUNNING,
    )


def _history_end(campaign: Campaign) -> datetime:
    margin = HOLD_MARGIN if campaign.quiet_hours == Campaign.QuietHours.HOLD else timedelta(0)
    return campaign.created_at + HISTORY - margin


def _promo_moments(campaign: Campaign) -> list[tuple[datetime, Callable[[], None]]]:
    """The weekend promo's Sundays 20:00 in its history period that have no run yet."""
    end = _history_end(campaign)
    done = set(campaign.runs.values_list("scheduled_for", flat=True))
    moments = []
    moment = cron_next_occurrence(campaign, after=campaign.created_at)
    while moment is not None and moment <= end:
        if moment not in done:
            moments.append((moment, lambda at=moment: campaign_fire_recurring(campaign_id=campaign.pk, now=at)))
        moment = cron_next_occurrence(campaign, after=moment)
    return moments


def _cart_moments(campaign: Campaign) -> list[tuple[datetime, Callable[[], None]]]:
    """A reminder 30 minutes after each checkout a demo contact left in the history period (not sent yet)."""
    start, end = campaign.created_at, _history_end(campaign)
    carts = (
        Cart.objects.filter(
            contact__external_id__startswith=EXTERNAL_ID_PREFIX,
            checkout_started_at__gte=start - CART_REMINDER_DELAY,
            checkout_started_at__lte=end - CART_REMINDER_DELAY,
        )
        .exclude(items=[])
        .select_related("contact")
        .order_by("checkout_started_at", "contact_id")
    )
    moments = []
    for cart in carts:
        key = f"demo:cart-reminder:{cart.contact.external_id}:{cart.checkout_started_at:%Y%m%dT%H%M%S}"
        if Send.objects.filter(key=key).exists():
            continue
        at = cart.checkout_started_at + CART_REMINDER_DELAY
        # The trigger's data as a journey passes it: the left checkout's value; #{상품명} is the cart's first item.
        context = {"event": {"value": float(cart.value), "currency": cart.currency}}

        def send(at=at, key=key, contact_id=cart.contact_id, context=context) -> None:
            campaign_send_one(campaign=campaign, contact_id=contact_id, key=key, context=context, now=at)

        moments.append((at, send))
    return moments


def _deliver_held(campaign_ids: list[int], *, until: datetime) -> None:
    """Sends of these campaigns held by quiet hours, delivered when their hold ended (in time order)."""
    due: dict[datetime, list[int]] = defaultdict(list)
    held = Send.objects.filter(campaign_id__in=campaign_ids, status=Send.Status.HELD, due_at__lte=until)
    for send_id, due_at in held.values_list("id", "due_at"):
        due[due_at].append(send_id)
    for due_at in sorted(due):
        sends_process(send_ids=due[due_at], now=due_at)  # completes a run whose last sends these were


@register_demo(labels=LABELS)
def load(*, now: datetime) -> dict[str, int]:
    """The demo campaigns and their history (see the module docstring). Returns the rows created per kind."""
    counts_before = _counts()
    created_at = now - HISTORY
    promo, promo_rows = _campaign(
        WEEKEND_PROMO, WEEKEND_PROMO_VARIANTS, segment=_segment(PROMO_SEGMENT), now=created_at
    )
    _segment(CART_SEGMENT)  # the audience a cart-reminder journey may check
    cart, cart_rows = _campaign(CART_REMINDER, CART_REMINDER_VARIANTS, segment=None, now=created_at)

    timeline: list[tuple[datetime, Callable[[], None]]] = []
    if _is_demo(promo):
        timeline.extend(_promo_moments(promo))
    if _is_demo(cart):
        timeline.extend(_cart_moments(cart))
    campaign_ids = [c.pk for c in (promo, cart) if _is_demo(c)]
    with sends_replayed_to_outbox():
        # In time order, so the frequency cap sees the earlier messages; held sends go out before later moments.
        for at, act in sorted(timeline, key=lambda item: item[0]):
            _deliver_held(campaign_ids, until=at)
            act()
        if campaign_ids:
            _deliver_held(campaign_ids, until=max((_history_end(c) for c in (promo, cart)), default=now))

    # The goal events of the history become conversions now rather than at beat's next attribution pass.
    from campaigns.services.attribution import conversions_attribute

    conversions_attribute(now=max(now, timezone.now()))

    counts_after = _counts()
    created = {key: counts_after[key] - counts_before[key] for key in CREATED_KEYS}
    created["campaigns"] = (promo_rows > 0) + (cart_rows > 0)
    created["variants"] = max(promo_rows - 1, 0) + max(cart_rows - 1, 0)
    return created


def _counts() -> dict[str, int]:
    return {
        "campaigns": Campaign.objects.count(),
        "variants": Variant.objects.count(),
        "runs": Run.objects.count(),
        "campaign_sends": Send.objects.count(),
        "outbox_messages": OutboxMessage.objects.count(),
    }
