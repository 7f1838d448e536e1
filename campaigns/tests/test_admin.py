"""The campaign admin: build the weekend promo, lifecycle buttons, preview, test send, runs, read-only ledgers."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from campaigns.models import Campaign, OutboxMessage, Send
from campaigns.tests.factories import CampaignFactory, SegmentFactory
from crm.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


def campaign_form(segment, **overrides) -> dict:
    data = {
        "name": "주말 프로모션 마감 알림",
        "description": "",
        "kind": "broadcast",
        "channel": "push",
        "purpose": "advertising",
        "segment": segment.pk,
        "exclude_segment": "",
        "goal_event": "Order Completed",
        "attribution_window_hours": 72,
        "schedule": "recurring",
        "send_at_0": "",
        "send_at_1": "",
        "cron_minute": "0",
        "cron_hour": "20",
        "cron_day_of_week": "sun",
        "cron_day_of_month": "*",
        "cron_month_of_year": "*",
        "time_zone": "Asia/Seoul",
        "starts_on": "",
        "ends_on": "",
        "quiet_hours": "hold",
        "sender_name": "",
        "holdout_percent": 10,
        "winner_test_percent": 20,
        "winner_wait_hours": 4,
        "winner_metric": "conversion_rate",
        "assignment_seed": 0,
        "variants-TOTAL_FORMS": 2,
        "variants-INITIAL_FORMS": 0,
        "variants-MIN_NUM_FORMS": 1,
        "variants-MAX_NUM_FORMS": 1000,
        "variants-0-name": "A",
        "variants-0-weight": 1,
        "variants-0-send_delay_minutes": 0,
        "variants-0-subject": "주말 한정 할인",
        "variants-0-body": "#{고객명|고객}님, 주말 한정 할인이 4시간 뒤 종료돼요!",
        "variants-0-variables": "{}",
        "variants-1-name": "B",
        "variants-1-weight": 1,
        "variants-1-send_delay_minutes": 0,
        "variants-1-subject": "마감 임박",
        "variants-1-body": "#{고객명|고객}님, 오늘 밤 12시에 할인이 끝나요. #{할인 금액:number}원 할인!",
        "variants-1-variables": '{"할인 금액": 5000}',
        "runs-TOTAL_FORMS": 0,
        "runs-INITIAL_FORMS": 0,
        "changes-TOTAL_FORMS": 0,
        "changes-INITIAL_FORMS": 0,
    }
    data.update(overrides)
    return data


def test_the_weekend_promo_is_set_up_and_scheduled_in_the_admin(admin_client, admin_user):
    segment = SegmentFactory(tag="viewed-weekend-promo")
    response = admin_client.post(reverse("admin:campaigns_campaign_add"), campaign_form(segment))
    assert response.status_code == 302, response.context["adminform"].errors if response.context else response
    campaign = Campaign.objects.get()
    assert campaign.variants.count() == 2
    assert campaign.changes.get().action == "created"
    assert campaign.changes.get().changed_by == admin_user

    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    assert page.status_code == 200
    assert 'data-action="schedule"' in page.content.decode()

    response = admin_client.post(reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, "schedule"]))
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert PeriodicTask.objects.get(name=f"campaign:{campaign.pk}").enabled
    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    assert 'data-action="pause"' in page
    assert 'data-action="schedule"' not in page

    admin_client.post(reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, "pause"]))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    assert not PeriodicTask.objects.get(name=f"campaign:{campaign.pk}").enabled


def test_an_unknown_variable_is_a_form_error_naming_it(admin_client):
    segment = SegmentFactory()
    data = campaign_form(segment, **{"variants-0-body": "#{고객명}님 #{쿠폰금액} 할인"})
    response = admin_client.post(reverse("admin:campaigns_campaign_add"), data)

    assert response.status_code == 200
    assert "#{쿠폰금액}" in response.content.decode()
    assert not Campaign.objects.exists()


def test_a_bad_cron_is_a_form_error(admin_client):
    response = admin_client.post(
        reverse("admin:campaigns_campaign_add"), campaign_form(SegmentFactory(), cron_hour="24")
    )
    assert response.status_code == 200
    assert not Campaign.objects.exists()
    assert response.context["adminform"].form.errors["cron_hour"]


def test_lifecycle_refusals_are_messages_not_errors(admin_client):
    campaign = CampaignFactory(variants=0)  # no variant: cannot be scheduled
    response = admin_client.post(
        reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, "schedule"]), follow=True
    )
    assert response.status_code == 200
    assert any("variant" in str(m).lower() or "실험안" in str(m) for m in response.context["messages"])
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert (
        admin_client.get(reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, "pause"])).status_code == 403
    )


def test_preview_renders_for_a_chosen_contact(admin_client):
    contact = ContactFactory(name="최수아")
    campaign = CampaignFactory(purpose="advertising", channel="sms")
    url = reverse("admin:campaigns_campaign_preview", args=[campaign.pk])

    response = admin_client.get(url, {"contact": contact.email, "variant": campaign.variants.get().pk})

    body = response.content.decode()
    assert response.status_code == 200
    assert "(광고)" in body
    assert "최수아님, 주말 한정 할인이 4시간 뒤 종료돼요!" in body
    assert "LMS · " in body  # the advertising notice makes it longer than 90 bytes
    assert not Send.objects.exists()
    missing = admin_client.get(url, {"contact": "nobody@example.com", "variant": campaign.variants.get().pk})
    assert missing.status_code == 200
    assert missing.context["form"].errors["contact"]


def test_test_send_goes_to_the_outbox(admin_client):
    first, second = ContactFactory(name="정하준"), ContactFactory()
    campaign = CampaignFactory()
    url = reverse("admin:campaigns_campaign_test_send", args=[campaign.pk])

    response = admin_client.post(
        url, {"contacts": f"{first.pk}, {second.email}", "variant": campaign.variants.get().pk}
    )

    assert response.status_code == 200
    assert OutboxMessage.objects.count() == 2
    assert "정하준님" in response.content.decode()
    outbox = admin_client.get(reverse("admin:campaigns_outboxmessage_change", args=[OutboxMessage.objects.first().pk]))
    assert outbox.status_code == 200


def report_row(page: str, kind: str, key: str) -> list[str]:
    """The cells of the run report's row ``data-<kind>="<key>"`` (its header first)."""
    row = re.search(rf'<tr data-{kind}="{re.escape(key)}">(.*?)</tr>', page, re.S)
    assert row, f"no report row {kind}={key}"
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>.*?</t[hd]>", row[1], re.S)]


