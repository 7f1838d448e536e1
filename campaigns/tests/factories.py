"""factory_boy factories for the campaigns models (see crm/tests/factories.py for the conventions)."""

from __future__ import annotations

import factory
from django.utils import timezone

from campaigns.models import Campaign, KakaoTemplate, Send, SenderProfile, Suppression, Variant
from crm.models import Segment

ALL_CONTACTS = {"version": 1, "root": {"type": "group", "op": "and", "children": []}}


def tag_rules(tag: str) -> dict:
    return {"version": 1, "root": {"type": "group", "op": "and", "children": [{"type": "tag", "tag": tag}]}}


class SegmentFactory(factory.django.DjangoModelFactory):
    """Everyone (not erased) unless ``rules`` or ``SegmentFactory(tag="vip")`` says otherwise."""

    class Meta:
        model = Segment

    class Params:
        tag = None

    name = factory.Sequence(lambda n: f"segment-{n}")
    rules = factory.LazyAttribute(lambda o: tag_rules(o.tag) if o.tag else ALL_CONTACTS)


class CampaignFactory(factory.django.DjangoModelFactory):
    """A draft informational email broadcast to everyone, sent now, with one variant "A" (unless ``variants=0``)."""

    class Meta:
        model = Campaign
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"캠페인 {n}")
    channel = "email"
    segment = factory.SubFactory(SegmentFactory)
    schedule = Campaign.Schedule.NOW

    @factory.post_generation
    def variants(self, create: bool, extracted, **kwargs) -> None:
        if not create:
            return
        count = 1 if extracted is None else extracted
        for index in range(count):
            VariantFactory(campaign=self, name="ABCDEFGH"[index])


class VariantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Variant

    campaign = factory.SubFactory(CampaignFactory, variants=0)
    name = factory.Sequence(lambda n: f"V{n}")
    weight = 1
    subject = "#{고객명|고객}님을 위한 소식"
    body = "#{고객명|고객}님, 주말 한정 할인이 4시간 뒤 종료돼요!"


class SendFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Send

    campaign = factory.SubFactory(CampaignFactory)
    contact = factory.SubFactory("crm.tests.factories.ContactFactory")
    channel = "email"
    due_at = factory.LazyFunction(timezone.now)


class SuppressionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Suppression

    contact = factory.SubFactory("crm.tests.factories.ContactFactory")
    channel = "email"
    reason = Suppression.Reason.BOUNCED


class SenderProfileFactory(factory.django.DjangoModelFactory):
    """The default SMS caller number unless told otherwise (``kind="kakao"`` gives a channel with a pfId)."""

    class Meta:
        model = SenderProfile
        django_get_or_create = ("kind", "value")

    kind = SenderProfile.Kind.SMS
    label = factory.Sequence(lambda n: f"발신 {n}")
    value = factory.Sequence(lambda n: f"+8215{88_0000 + n:06d}"[:12])
    sender_key = factory.LazyAttribute(lambda o: "KA01PF2411240000000000000000000" if o.kind == "kakao" else "")
    is_default = True


class KakaoTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = KakaoTemplate

    sender_profile = factory.SubFactory(SenderProfileFactory, kind="kakao", value="@loopshop")
    code = factory.Sequence(lambda n: f"KA01TP{n:06d}")
    name = "배송 출발"
    text = "#{고객명}님, 주문하신 상품이 출발했어요. 쿠폰 #{쿠폰 코드}도 확인하세요."
    buttons = factory.LazyFunction(
        lambda: [{"type": "WL", "name": "배송 조회", "url_mobile": "https://shop.example/track"}]
    )
