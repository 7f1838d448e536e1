"""factory_boy factories for the campaigns models (see crm/tests/factories.py for the conventions)."""

from __future__ import annotations

import factory
from django.utils import timezone

from campaigns.models import Campaign, Send, Suppression, Variant
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
