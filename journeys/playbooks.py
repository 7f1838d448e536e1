"""Playbooks: the seeds' journeys, ready to use. Each is created as a draft journey with its messages in Korean
(``python manage.py load_playbook NAME``, or the admin's "Load a playbook" action), to be reviewed and activated.

A playbook is data: the journey's fields and its steps, each with a ``key``; edges (``next``, ``no``) name keys.
"""

from __future__ import annotations

from datetime import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.models import Segment
from journeys.models import Journey, LeadForm, Step

ORDER = "Order Completed"

CART_MESSAGE = "#{고객명}님, 최근 장바구니에 담은 #{상품명} #{할인 금액:number}원 할인 중이에요!"

PLAYBOOKS: dict[str, dict[str, Any]] = {
    "welcome": {
        "label": gettext_lazy("Welcome: signed up → welcome message with a sign-up coupon"),
        "journey": {
            "name": "신규 가입 환영",
            "description": "회원가입 직후 가입 축하 쿠폰과 함께 환영 메시지를 보냅니다.",
            "trigger": Journey.Trigger.EVENT,
            "trigger_event": "Signed Up",
            "reentry": Journey.Reentry.ONCE,
            "goal_event": ORDER,
            "goal_window_hours": 24 * 7,
        },
        "steps": [
            {
                "key": "coupon",
                "name": "가입 축하 쿠폰 발급",
                "kind": Step.Kind.ACTION,
                "action": "issue_coupon",
                "action_name": "WELCOME",
                "coupon_amount": 5000,
                "coupon_valid_days": 30,
            },
            {
                "key": "welcome",
                "name": "환영 메시지",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": (
                    "#{고객명|고객}님, 가입을 환영해요! 가입 축하 쿠폰 #{이벤트.coupon_code}으로 첫 구매 "
                    "#{할인 금액:number}원 할인을 받아 보세요."
                ),
                "variables": {"할인 금액": 5000},
            },
            {
                "key": "tag",
                "name": "신규 가입 태그",
                "kind": Step.Kind.ACTION,
                "action": "add_tag",
                "action_name": "신규 가입",
            },
        ],
    },
    "wishlist": {
        "label": gettext_lazy("Wishlist: added to wishlist → reminder the next day unless purchased"),
        "journey": {
            "name": "찜 상품 리마인드",
            "description": "찜한 상품을 하루 안에 구매하지 않으면 다음 날 알려 드립니다.",
            "trigger": Journey.Trigger.EVENT,
            "trigger_event": "Product Added to Wishlist",
            "reentry": Journey.Reentry.AFTER_FINISH,
            "exit_events": [ORDER],
            "goal_event": ORDER,
            "goal_window_hours": 72,
        },
        "steps": [
            {"key": "wait", "name": "1일 대기", "kind": Step.Kind.WAIT_DURATION, "wait_minutes": 24 * 60},
            {
                "key": "remind",
                "name": "찜 상품 알림",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": "#{고객명|고객}님, 찜하신 #{상품명} 아직 고민 중이세요? 지금 확인해 보세요.",
            },
        ],
    },
    "cart_abandonment": {
        "label": gettext_lazy("Cart abandonment: checkout started → reminder after 30 minutes unless ordered"),
        "journey": {
            "name": "장바구니 이탈",
            "description": "결제를 시작하고 30분 안에 주문하지 않은 고객에게 할인 소식을 보냅니다.",
            "trigger": Journey.Trigger.EVENT,
            "trigger_event": "Checkout Started",
            "reentry": Journey.Reentry.AFTER_FINISH,
            "exit_events": [ORDER],
            "goal_event": ORDER,
            "goal_window_hours": 72,
        },
        "steps": [
            {"key": "wait", "name": "30분 대기", "kind": Step.Kind.WAIT_DURATION, "wait_minutes": 30},
            {
                "key": "remind",
                "name": "장바구니 할인 알림",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": CART_MESSAGE,
                "variables": {"할인 금액": 3000},
                "advertising": True,
            },
        ],
    },
    "coupon_expiry": {
        "label": gettext_lazy("Coupon expiry: unused coupon → message on the morning of its expiry day"),
        "journey": {
            "name": "쿠폰 만료 알림",
            "description": "발급된 쿠폰을 쓰지 않았다면 만료일 아침 9시에 알려 드립니다.",
            "trigger": Journey.Trigger.EVENT,
            "trigger_event": "Coupon Issued",
            "trigger_conditions": [{"property": "expires_at", "op": "exists"}],
            "reentry": Journey.Reentry.EVERY_TIME,
            "exit_events": ["Coupon Redeemed", "Coupon Applied"],
        },
        "steps": [
            {
                "key": "wait",
                "name": "만료일 오전 9시까지 대기",
                "kind": Step.Kind.WAIT_UNTIL,
                "until_date_field": "event.expires_at",
                "until_offset_days": 0,
                "until_time": time(9, 0),
            },
            {
                "key": "remind",
                "name": "쿠폰 만료 알림",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": (
                    "#{고객명|고객}님, 보유하신 #{이벤트.coupon_code|쿠폰} 쿠폰이 오늘 만료돼요. 잊지 말고 사용하세요!"
                ),
            },
        ],
    },
    "winback": {
        "label": gettext_lazy("Win-back: no order in 90 days → a return offer"),
        "journey": {
            "name": "휴면 고객 윈백",
            "description": "90일 동안 주문이 없는 고객에게 재방문 혜택을 보냅니다. 트리거 세그먼트를 지정하세요.",
            "trigger": Journey.Trigger.SEGMENT_ENTRY,
            "reentry": Journey.Reentry.EVERY_N_DAYS,
            "reentry_days": 90,
            "goal_event": ORDER,
            "goal_window_hours": 24 * 14,
        },
        "segment": {
            "name": "90일 이상 주문 없는 고객",
            "description": "주문한 적이 있고 마지막 주문이 90일 이상 지난 고객 (윈백 플레이북).",
            "rules": {
                "version": 1,
                "root": {
                    "type": "group",
                    "op": "and",
                    "children": [{"type": "orders", "field": "days_since_last", "op": "gte", "value": 90}],
                },
            },
        },
        "steps": [
            {
                "key": "offer",
                "name": "재방문 혜택",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": "#{고객명|고객}님, 오랜만이에요! 다시 찾아주시면 #{할인 금액:number}원 할인해 드려요.",
                "variables": {"할인 금액": 10000},
                "advertising": True,
            },
        ],
    },
    "lead_capture": {
        "label": gettext_lazy("Lead capture: form submitted → welcome email with the resource → team notified"),
        "journey": {
            "name": "리드 수집",
            "description": "리드 폼을 제출한 고객에게 자료 링크가 담긴 환영 메일을 보내고 팀에 알립니다.",
            "trigger": Journey.Trigger.FORM,
            "reentry": Journey.Reentry.EVERY_TIME,
        },
        "lead_form": {"name": "자료 신청 폼", "slug": "resource", "consent_purposes": ["email"]},
        "steps": [
            {
                "key": "resource",
                "name": "자료 안내 메일",
                "kind": Step.Kind.SEND,
                "channel": "email",
                "subject": "요청하신 자료를 보내 드려요",
                "body": (
                    "#{고객명|고객}님, 자료를 신청해 주셔서 감사합니다.\n아래 링크에서 바로 받아 보세요: "
                    "#{이벤트.resource_url|https://example.com/resource.pdf}"
                ),
            },
            {
                "key": "notify",
                "name": "팀 알림",
                "kind": Step.Kind.ACTION,
                "action": "notify",
                "action_name": "slack",
                "action_value": "새 리드: #{고객명|이름 없음} (#{이메일|이메일 없음}), 폼 #{이벤트.form}",
            },
        ],
    },
    "after_service": {
        "label": gettext_lazy(
            "After service: survey 3 days after → thanks and review request, or an apology with an offer → "
            "referral code → invitation"
        ),
        "journey": {
            "name": "서비스 이후 관리",
            "description": (
                "서비스 종료 3일 뒤 만족도 설문을 보내고, 점수에 따라 감사 또는 사과를 전한 뒤 "
                "추천 코드와 초대를 보냅니다."
            ),
            "trigger": Journey.Trigger.DATE,
            "date_attribute": "service_end",
            "date_offset_days": 3,
            "date_time": time(10, 0),
            "reentry": Journey.Reentry.EVERY_TIME,
        },
        "steps": [
            {
                "key": "survey",
                "name": "만족도 설문",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": "#{고객명|고객}님, 서비스는 만족스러우셨나요? 1분 설문에 답해 주세요: #{이벤트.survey_url}",
            },
            {"key": "wait", "name": "2일 대기", "kind": Step.Kind.WAIT_DURATION, "wait_minutes": 2 * 24 * 60},
            {
                "key": "score",
                "name": "만족도 4점 이상?",
                "kind": Step.Kind.BRANCH,
                "condition": Step.Condition.DATA,
                "condition_rules": [{"property": "event.survey_score", "op": "gte", "value": 4}],
                "next": "thanks",
                "no": "apology",
            },
            {
                "key": "thanks",
                "name": "감사와 리뷰 요청",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": "#{고객명|고객}님, 좋은 평가 감사합니다! 리뷰를 남겨 주시면 큰 힘이 돼요.",
                "next": "later",
            },
            {
                "key": "apology",
                "name": "사과와 혜택",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": (
                    "#{고객명|고객}님, 기대에 미치지 못해 죄송합니다. "
                    "다음 이용 때 #{할인 금액:number}원 할인해 드릴게요."
                ),
                "variables": {"할인 금액": 10000},
                "next": "later",
            },
            {"key": "later", "name": "2주 대기", "kind": Step.Kind.WAIT_DURATION, "wait_minutes": 14 * 24 * 60},
            {
                "key": "referral_code",
                "name": "추천 코드 발급",
                "kind": Step.Kind.ACTION,
                "action": "issue_coupon",
                "action_name": "REF",
                "coupon_amount": 5000,
                "coupon_valid_days": 90,
            },
            {
                "key": "referral",
                "name": "추천 코드 안내",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": (
                    "#{고객명|고객}님, 친구에게 추천 코드 #{이벤트.coupon_code}를 알려 주세요. "
                    "친구도 5,000원 할인받아요!"
                ),
            },
            {"key": "month", "name": "1개월 대기", "kind": Step.Kind.WAIT_DURATION, "wait_minutes": 30 * 24 * 60},
            {
                "key": "invite",
                "name": "웨비나 초대",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": "#{고객명|고객}님, 이번 달 고객 웨비나에 초대합니다. 비슷한 상품과 활용법을 소개해 드려요.",
            },
        ],
    },
    "course": {
        "label": gettext_lazy("Course: reminder the day before class, materials after it, extra content weekly"),
        "journey": {
            "name": "수강 안내",
            "description": "수업 하루 전 안내, 수업 후 자료, 이후 7일마다 추가 콘텐츠를 보냅니다.",
            "trigger": Journey.Trigger.DATE,
            "date_attribute": "class_start",
            "date_offset_days": -1,
            "date_time": time(10, 0),
            "reentry": Journey.Reentry.EVERY_TIME,
        },
        "steps": [
            {
                "key": "reminder",
                "name": "수업 전날 안내",
                "kind": Step.Kind.SEND,
                "channel": "kakao",
                "body": "#{고객명|고객}님, 내일은 #{속성.course_name|수업} 첫날이에요. 준비물을 확인해 주세요!",
            },
            {
                "key": "after",
                "name": "수업 종료일 저녁까지 대기",
                "kind": Step.Kind.WAIT_UNTIL,
                "until_date_field": "attributes.class_end",
                "until_time": time(18, 0),
            },
            {
                "key": "materials",
                "name": "수업 자료",
                "kind": Step.Kind.SEND,
                "channel": "email",
                "subject": "#{속성.course_name|수업} 자료를 보내 드려요",
                "body": "#{고객명|고객}님, 수업에 참여해 주셔서 감사합니다. 수업 자료를 확인해 주세요.",
            },
            {"key": "week", "name": "7일 대기", "kind": Step.Kind.WAIT_DURATION, "wait_minutes": 7 * 24 * 60},
            {
                "key": "extra",
                "name": "추가 콘텐츠",
                "kind": Step.Kind.SEND,
                "channel": "email",
                "subject": "#{속성.course_name|수업} 심화 콘텐츠",
                "body": "#{고객명|고객}님, 복습에 도움이 되는 추가 콘텐츠를 준비했어요.",
            },
        ],
    },
}


