"""Team channels against recorded HTTP (``responses``): Slack incoming webhooks with Block Kit, signed webhooks
(verified with the snippet documented for receivers), the notification ledger's retries, and destinations'
write-only secrets in the admin."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
import responses
import time_machine
from django.conf import settings as django_settings
from django.urls import reverse

from campaigns.channels.slack import blocks
from campaigns.channels.webhook import sign, verify
from campaigns.models import Destination, Notification, OutboxMessage
from campaigns.services.notifications import notifications_dispatch_due, slack_notify, webhook_notify

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=SEOUL)
SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXXsecretpart1234"
HOOK_URL = "https://erp.example.com/loop/webhook"
SECRET = "whsec_0123456789abcdef"


@pytest.fixture
def team(settings):
    settings.LOOP_CHANNEL_BACKENDS = {"slack": "slack", "webhook": "webhook"}
    settings.LOOP_CHANNEL_DRY_RUN = False
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def slack_destination():
    return Destination.objects.create(name="sales-leads", kind="slack", url=SLACK_URL)


@pytest.fixture
def hook_destination():
    return Destination.objects.create(name="erp", kind="webhook", url=HOOK_URL, secret=SECRET)


def run_now(capture, call, *, now=NOON):
    with time_machine.travel(now, tick=False), capture(execute=True):
        notification = call()
    notification.refresh_from_db()
    return notification


def tick(capture, now):
    with time_machine.travel(now, tick=False), capture(execute=True):
        notifications_dispatch_due(now=now)


# --- Slack ---------------------------------------------------------------------------------------------------------


def test_slack_posts_block_kit_to_the_webhook(team, slack_destination, django_capture_on_commit_callbacks):
    team.add(responses.POST, SLACK_URL, body="ok")
    layout = blocks(
        header="새 리드: 김민준",
        text="*김민준* 님이 상담을 신청했어요.",
        fields=[("이메일", "minjun@example.com"), ("유입", "instagram")],
        context="Loop CRM · 2026-12-07 12:00",
        button=("고객 보기", "https://crm.example.com/admin/crm/contact/1/change/"),
    )

    notification = run_now(
        django_capture_on_commit_callbacks,
        lambda: slack_notify("sales-leads", text="새 리드: 김민준", blocks=layout, key="lead:1"),
    )

    assert (notification.status, notification.backend, notification.attempts) == ("sent", "slack", 1)
    [call] = team.calls
    body = json.loads(call.request.body)
    assert body["text"] == "새 리드: 김민준"
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "actions", "context"]
    assert body["blocks"][1]["fields"][0] == {"type": "mrkdwn", "text": "*이메일*\nminjun@example.com"}
    assert body["blocks"][2]["elements"][0]["url"] == "https://crm.example.com/admin/crm/contact/1/change/"


def test_slack_notify_is_idempotent_by_key(team, slack_destination, django_capture_on_commit_callbacks):
    team.add(responses.POST, SLACK_URL, body="ok")
    first = run_now(django_capture_on_commit_callbacks, lambda: slack_notify(slack_destination, text="a", key="k"))
    again = run_now(django_capture_on_commit_callbacks, lambda: slack_notify(slack_destination, text="b", key="k"))
    assert again.pk == first.pk
    assert len(team.calls) == 1


@pytest.mark.parametrize(
    ("status", "answer"),
    [(400, "invalid_payload"), (403, "action_prohibited"), (404, "no_service"), (410, "channel_is_archived")],
)
def test_slack_client_errors_are_permanent_with_slacks_reason(
    team, slack_destination, django_capture_on_commit_callbacks, status, answer
):
    team.add(responses.POST, SLACK_URL, body=answer, status=status)
    notification = run_now(django_capture_on_commit_callbacks, lambda: slack_notify("sales-leads", text="x"))
    assert notification.status == "failed"
    assert notification.error == f"Slack {status}: {answer}"
    assert "XXXXsecretpart" not in notification.error


def test_slack_rate_limit_waits_for_retry_after_then_delivers(
    team, slack_destination, django_capture_on_commit_callbacks
):
    team.add(responses.POST, SLACK_URL, body="rate_limited", status=429, headers={"Retry-After": "120"})
    team.add(responses.POST, SLACK_URL, body="ok")

    notification = run_now(django_capture_on_commit_callbacks, lambda: slack_notify("sales-leads", text="x"))
    assert (notification.status, notification.due_at) == ("queued", NOON + timedelta(seconds=120))

    tick(django_capture_on_commit_callbacks, NOON + timedelta(seconds=60))  # not due yet: nothing sent
    assert len(team.calls) == 1
    tick(django_capture_on_commit_callbacks, NOON + timedelta(seconds=120))
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.error) == ("sent", 2, "")


def test_unknown_kind_or_name_is_refused_at_once(slack_destination):
    with pytest.raises(ValueError, match="not webhook"):
        webhook_notify("sales-leads", event="x", data={})
    with pytest.raises(ValueError, match="no destination named"):
        slack_notify("nowhere", text="x")


def test_a_url_from_the_environment_is_used_and_a_missing_one_fails_clearly(
    team, monkeypatch, django_capture_on_commit_callbacks
):
    Destination.objects.create(name="ops", kind="slack", url_env="LOOP_TEST_SLACK_URL")
    monkeypatch.delenv("LOOP_TEST_SLACK_URL", raising=False)
    missing = run_now(django_capture_on_commit_callbacks, lambda: slack_notify("ops", text="x"))
    assert missing.status == "failed"
    assert missing.error == "destination 'ops': the webhook URL environment variable LOOP_TEST_SLACK_URL is not set"

    monkeypatch.setenv("LOOP_TEST_SLACK_URL", SLACK_URL)
    team.add(responses.POST, SLACK_URL, body="ok")
    sent = run_now(django_capture_on_commit_callbacks, lambda: slack_notify("ops", text="x"))
    assert sent.status == "sent"


# --- Webhooks ------------------------------------------------------------------------------------------------------


def documented_verifier():
    """The receiver's snippet from docs/channels.md, executed as written."""
    text = (Path(django_settings.BASE_DIR) / "docs" / "channels.md").read_text(encoding="utf-8")
    [code] = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify_loop_signature" in block]
    namespace: dict = {}
    exec(compile(code, "docs/channels.md", "exec"), namespace)
    return namespace["verify_loop_signature"]


