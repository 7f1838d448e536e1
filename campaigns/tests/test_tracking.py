"""Own click and open tracking: links rewritten at render time, the signed redirect, the pixel, bot flags."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import signing
from django.core.cache import cache
from django.test import override_settings

from campaigns.models import BotReason, Click, Open, Send
from campaigns.services.sending import sends_process
from campaigns.tests.factories import CampaignFactory, SendFactory, VariantFactory
from campaigns.tracking import (
    CLICK_SALT,
    LINKS_KEY,
    click_token,
    open_token,
    read_click_token,
    track_content,
)
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db
PUBLIC = "https://crm.shop.example"
NOW = datetime(2026, 12, 6, 20, 0, tzinfo=ZoneInfo("Asia/Seoul"))
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


@pytest.fixture(autouse=True)
def public_url(settings):
    settings.LOOP_PUBLIC_URL = PUBLIC
    settings.LOOP_TRACKING_RATE_LIMIT = 60
    cache.clear()


def sent_send(*, links: list[str], sent_at: datetime = NOW, **kwargs) -> Send:
    return SendFactory(status=Send.Status.SENT, sent_at=sent_at, content={"body": "x", LINKS_KEY: links}, **kwargs)


def click(client, send: Send, index: int, *, method: str = "get", agent: str = BROWSER, ip: str = "203.0.113.7"):
    url = f"/t/c/{click_token(send_id=send.pk, index=index)}"
    return getattr(client, method)(url, HTTP_USER_AGENT=agent, REMOTE_ADDR=ip)


def test_links_of_every_kind_are_rewritten_to_placeholders_and_kept_in_order():
    content = {
        "html": (
            "<p><a href='https://shop.example/sale?a=1&amp;b=2'>세일</a> <a href=\"mailto:help@shop.example\">문의</a>"
            ' <a href="https://shop.example/sale?a=1&b=2">again</a>'
            ' <a href="%%loop_unsubscribe_url%%">수신거부</a> <a href="https://crm.shop.example/u/abc/">x</a></p>'
        ),
        "body": "지금 https://shop.example/new. 확인하세요 (tel:080-000-0000)",
        "link_url": "https://shop.example/app",
    }
    tracked = track_content(content)
    assert tracked[LINKS_KEY] == [
        "https://shop.example/sale?a=1&b=2",
        "https://shop.example/new",
        "https://shop.example/app",
    ]
    # The same URL twice (once HTML-escaped) shares index 0; mailto, unsubscribe and our own links are untouched.
    assert tracked["html"] == (
        "<p><a href='%%loop_link_0%%'>세일</a> <a href=\"mailto:help@shop.example\">문의</a>"
        ' <a href="%%loop_link_0%%">again</a>'
        ' <a href="%%loop_unsubscribe_url%%">수신거부</a> <a href="https://crm.shop.example/u/abc/">x</a></p>'
    )
    assert tracked["body"] == "지금 %%loop_link_1%%. 확인하세요 (tel:080-000-0000)"  # the full stop stays text
    assert tracked["link_url"] == "%%loop_link_2%%"


@override_settings(LOOP_TRACK_CLICKS=False)
def test_click_tracking_can_be_switched_off():
    content = {"body": "https://shop.example/a"}
    assert track_content(content) == content


def test_the_pipeline_sends_tracked_urls_to_backends_without_merge_data(django_capture_on_commit_callbacks):
    contact = ContactFactory(phone="+821012345678")
    ConsentFactory(contact=contact, purpose="push")
    campaign = CampaignFactory(channel="sms", variants=0)
    VariantFactory(campaign=campaign, name="A", body="주문 확인: https://shop.example/o/1")
    ConsentFactory(contact=contact, purpose="sms")
    send = SendFactory(campaign=campaign, contact=contact, channel="sms", variant=campaign.variants.get())
    sends_process(send_ids=[send.pk])
    send.refresh_from_db()
    assert send.status == Send.Status.SENT, send.skip_reason
    assert send.content[LINKS_KEY] == ["https://shop.example/o/1"]
    outbox = send.outbox_message.body
    token = outbox.split(f"{PUBLIC}/t/c/")[1].split()[0]
    assert read_click_token(token) == (send.pk, 0)


def test_a_click_is_recorded_and_redirects_to_the_messages_url(client):
    send = sent_send(links=["https://shop.example/a", "https://shop.example/b"])
    with time_machine.travel(NOW + timedelta(minutes=3), tick=False):
        response = click(client, send, 1)
    assert response.status_code == 302
    assert response["Location"] == "https://shop.example/b"
    assert "no-cache" in response["Cache-Control"]
    hit = Click.objects.get()
    assert (hit.send_id, hit.url, hit.is_bot, hit.bot_reason) == (send.pk, "https://shop.example/b", False, "")
    assert hit.user_agent == BROWSER
    assert len(hit.ip_hash) == 64
    assert "203.0.113.7" not in hit.ip_hash
    send.refresh_from_db()
    assert send.clicked_at == NOW + timedelta(minutes=3)
    assert send.opened_at == NOW + timedelta(minutes=3)  # a click implies an open

    with time_machine.travel(NOW + timedelta(minutes=9), tick=False):
        assert click(client, send, 0).status_code == 302
    send.refresh_from_db()
    assert send.clicked_at == NOW + timedelta(minutes=3)  # the first click stays
    assert Click.objects.count() == 2


def test_a_forged_or_altered_token_is_refused(client):
    send = sent_send(links=["https://shop.example/a"])
    token = click_token(send_id=send.pk, index=0)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.get(f"/t/c/{forged}").status_code == 400
    other_salt = signing.Signer(salt="loop.campaigns.unsubscribe").sign(f"{send.pk}.0")
    assert client.get(f"/t/c/{other_salt}").status_code == 400
    assert client.get("/t/c/garbage").status_code == 400
    assert signing.Signer(salt=CLICK_SALT).sign(f"{send.pk}.0") == token
    assert not Click.objects.exists()


def test_no_open_redirect_only_the_messages_own_links_are_reachable(client):
    send = sent_send(links=["https://shop.example/a"])
    # A validly signed index the send does not have: refused, nothing else can be reached.
    assert click(client, send, 1).status_code == 400
    # A URL in the query string is ignored: the destination comes from the send alone.
    response = client.get(
        f"/t/c/{click_token(send_id=send.pk, index=0)}?url=https://evil.example/", HTTP_USER_AGENT=BROWSER
    )
    assert response["Location"] == "https://shop.example/a"
    # A destination that is not http(s) (e.g. javascript:) is never redirected to, even if stored.
    bad = sent_send(links=["javascript:alert(1)"])
    assert click(client, bad, 0).status_code == 400
    assert Click.objects.count() == 1
    assert client.get(f"/t/c/{click_token(send_id=999999, index=0)}").status_code == 404


def test_scanner_head_and_too_fast_clicks_are_flagged_and_not_counted(client):
    send = sent_send(links=["https://shop.example/a"])
    with time_machine.travel(NOW + timedelta(seconds=2), tick=False):
        assert click(client, send, 0).status_code == 302  # 2 s after sending: a gateway scanning the mail
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        click(client, send, 0, agent="Mozilla/5.0 (compatible; Barracuda Sentinel)")
        click(client, send, 0, method="head")
        click(client, send, 0, agent="")
    reasons = list(Click.objects.order_by("id").values_list("is_bot", "bot_reason"))
    assert reasons == [
        (True, BotReason.TOO_FAST),
        (True, BotReason.USER_AGENT),
        (True, BotReason.HEAD),
        (True, BotReason.USER_AGENT),
    ]
    send.refresh_from_db()
    assert send.clicked_at is None
    assert send.opened_at is None
    with override_settings(LOOP_TRACKING_COUNT_BOTS=True), time_machine.travel(NOW + timedelta(minutes=6)):
        click(client, send, 0, agent="python-requests/2.32")
    send.refresh_from_db()
    assert send.clicked_at is not None


def test_the_click_delay_counts_from_delivery_when_the_provider_reported_it(client):
    send = sent_send(links=["https://shop.example/a"], delivered_at=NOW + timedelta(minutes=10))
    with time_machine.travel(NOW + timedelta(minutes=10, seconds=5), tick=False):
        click(client, send, 0)  # 5 s after delivery: at the limit (TRACKING_BOT_SECONDS = 5) → a scanner
    with time_machine.travel(NOW + timedelta(minutes=10, seconds=6), tick=False):
        click(client, send, 0)  # 6 s: a person
    assert list(Click.objects.order_by("id").values_list("bot_reason", flat=True)) == [BotReason.TOO_FAST, ""]


def test_the_open_pixel_is_a_gif_that_is_never_cached(client):
    send = sent_send(links=[])
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        response = client.get(f"/t/o/{open_token(send_id=send.pk)}.gif", HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    assert len(response.content) == 43
    assert "no-store" in response["Cache-Control"]
    send.refresh_from_db()
    assert send.opened_at == NOW + timedelta(hours=1)
    assert Open.objects.get().is_bot is False
    assert client.get(f"/t/o/{open_token(send_id=send.pk)[:-1]}x.gif").status_code == 400


def test_apple_mail_privacy_protection_opens_are_flagged(client):
    send = sent_send(links=[])
    token = open_token(send_id=send.pk)
    client.get(f"/t/o/{token}.gif", HTTP_USER_AGENT="Mozilla/5.0", REMOTE_ADDR="17.58.100.1")
    client.get(f"/t/o/{token}.gif", HTTP_USER_AGENT="Mozilla/5.0 (Macintosh)", REMOTE_ADDR="17.1.2.3")
    client.get(f"/t/o/{token}.gif", HTTP_USER_AGENT="Mozilla/5.0", REMOTE_ADDR="198.51.100.4")
    assert list(Open.objects.order_by("id").values_list("bot_reason", flat=True)) == [BotReason.APPLE_MPP] * 3
    send.refresh_from_db()
    assert send.opened_at is None


def test_requests_over_the_rate_limit_redirect_but_are_not_recorded(client, settings):
    settings.LOOP_TRACKING_RATE_LIMIT = 3
    send = sent_send(links=["https://shop.example/a"])
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        statuses = [click(client, send, 0).status_code for _ in range(5)]
    assert statuses == [302] * 5
    assert Click.objects.count() == 3
    click(client, send, 0, ip="198.51.100.9")  # another address has its own budget
    assert Click.objects.count() == 4
