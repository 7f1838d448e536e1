"""Merging two profiles of one person keeps what the merged one received (sends, suppressions) on the survivor."""

from __future__ import annotations

import pytest

from campaigns.models import Run, Send, Suppression
from campaigns.tests.factories import CampaignFactory, SendFactory, SuppressionFactory
from crm.services.contacts import contact_merge
from crm.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


def test_sends_and_suppressions_move_to_the_surviving_contact():
    visitor, customer = ContactFactory(), ContactFactory()
    campaign = CampaignFactory()
    run_a = Run.objects.create(campaign=campaign, scheduled_for="2026-11-01T11:00Z")
    run_b = Run.objects.create(campaign=campaign, scheduled_for="2026-11-08T11:00Z")
    only_visitor = SendFactory(campaign=campaign, run=run_a, contact=visitor, status=Send.Status.SENT)
    both_visitor = SendFactory(campaign=campaign, run=run_b, contact=visitor)
    both_customer = SendFactory(campaign=campaign, run=run_b, contact=customer)
    triggered = SendFactory(campaign=campaign, contact=visitor, key="journey:1:2")
    SuppressionFactory(contact=visitor, channel="email")
    SuppressionFactory(contact=visitor, channel="sms")
    SuppressionFactory(contact=customer, channel="sms")

    contact_merge(from_contact_id=visitor.pk, into_contact_id=customer.pk)

    assert set(Send.objects.filter(contact=customer).values_list("pk", flat=True)) == {
        only_visitor.pk,
        both_customer.pk,
        triggered.pk,
    }
    assert not Send.objects.filter(pk=both_visitor.pk).exists()  # one send per run and contact
    assert sorted(Suppression.objects.filter(contact=customer).values_list("channel", flat=True)) == ["email", "sms"]