def test_webhook_body_and_signature_verify_with_the_documented_snippet(
    team, hook_destination, django_capture_on_commit_callbacks
):
    team.add(responses.POST, HOOK_URL, status=204)
    notification = run_now(
        django_capture_on_commit_callbacks,
        lambda: webhook_notify("erp", event="lead.created", data={"name": "김민준", "amount": 39000}, key="lead:7"),
    )
    assert notification.status == "sent"

    [call] = team.calls
    body, headers = call.request.body, call.request.headers
    assert json.loads(body) == {
        "id": f"loop-notification-{notification.pk}",
        "event": "lead.created",
        "created_at": notification.created_at.isoformat(),
        "data": {"name": "김민준", "amount": 39000},
    }
    assert headers["X-Loop-Event"] == "lead.created"
    assert headers["X-Loop-Delivery"] == f"loop-notification-{notification.pk}"
    signature = headers["X-Loop-Signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", signature)
    verify_loop_signature = documented_verifier()
    at = int(NOON.timestamp())
    assert verify_loop_signature(body, signature, SECRET, now=at)
    assert verify(body, signature, secret=SECRET, now=at)
    assert not verify_loop_signature(body.replace(b"39000", b"1"), signature, SECRET, now=at)  # altered body
    assert not verify_loop_signature(body, signature, "another-secret-value", now=at)  # wrong secret
    assert not verify_loop_signature(body, signature, SECRET, now=at + 3600)  # replayed an hour later
    assert not verify_loop_signature(body, "garbage", SECRET, now=at)


