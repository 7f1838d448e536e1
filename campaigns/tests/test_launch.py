"""Safety rails on launch: a confirmation with the audience size and a preview; an Admin approves big launches."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from campaigns.models import Campaign, LaunchApproval, Run
from campaigns.services.launch import launch_approve
from campaigns.tests.factories import CampaignFactory, SegmentFactory
from crm.models import AuditEntry
from crm.roles import ADMIN, MARKETER
from crm.tests.factories import ContactFactory, user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(settings):
    settings.LANGUAGE_CODE = "en"
    settings.LOOP_LAUNCH_CONFIRM_THRESHOLD = 2
    settings.LOOP_LAUNCH_APPROVAL_LIMIT = 3
    for name in ("김민지", "이서준", "박하은", "최도윤"):
        ContactFactory(name=name)
    return CampaignFactory(segment=SegmentFactory(), name="주말 프로모션")


def launch_url(campaign: Campaign, action: str = "send_now") -> str:
    return reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, action])


def test_a_large_launch_asks_for_confirmation_with_the_size_and_a_preview(client, campaign, settings):
    settings.LOOP_LAUNCH_APPROVAL_LIMIT = 100
    client.force_login(user_with_role(MARKETER))
    page = client.post(launch_url(campaign))
    assert page.status_code == 200
    text = page.content.decode()
    assert "<strong>4</strong> contacts" in text
    assert "김민지님, 주말 한정 할인이 4시간 뒤 종료돼요!" in text  # rendered for the first member
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert not Run.objects.exists()

    confirmed = client.post(launch_url(campaign), {"confirmed": "1"})
    assert confirmed.status_code == 302
    campaign.refresh_from_db()
    assert campaign.status != Campaign.Status.DRAFT
    assert Run.objects.filter(campaign=campaign).count() == 1


def test_a_small_launch_needs_no_confirmation(client, campaign, settings):
    settings.LOOP_LAUNCH_CONFIRM_THRESHOLD = settings.LOOP_LAUNCH_APPROVAL_LIMIT = 10
    client.force_login(user_with_role(MARKETER))
    assert client.post(launch_url(campaign)).status_code == 302
    assert Run.objects.filter(campaign=campaign).count() == 1


def test_over_the_limit_a_marketer_waits_for_an_admin_who_approves_and_launches(client, campaign):
    marketer, admin = user_with_role(MARKETER), user_with_role(ADMIN)
    client.force_login(marketer)
    page = client.post(launch_url(campaign))
    assert "wait for an Admin" in page.content.decode()
    client.post(launch_url(campaign), {"confirmed": "1"})
    client.post(launch_url(campaign), {"confirmed": "1"})  # asking twice makes one request
    approval = LaunchApproval.objects.get()
    assert (approval.status, approval.requested_by, approval.audience_size) == ("pending", marketer, 4)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert not Run.objects.exists()

    # The marketer cannot approve their own launch, in the admin or through the service.
    changelist = reverse("admin:campaigns_launchapproval_changelist")
    client.post(changelist, {"action": "approve_selected", "_selected_action": [approval.pk]})
    approval.refresh_from_db()
    assert approval.status == "pending"
    with pytest.raises(PermissionDenied):
        launch_approve(approval=approval, user=marketer)

    client.force_login(admin)
    response = client.post(changelist, {"action": "approve_selected", "_selected_action": [approval.pk]})
    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("approved", admin)
    assert Run.objects.filter(campaign=campaign).count() == 1
    trail = AuditEntry.objects.filter(object_type="campaigns.campaign", object_id=str(campaign.pk)).order_by("id")
    assert [(e.action, e.actor) for e in trail][:3] == [
        ("approval_requested", marketer),
        ("approved", admin),
        ("send_now", admin),
    ]


def test_an_admin_rejects_a_launch(client, campaign):
    client.force_login(user_with_role(MARKETER))
    client.post(launch_url(campaign, "schedule"), {"confirmed": "1"})
    approval = LaunchApproval.objects.get(action="schedule")
    client.force_login(user_with_role(ADMIN))
    client.post(
        reverse("admin:campaigns_launchapproval_changelist"),
        {"action": "reject_selected", "_selected_action": [approval.pk]},
    )
    approval.refresh_from_db()
    campaign.refresh_from_db()
    assert approval.status == "rejected"
    assert campaign.status == Campaign.Status.DRAFT
    assert not Run.objects.exists()


def test_an_admin_launches_over_the_limit_without_approval(client, campaign):
    client.force_login(user_with_role(ADMIN))
    client.post(launch_url(campaign), {"confirmed": "1"})
    assert not LaunchApproval.objects.exists()
    assert Run.objects.filter(campaign=campaign).count() == 1


def test_a_sent_one_off_message_cannot_be_edited(
    admin_client, campaign, consenting, django_capture_on_commit_callbacks
):
    from campaigns.services.campaigns import campaign_send_now
    from campaigns.tests.factories import VariantFactory
    from crm.models import Contact

    for contact in Contact.objects.all():
        consenting(contact, "email")
    variant = campaign.variants.get()
    url = reverse("admin:campaigns_campaign_change", args=[campaign.pk])
    assert b'name="variants-0-body"' in admin_client.get(url).content
    with django_capture_on_commit_callbacks(execute=True):
        campaign_send_now(campaign=campaign)
    assert campaign.sends.filter(status="sent").exists()
    page = admin_client.get(url).content.decode()
    assert 'name="variants-0-body"' not in page
    assert variant.body.split(", ")[1] in page  # shown, read-only
    # A recurring campaign stays editable for its next runs.
    recurring = VariantFactory(
        campaign=CampaignFactory(variants=0, schedule=Campaign.Schedule.RECURRING, cron_hour="20")
    ).campaign
    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[recurring.pk])).content
    assert b'name="variants-0-body"' in page