def test_runs_show_per_variant_counts_and_skip_reasons(admin_client, django_capture_on_commit_callbacks):
    from crm.tests.factories import ConsentFactory

    for contact in ContactFactory.create_batch(4):
        ConsentFactory(contact=contact, purpose="email")
    ContactFactory()
    campaign = CampaignFactory()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:campaigns_campaign_lifecycle", args=[campaign.pk, "send_now"]))
    run = campaign.runs.get()

    page = admin_client.get(reverse("admin:campaigns_run_change", args=[run.pk])).content.decode()
    # Variant A: audience 5, sent 4, skipped 1 (no email consent), none in progress or failed; no goal event, so
    # no conversion columns; nothing delivered, opened or clicked yet; A is the control.
    assert report_row(page, "variant", "A") == ["A", "5", "4", "1", "0", "0"] + ["0 (0.0%)"] * 3 + [
        "0.0% – 49.0%",  # Wilson for 0 of 4 clicks: high = 2·(z²/8)/(1 + z²/4) = 0.9604/1.9604 = 0.4899
        "-",
        "대조군",
    ]
    assert report_row(page, "reason", "no_consent") == ["채널 수신 동의 없음", "1", "1"]
    for url in [
        reverse("admin:campaigns_run_changelist"),
        reverse("admin:campaigns_send_changelist"),
        reverse("admin:campaigns_send_change", args=[run.sends.first().pk]),
        reverse("admin:campaigns_outboxmessage_changelist"),
        reverse("admin:campaigns_suppression_changelist"),
        reverse("admin:campaigns_campaign_changelist"),
        reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
    ]:
        assert admin_client.get(url).status_code == 200, url
    assert admin_client.get(reverse("admin:campaigns_send_add")).status_code == 403


def test_deleting_in_the_admin_removes_the_schedule(admin_client):
    campaign = CampaignFactory(schedule="recurring")
    from campaigns.services.campaigns import campaign_schedule

    campaign_schedule(campaign=campaign)
    response = admin_client.post(reverse("admin:campaigns_campaign_delete", args=[campaign.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not PeriodicTask.objects.exists()


def test_a_variants_name_is_fixed_once_it_was_sent():
    """Reports keep a variant's results under its name: renaming it after sending would orphan them."""
    from campaigns.admin import VariantForm
    from campaigns.tests.factories import SendFactory

    campaign = CampaignFactory(schedule=Campaign.Schedule.RECURRING)
    variant = campaign.variants.get()
    data = {"name": "짧은 문구", "weight": 1, "body": "안녕하세요", "send_delay_minutes": 0, "variables": "{}"}
    assert not VariantForm(instance=variant).fields["name"].disabled  # not sent yet: free to rename
    SendFactory(campaign=campaign, variant=variant, status=Send.Status.SENT)

    form = VariantForm(instance=variant, data=data)

    assert form.fields["name"].disabled
    assert form.is_valid(), form.errors
    assert form.save().name == "A"
    assert form.save().body == "안녕하세요"  # the rest stays editable