def test_webhook_retries_5xx_and_timeouts_with_backoff_then_succeeds(
    team, hook_destination, django_capture_on_commit_callbacks
):
    team.add(responses.POST, HOOK_URL, status=503)
    team.add(responses.POST, HOOK_URL, body=requests.ConnectTimeout("connect timed out"))
    team.add(responses.POST, HOOK_URL, status=200)

    notification = run_now(
        django_capture_on_commit_callbacks, lambda: webhook_notify("erp", event="order.paid", data={"id": 1})
    )
    assert (notification.status, notification.error) == ("queued", "webhook answered 503 Service Unavailable")
    assert notification.due_at == NOON + timedelta(minutes=1)

    tick(django_capture_on_commit_callbacks, NOON + timedelta(minutes=1))
    notification.refresh_from_db()
    assert (notification.status, notification.error) == ("queued", "webhook: timeout")
    assert notification.due_at == NOON + timedelta(minutes=3)  # backoff doubled

    tick(django_capture_on_commit_callbacks, NOON + timedelta(minutes=3))
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 3)
    deliveries = {call.request.headers["X-Loop-Delivery"] for call in team.calls}
    assert deliveries == {f"loop-notification-{notification.pk}"}  # one id for every attempt: receivers dedupe
    stamps = [call.request.headers["X-Loop-Signature"].split(",")[0] for call in team.calls]
    assert len(set(stamps)) == 3  # each attempt signed at its own time


def test_webhook_client_errors_and_redirects_are_permanent(team, hook_destination, django_capture_on_commit_callbacks):
    team.add(responses.POST, HOOK_URL, status=410)
    gone = run_now(django_capture_on_commit_callbacks, lambda: webhook_notify("erp", event="e", data={}))
    assert (gone.status, gone.error) == ("failed", "webhook answered 410 Gone")

    team.replace(responses.POST, HOOK_URL, status=302, headers={"Location": "https://elsewhere.example/"})
    moved = run_now(django_capture_on_commit_callbacks, lambda: webhook_notify("erp", event="e", data={}))
    assert moved.status == "failed"
    assert len(team.calls) == 2  # the redirect was not followed


@pytest.mark.parametrize("max_attempts", [2])
def test_webhook_gives_up_after_the_last_attempt(
    team, hook_destination, django_capture_on_commit_callbacks, settings, max_attempts
):
    settings.LOOP_SEND_MAX_ATTEMPTS = max_attempts
    team.add(responses.POST, HOOK_URL, status=500)
    notification = run_now(django_capture_on_commit_callbacks, lambda: webhook_notify("erp", event="e", data={}))
    tick(django_capture_on_commit_callbacks, NOON + timedelta(minutes=5))
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("failed", 2)


def test_a_lost_worker_fails_the_notification_rather_than_risk_a_duplicate(hook_destination, settings):
    stuck = Notification.objects.create(
        destination=hook_destination, channel="webhook", status="sending", claimed_at=NOON, attempts=1
    )
    notifications_dispatch_due(now=NOON + timedelta(seconds=settings.LOOP_SEND_CLAIM_LEASE + 1))
    stuck.refresh_from_db()
    assert stuck.status == "failed"
    assert "delivery unknown" in stuck.error


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(body, secret="k" * 16, timestamp=1700000000) == f"t=1700000000,v1={expected}"


# --- Dry run -------------------------------------------------------------------------------------------------------


def test_dry_run_routes_every_channel_to_the_outbox(settings, slack_destination, django_capture_on_commit_callbacks):
    from campaigns.channels import _CHANNELS, backend_for
    from campaigns.channels.outbox import OutboxBackend

    settings.LOOP_CHANNEL_BACKENDS = {"push": "fcm", "slack": "slack", "webhook": "webhook"}
    settings.LOOP_CHANNEL_DRY_RUN = True
    assert {"email", "sms", "kakao", "push", "slack", "webhook"} <= set(_CHANNELS)
    for name in _CHANNELS:
        assert isinstance(backend_for(name), OutboxBackend), name

    with responses.RequestsMock():  # any real HTTP call would fail the test
        notification = run_now(
            django_capture_on_commit_callbacks,
            lambda: slack_notify(slack_destination, text="주간 리포트", blocks=blocks(header="주간 리포트")),
        )
    assert (notification.status, notification.backend) == ("sent", "outbox")
    stored = OutboxMessage.objects.get(notification=notification)
    assert (stored.channel, stored.to, stored.body, stored.send_id) == ("slack", "sales-leads", "주간 리포트", None)
    assert stored.extra["blocks"][0]["type"] == "header"