def playbook_choices() -> list[tuple[str, str]]:
    return [(name, str(spec["label"])) for name, spec in PLAYBOOKS.items()]


@transaction.atomic
def playbook_load(*, name: str) -> Journey:
    """Create the playbook ``name`` as a draft journey with its steps (edges resolved); returns it."""
    spec = PLAYBOOKS.get(name)
    if spec is None:
        raise ValidationError(
            _("Unknown playbook %(name)s; available: %(names)s.") % {"name": name, "names": ", ".join(PLAYBOOKS)}
        )
    fields = dict(spec["journey"])
    if "segment" in spec:
        segment_spec = spec["segment"]
        fields["trigger_segment"], _created = Segment.objects.get_or_create(
            name=segment_spec["name"],
            defaults={"rules": segment_spec["rules"], "description": segment_spec["description"]},
        )
    journey = Journey(status=Journey.Status.DRAFT, playbook=name, **fields)
    journey.full_clean()
    journey.save()
    if "lead_form" in spec:
        form = dict(spec["lead_form"])
        slug, n = form.pop("slug"), 1
        while LeadForm.objects.filter(slug=slug if n == 1 else f"{slug}-{n}").exists():
            n += 1
        LeadForm.objects.create(journey=journey, slug=slug if n == 1 else f"{slug}-{n}", **form)
    steps: dict[str, Step] = {}
    edges: list[tuple[Step, str | None, str | None]] = []
    for position, definition in enumerate(spec["steps"], start=1):
        fields = {k: v for k, v in definition.items() if k not in ("key", "next", "no")}
        step = Step(journey=journey, position=position * 10, **fields)
        step.full_clean(exclude=["journey"])
        step.save()
        steps[definition["key"]] = step
        edges.append((step, definition.get("next"), definition.get("no")))
    for step, next_key, no_key in edges:
        if next_key or no_key:
            step.next_step = steps[next_key] if next_key else None
            step.no_step = steps[no_key] if no_key else None
            step.save(update_fields=["next_step", "no_step"])
    return journey
