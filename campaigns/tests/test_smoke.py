import pytest

from campaigns.models import OutboxMessage, Run, Send
from campaigns.services.campaigns import campaign_schedule
from campaigns.tests.factories import CampaignFactory
from crm.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


def test_send_now_end_to_end(consenting, django_capture_on_commit_callbacks):
    contacts = [consenting(ContactFactory(), "email") for _ in range(3)]
    ContactFactory()  # no consent
    campaign = CampaignFactory()
    with django_capture_on_commit_callbacks(execute=True):
        campaign_schedule(campaign=campaign)
    run = Run.objects.get()
    assert run.status == Run.Status.COMPLETED, run.counts
    assert Send.objects.filter(status="sent").count() == 3
    assert OutboxMessage.objects.count() == 3
    print(run.counts, OutboxMessage.objects.first().body)
    assert contacts