# --- Admin ---------------------------------------------------------------------------------------------------------


def test_admin_never_shows_the_url_or_secret_back(admin_client, hook_destination):
    url = reverse("admin:campaigns_destination_change", args=[hook_destination.pk])
    page = admin_client.get(url).content.decode()
    assert HOOK_URL not in page
    assert SECRET not in page
    assert "…hook" in page
    assert "…cdef" in page

    response = admin_client.post(
        url, {"name": "erp", "kind": "webhook", "new_url": "", "new_secret": "", "url_env": "", "secret_env": ""}
    )
    assert response.status_code == 302
    hook_destination.refresh_from_db()
    assert (hook_destination.url, hook_destination.secret, hook_destination.active) == (HOOK_URL, SECRET, False)

    from crm.models import AuditEntry

    entry = AuditEntry.objects.get(object_type="campaigns.destination", action="changed")
    assert entry.changes == {"active": [True, False]}
    assert HOOK_URL not in str(entry.changes)


def test_admin_validates_a_new_destination(admin_client):
    add = reverse("admin:campaigns_destination_add")
    response = admin_client.post(add, {"name": "erp", "kind": "webhook", "new_url": "not a url", "new_secret": "short"})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"new_url", "new_secret"}
    assert not Destination.objects.exists()

    response = admin_client.post(
        add,
        {"name": "erp", "kind": "webhook", "new_url": HOOK_URL, "new_secret": SECRET, "active": "on"},
    )
    assert response.status_code == 302
    assert Destination.objects.get().secret == SECRET


def test_admin_test_action_queues_a_notification(admin_client, slack_destination, settings):
    settings.LOOP_CHANNEL_BACKENDS = {}
    changelist = reverse("admin:campaigns_destination_changelist")
    response = admin_client.post(changelist, {"action": "send_test", "_selected_action": [slack_destination.pk]})
    assert response.status_code == 302
    notification = Notification.objects.get()
    assert notification.destination == slack_destination
    assert notification.payload[0]["type"] == "header"


# --- The product's notifications -----------------------------------------------------------------------------------


def test_a_completed_run_posts_its_report_once(team, settings, slack_destination, django_capture_on_commit_callbacks):
    from campaigns.services.runs import run_finish_if_done
    from campaigns.tests.factories import CampaignFactory
    from campaigns.tests.test_pipeline import people, start

    settings.LOOP_CAMPAIGN_REPORT_DESTINATION = "sales-leads"
    settings.LOOP_PUBLIC_URL = "https://crm.example.com"
    team.add(responses.POST, SLACK_URL, body="ok")
    people(3, "email")
    people(1)  # no consent: skipped
    run = start(CampaignFactory(name="주말 세일"), capture=django_capture_on_commit_callbacks)
    assert run.status == "completed"
    assert not run_finish_if_done(run_id=run.pk)  # already complete: no second report

    notification = Notification.objects.get()
    assert (notification.key, notification.status) == (f"run-report:{run.pk}", "sent")
    [call] = team.calls
    body = json.loads(call.request.body)
    assert body["blocks"][0]["text"]["text"] == "캠페인 완료: 주말 세일"
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert fields[:3] == ["*발송됨*\n3", "*실패*\n0", "*건너뜀*\n1"]
    assert body["blocks"][2]["elements"][0]["url"] == f"https://crm.example.com/admin/campaigns/run/{run.pk}/change/"


