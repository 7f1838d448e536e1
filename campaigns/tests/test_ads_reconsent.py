"""The 2-year advertising-consent notice (정보통신망법): who gets it, on which channel, through the pipeline with the
built-in wording, once per period, and again two years later."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.conf import settings

from campaigns.models import AdsConsentNotice, Campaign, OutboxMessage, Send
from campaigns.services.reconsent import ads_reconsent_notify
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
CONSENTED = datetime(2024, 12, 1, 15, 30, tzinfo=SEOUL)


def contact_with(*purposes: str, at: datetime = CONSENTED, **fields):
    contact = ContactFactory(**fields)
    for purpose in purposes:
        ConsentFactory(contact=contact, purpose=purpose, changed_at=at)
    return contact


def notify(now: datetime, capture, **options) -> dict:
    with time_machine.travel(now, tick=False), capture(execute=True):
        return ads_reconsent_notify(now=now, **options)


def test_notices_go_to_contacts_whose_two_years_ended_once_per_period(django_capture_on_commit_callbacks):
    by_email = contact_with("ads", "email", name="김민준")
    by_sms = contact_with("ads", "sms", email="")
    recent = contact_with("ads", "email", at=CONSENTED + timedelta(days=400))  # consented only a year before
    contact_with("email", at=CONSENTED)  # never consented to advertising
    withdrawn = contact_with("email", at=CONSENTED)
    ConsentFactory(contact=withdrawn, purpose="ads", granted=False, changed_at=CONSENTED)
    contact_with("ads", at=CONSENTED)  # no channel to reach them on
    erased = contact_with("ads", "email")
    erased.erased_at = CONSENTED
    erased.save(update_fields=["erased_at"])

    the_day_before = datetime(2026, 11, 30, 10, 0, tzinfo=SEOUL)
    assert notify(the_day_before, django_capture_on_commit_callbacks) == {"email": 0, "sms": 0, "unreachable": 0}

    day = datetime(2026, 12, 2, 10, 0, tzinfo=SEOUL)
    assert notify(day, django_capture_on_commit_callbacks) == {"email": 1, "sms": 1, "unreachable": 1}

    notices = {n.contact_id: n for n in AdsConsentNotice.objects.select_related("send")}
    assert set(notices) == {by_email.pk, by_sms.pk}
    assert notices[by_email.pk].anniversary == CONSENTED + timedelta(days=730)
    assert notices[by_email.pk].channel == "email"
    assert notices[by_sms.pk].channel == "sms"
    email_send = notices[by_email.pk].send
    assert email_send.status == Send.Status.SENT
    assert email_send.campaign.builtin == Campaign.Builtin.ADS_RECONSENT_EMAIL
    assert not email_send.advertising
    assert not email_send.counts_toward_cap

    outbox = OutboxMessage.objects.get(send=email_send)
    assert outbox.subject == f"[{settings.LOOP_SENDER_NAME}] 광고성 정보 수신동의 안내"
    assert "김민준님, 안녕하세요." in outbox.body
    assert "2024년 12월 1일에" in outbox.body
    assert "수신거부: %%loop_unsubscribe_url%%" in outbox.body
    sms = OutboxMessage.objects.get(send=notices[by_sms.pk].send)
    assert f"무료수신거부 {settings.LOOP_OPTOUT_PHONE}" in sms.body

    # Again the same day, the next day, or concurrently: nothing more.
    assert notify(day + timedelta(hours=1), django_capture_on_commit_callbacks)["email"] == 0
    assert notify(day + timedelta(days=1), django_capture_on_commit_callbacks) == {
        "email": 0,
        "sms": 0,
        "unreachable": 1,
    }
    assert Send.objects.filter(campaign__builtin__isnull=False).count() == 2

    # Two years later, the next period's notice (and the first of the contact who consented a year later).
    later = datetime(2028, 12, 1, 10, 0, tzinfo=SEOUL)
    assert notify(later, django_capture_on_commit_callbacks)["email"] == 2
    assert AdsConsentNotice.objects.get(contact=recent).anniversary == CONSENTED + timedelta(days=400 + 730)
    anniversaries = AdsConsentNotice.objects.filter(contact=by_email).order_by("anniversary")
    assert [n.anniversary for n in anniversaries] == [
        CONSENTED + timedelta(days=730),
        CONSENTED + timedelta(days=1460),
    ]


def test_batches_go_past_contacts_who_cannot_be_reached(django_capture_on_commit_callbacks):
    """Unreachable contacts are left out by the query itself, so they never fill a batch."""
    for _ in range(3):
        contact_with("ads")  # lower ids, reachable on no channel
    reachable = [contact_with("ads", "email") for _ in range(3)]

    result = notify(datetime(2026, 12, 2, 10, 0, tzinfo=SEOUL), django_capture_on_commit_callbacks, batch_size=2)

    assert result == {"email": 3, "sms": 0, "unreachable": 3}
    assert set(AdsConsentNotice.objects.values_list("contact_id", flat=True)) == {c.pk for c in reachable}
    assert OutboxMessage.objects.count() == 3


def test_a_missed_period_is_noticed_once_for_the_latest_anniversary(django_capture_on_commit_callbacks):
    contact = contact_with("ads", "email")

    notify(datetime(2029, 1, 10, 10, 0, tzinfo=SEOUL), django_capture_on_commit_callbacks)

    [notice] = AdsConsentNotice.objects.filter(contact=contact)
    assert notice.anniversary == CONSENTED + timedelta(days=1460)


def test_consenting_again_starts_a_new_period(django_capture_on_commit_callbacks):
    contact = contact_with("ads", "email")
    again = datetime(2026, 6, 1, 9, 0, tzinfo=SEOUL)
    contact.consents.filter(purpose="ads").update(changed_at=again)  # withdrawn and given again: a new date

    assert notify(datetime(2026, 12, 2, 10, 0, tzinfo=SEOUL), django_capture_on_commit_callbacks)["email"] == 0
    assert notify(datetime(2028, 6, 1, 10, 0, tzinfo=SEOUL), django_capture_on_commit_callbacks)["email"] == 1
    assert AdsConsentNotice.objects.get(contact=contact).consented_at == again


def test_the_built_in_wording_can_be_edited_and_is_used(django_capture_on_commit_callbacks):
    contact = contact_with("ads", "email")
    day = datetime(2026, 12, 2, 10, 0, tzinfo=SEOUL)
    from campaigns.services.reconsent import builtin_notice_campaign

    campaign = builtin_notice_campaign("email")
    campaign.variants.update(subject="수신동의 확인 안내")

    notify(day, django_capture_on_commit_callbacks)

    assert OutboxMessage.objects.get(send__contact=contact).subject == "수신동의 확인 안내"
    assert Campaign.objects.filter(builtin=Campaign.Builtin.ADS_RECONSENT_EMAIL).count() == 1


def test_the_task_is_scheduled_daily_by_beat():
    entry = settings.CELERY_BEAT_SCHEDULE["campaigns-ads-reconsent-daily"]
    assert entry["task"] == "campaigns.ads_reconsent_notify"
    assert (entry["schedule"].hour, entry["schedule"].minute) == ({10}, {0})


def test_the_built_in_campaign_keeps_its_channel_and_cannot_be_deleted_in_the_admin(admin_client):
    from django.urls import reverse

    from campaigns.services.reconsent import builtin_notice_campaign

    campaign = builtin_notice_campaign("email")

    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="channel"' not in html
    assert 'name="purpose"' not in html
    assert 'name="name"' in html  # the wording and name stay editable
    assert admin_client.get(reverse("admin:campaigns_campaign_delete", args=[campaign.pk])).status_code == 403