def test_new_lead_goes_as_blocks_to_slack_and_as_data_to_a_webhook(
    team, slack_destination, hook_destination, django_capture_on_commit_callbacks
):
    from campaigns.team_reports import new_lead_notify
    from crm.tests.factories import ContactFactory

    team.add(responses.POST, SLACK_URL, body="ok")
    team.add(responses.POST, HOOK_URL, status=200)
    lead = ContactFactory(name="김민준", email="minjun@example.com", phone="")
    run_now(
        django_capture_on_commit_callbacks, lambda: new_lead_notify("sales-leads", contact=lead, source="인스타그램")
    )
    run_now(django_capture_on_commit_callbacks, lambda: new_lead_notify("erp", contact=lead, source="인스타그램"))

    slack_body, hook_body = (json.loads(call.request.body) for call in team.calls)
    assert slack_body["text"] == "새 리드: 김민준"
    assert [f["text"] for f in slack_body["blocks"][1]["fields"]] == [
        "*이메일*\nminjun@example.com",
        "*유입 경로*\n인스타그램",
    ]
    assert hook_body["event"] == "lead.created"
    assert hook_body["data"] == {
        "contact_id": lead.pk,
        "name": "김민준",
        "email": "minjun@example.com",
        "phone": "",
        "source": "인스타그램",
    }


def test_the_tick_does_not_queue_a_notification_a_task_already_carries(
    slack_destination, settings, django_capture_on_commit_callbacks
):
    settings.LOOP_CHANNEL_BACKENDS = {}
    with time_machine.travel(NOON, tick=False), django_capture_on_commit_callbacks() as queued:
        notification = slack_notify(slack_destination, text="x")
    assert len(queued) == 1  # its own task, not run here (a worker is down)

    with django_capture_on_commit_callbacks() as again:
        assert notifications_dispatch_due(now=NOON + timedelta(minutes=1)) == 0
    assert not again
    later = NOON + timedelta(seconds=settings.LOOP_SEND_CLAIM_LEASE + 1)  # the task was lost
    with time_machine.travel(later, tick=False), django_capture_on_commit_callbacks(execute=True):
        assert notifications_dispatch_due(now=later) == 1
    notification.refresh_from_db()
    assert (notification.status, notification.backend) == ("sent", "outbox")


def test_team_channels_need_no_consent_and_are_not_campaign_channels():
    from campaigns.channels import channel, channel_choices

    for name in ("slack", "webhook"):
        kind = channel(name)
        assert (kind.consent_purpose, kind.address) == (None, "")
    assert set(dict(channel_choices())) == {"email", "sms", "kakao", "push"}


def test_admin_retries_failed_notifications(admin_client, team, hook_destination, django_capture_on_commit_callbacks):
    team.add(responses.POST, HOOK_URL, status=404)
    team.add(responses.POST, HOOK_URL, status=200)
    failed = run_now(django_capture_on_commit_callbacks, lambda: webhook_notify("erp", event="e", data={}))
    assert failed.status == "failed"

    changelist = reverse("admin:campaigns_notification_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(changelist, {"action": "retry", "_selected_action": [failed.pk]})
    assert response.status_code == 302
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.error) == ("sent", 1, "")


def test_only_admins_change_destinations_test_them_or_retry(client, slack_destination, settings):
    from crm.roles import ADMIN, MARKETER
    from crm.tests.factories import user_with_role

    settings.LOOP_CHANNEL_BACKENDS = {}
    changelist = reverse("admin:campaigns_destination_changelist")
    client.force_login(user_with_role(MARKETER))
    assert client.get(changelist).status_code == 200  # marketers see where notifications go
    assert client.get(reverse("admin:campaigns_destination_add")).status_code == 403
    page = client.get(reverse("admin:campaigns_destination_change", args=[slack_destination.pk])).content.decode()
    assert SLACK_URL not in page
    client.post(changelist, {"action": "send_test", "_selected_action": [slack_destination.pk]})
    assert not Notification.objects.exists()
    failed = Notification.objects.create(destination=slack_destination, channel="slack", status="failed")
    notifications = reverse("admin:campaigns_notification_changelist")
    client.post(notifications, {"action": "retry", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == "failed"

    client.force_login(user_with_role(ADMIN))
    client.post(changelist, {"action": "send_test", "_selected_action": [slack_destination.pk]})
    assert Notification.objects.filter(status="queued").count() == 1
