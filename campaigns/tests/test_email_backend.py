"""The email backend: batch sending through anymail's Mailgun backend (recorded HTTP with ``responses``: the real
request body with merge data and headers), one message per recipient for personalized content and for SMTP
(Django's locmem backend), the layout, the text part, List-Unsubscribe, and error mapping."""

from __future__ import annotations

import json
import smtplib
from datetime import datetime
from email import message_from_bytes
from email.policy import default as default_policy
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
import responses
import time_machine
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from campaigns.channels import Message, backend_for
from campaigns.channels.email import html_to_text
from campaigns.models import Campaign, Purpose, Send
from campaigns.services.runs import run_create, run_start
from campaigns.services.sending import sends_process
from campaigns.tests.factories import CampaignFactory, SendFactory, VariantFactory
from campaigns.tracking import read_click_token, read_open_token
from campaigns.unsubscribe import read_token
from crm.tests.factories import ConsentFactory, ContactFactory

pytestmark = pytest.mark.django_db
SEOUL = ZoneInfo("Asia/Seoul")
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=SEOUL)
MAILGUN_URL = "https://api.mailgun.net/v3/mg.shop.example/messages"
PUBLIC = "https://crm.shop.example"


@pytest.fixture
def email_settings(settings):
    settings.LOOP_CHANNEL_BACKENDS = {"email": "anymail"}
    settings.LOOP_PUBLIC_URL = PUBLIC
    settings.DEFAULT_FROM_EMAIL = "Loop CRM <news@shop.example>"
    settings.LOOP_SENDER_NAME = "루프샵"
    settings.LOOP_SENDER_CONTACT = "02-123-4567"
    settings.LOOP_SENDER_ADDRESS = "서울시 강남구 테헤란로 1"
    settings.LOOP_UNSUBSCRIBE_MAILTO = "unsubscribe@shop.example"
    settings.LANGUAGE_CODE = "ko"
    return settings


@pytest.fixture
def mailgun(email_settings):
    email_settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    email_settings.ANYMAIL = {"MAILGUN_API_KEY": "key-test-123", "MAILGUN_SENDER_DOMAIN": "mg.shop.example"}
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def locmem(email_settings):
    email_settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    return mail.outbox


def consenting(n: int, *purposes: str) -> list:
    contacts = ContactFactory.create_batch(n)
    for contact in contacts:
        for purpose in purposes:
            ConsentFactory(contact=contact, purpose=purpose)
    return contacts


def start(campaign: Campaign, capture) -> None:
    campaign.status = Campaign.Status.SCHEDULED
    campaign.save(update_fields=["status"])
    run, _ = run_create(campaign=campaign, scheduled_for=NOON)
    with time_machine.travel(NOON, tick=False), capture(execute=True):
        run_start(run_id=run.pk, now=NOON)


def form(request) -> dict[str, list[str]]:
    """The fields of a Mailgun API request (multipart or urlencoded)."""
    content_type = request.headers["Content-Type"]
    body = request.body if isinstance(request.body, bytes) else request.body.encode()
    if content_type.startswith("multipart/form-data"):
        parsed = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=default_policy)
        fields: dict[str, list[str]] = {}
        for part in parsed.iter_parts():
            fields.setdefault(part.get_param("name", header="content-disposition"), []).append(part.get_content())
        return fields
    return parse_qs(body.decode(), keep_blank_values=True)


def mailgun_ok(rsps, message_id: str = "<20261207030000.1.AAAA@mg.shop.example>"):
    rsps.post(MAILGUN_URL, json={"id": message_id, "message": "Queued. Thank you."}, status=200)


def test_identical_content_goes_out_as_one_mailgun_batch_with_per_recipient_merge_data(
    mailgun, django_capture_on_commit_callbacks
):
    contacts = consenting(3, "email", "ads")
    campaign = CampaignFactory(purpose=Purpose.ADVERTISING, variants=0, sender_name="루프샵 이벤트")
    VariantFactory(
        campaign=campaign,
        name="A",
        subject="주말 한정 할인",
        preheader="4시간 뒤 종료",
        body="",
        html="<h1>주말 한정 할인</h1><p>지금 <a href='https://shop.example/sale'>확인하세요</a>.</p>",
    )
    mailgun_ok(mailgun)

    start(campaign, django_capture_on_commit_callbacks)

    assert len(mailgun.calls) == 1
    request = mailgun.calls[0].request
    assert request.headers["Authorization"].startswith("Basic ")  # api:key-test-123
    fields = form(request)
    assert fields["from"] == ["루프샵 이벤트 <news@shop.example>"]
    assert sorted(fields["to"]) == sorted(c.email for c in contacts)
    assert fields["subject"] == ["(광고) 주말 한정 할인"]
    assert fields["h:List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"]
    # The per-recipient parts are merge fields, filled by Mailgun from recipient-variables.
    assert fields["h:List-Unsubscribe"] == ["%recipient.h:List-Unsubscribe%"]
    assert fields["v:loop_send_id"] == ["%recipient.v:loop_send_id%"]
    html = fields["html"][0]
    assert 'href="%recipient.loop_unsubscribe_url%"' in html
    # The link is tracked: a merge field per recipient, filled with that send's signed redirect.
    assert "<h1>주말 한정 할인</h1><p>지금 <a href='%recipient.loop_link_0%'>확인하세요</a>.</p>" in html
    assert 'src="%recipient.loop_open_url%" width="1" height="1"' in html  # the open pixel
    assert "4시간 뒤 종료" in html
    assert "display:none" in html
    assert "루프샵 이벤트 · 02-123-4567" in html
    assert "서울시 강남구 테헤란로 1" in html
    assert html.count("수신거부") == 1  # the advertising footer moved into the layout, not repeated
    text = fields["text"][0]
    assert "주말 한정 할인" in text
    assert "[수신거부](%recipient.loop_unsubscribe_url%)" in text
    assert "<" not in text.replace("<news", "")

    variables = json.loads(fields["recipient-variables"][0])
    sends = {s.contact_id: s for s in Send.objects.filter(campaign=campaign)}
    for contact in contacts:
        mine = variables[contact.email]
        send = sends[contact.pk]
        assert mine["v:loop_send_id"] == str(send.pk)
        url = mine["loop_unsubscribe_url"]
        assert url.startswith(f"{PUBLIC}/u/")
        assert url.endswith("/")
        token = url.removeprefix(f"{PUBLIC}/u/").removesuffix("/")
        wanted = read_token(token)
        assert (wanted.contact_id, wanted.channel, wanted.send_id) == (contact.pk, "email", send.pk)
        assert mine["h:List-Unsubscribe"] == f"<{url}>, <mailto:unsubscribe@shop.example?subject=unsubscribe%20{token}>"
        assert send.status == Send.Status.SENT
        assert send.backend == "anymail"
        assert send.provider_message_id == "<20261207030000.1.AAAA@mg.shop.example>"
        assert send.content["tracked_links"] == ["https://shop.example/sale"]
        assert read_click_token(mine["loop_link_0"].removeprefix(f"{PUBLIC}/t/c/")) == (send.pk, 0)
        assert read_open_token(mine["loop_open_url"].removeprefix(f"{PUBLIC}/t/o/").removesuffix(".gif")) == send.pk


def test_personalized_content_is_sent_one_message_per_recipient(mailgun, django_capture_on_commit_callbacks):
    contacts = consenting(2, "email")
    campaign = CampaignFactory(variants=0)
    VariantFactory(campaign=campaign, name="A", subject="#{고객명}님 소식", body="#{고객명}님, 안녕하세요!")
    mailgun_ok(mailgun, "<one@mg.shop.example>")
    mailgun_ok(mailgun, "<two@mg.shop.example>")

    start(campaign, django_capture_on_commit_callbacks)

    assert len(mailgun.calls) == 2
    by_to = {form(call.request)["to"][0]: form(call.request) for call in mailgun.calls}
    for contact in contacts:
        fields = by_to[contact.email]
        assert fields["subject"] == [f"{contact.name}님 소식"]
        url = fields["h:List-Unsubscribe"][0].split(">")[0].removeprefix("<")
        assert read_token(url.removeprefix(f"{PUBLIC}/u/").removesuffix("/")).contact_id == contact.pk
        assert f'href="{url}"' in fields["html"][0]  # the link in the footer of the text-made HTML part
        assert f"{contact.name}님, 안녕하세요!" in fields["text"][0]
        assert url in fields["text"][0]
        assert "recipient-variables" not in fields
    assert set(Send.objects.values_list("provider_message_id", flat=True)) == {
        "<one@mg.shop.example>",
        "<two@mg.shop.example>",
    }


def message_for(send: Send, **content) -> Message:
    return Message(
        send_id=send.pk,
        channel="email",
        contact_id=send.contact_id,
        to=send.contact.email,
        body=content.get("body", "안녕하세요"),
        subject=content.get("subject", "소식"),
        extra={"campaign_id": send.campaign_id},
    )


@pytest.mark.parametrize(
    ("status", "transient"),
    [(429, True), (500, True), (503, True), (401, True), (400, False), (404, False)],
)
def test_mailgun_errors_map_to_transient_or_permanent(mailgun, status, transient):
    sends = SendFactory.create_batch(2)
    mailgun.post(MAILGUN_URL, json={"message": "boom"}, status=status)

    results = backend_for("email").send_batch([message_for(s) for s in sends])

    assert {r.send_id for r in results} == {s.pk for s in sends}
    assert all(not r.ok and r.transient is transient for r in results)
    assert str(status) in results[0].error
    assert "key-test-123" not in results[0].error


def test_a_connection_error_is_transient(mailgun):
    import requests

    send = SendFactory()
    mailgun.post(MAILGUN_URL, body=requests.ConnectionError("connection reset"))

    [result] = backend_for("email").send_batch([message_for(send)])

    assert not result.ok
    assert result.transient


def test_one_contact_twice_in_a_batch_gets_two_batches(mailgun):
    """Merge data is keyed by address: two contacts sharing an address never share a batch."""
    first = SendFactory(contact=ContactFactory(email="family@example.com"))
    second = SendFactory(contact=ContactFactory(email="family@example.com"))
    mailgun_ok(mailgun, "<a@mg>")
    mailgun_ok(mailgun, "<b@mg>")

    results = backend_for("email").send_batch([message_for(first), message_for(second)])

    assert len(mailgun.calls) == 2
    assert sorted(r.provider_message_id for r in results) == ["<a@mg>", "<b@mg>"]


# --- SMTP (Django's backends) --------------------------------------------------------------------------------------


def test_smtp_path_sends_one_message_per_recipient_with_headers_and_both_parts(
    locmem, django_capture_on_commit_callbacks
):
    consenting(2, "email", "ads")
    campaign = CampaignFactory(purpose=Purpose.ADVERTISING, variants=0)
    VariantFactory(
        campaign=campaign, name="A", subject="신상품", preheader="미리보기", body="새 상품이 나왔어요.\n\n구경하세요."
    )

    start(campaign, django_capture_on_commit_callbacks)

    assert len(locmem) == 2
    sends = {s.address: s for s in Send.objects.filter(campaign=campaign)}
    for message in locmem:
        [to] = message.to
        send = sends[to]
        assert message.subject == "(광고) 신상품"
        assert message.from_email == "루프샵 <news@shop.example>"
        unsubscribe = message.extra_headers["List-Unsubscribe"]
        url = unsubscribe.split(">")[0].removeprefix("<")
        assert read_token(url.removeprefix(f"{PUBLIC}/u/").removesuffix("/")).send_id == send.pk
        assert "mailto:unsubscribe@shop.example" in unsubscribe
        assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert send.provider_message_id == message.extra_headers["Message-ID"]
        # The text part is the advertising form's text; the HTML part is made from it in the layout.
        assert message.body.startswith("새 상품이 나왔어요.\n\n구경하세요.")
        assert f"수신을 원하지 않으시면 수신거부: {url}" in message.body
        [(html, mimetype)] = message.alternatives
        assert mimetype == "text/html"
        assert "<p>새 상품이 나왔어요.</p>" in html
        assert f'href="{url}"' in html
        assert "미리보기" in html
        assert html.count("수신거부") == 1
        assert 'role="presentation"' in html
        assert "@media only screen" in html


def test_complete_html_documents_are_kept_with_the_preheader_after_body(locmem, django_capture_on_commit_callbacks):
    consenting(1, "email")
    campaign = CampaignFactory(variants=0)
    document = "<html><body class='x'><p>전체 문서</p></body></html>"
    VariantFactory(campaign=campaign, name="A", subject="s", preheader="앞줄", html=document)

    start(campaign, django_capture_on_commit_callbacks)

    [message] = locmem
    [(html, _mimetype)] = message.alternatives
    assert html.startswith("<html><body class='x'><div style=\"display:none")
    assert "앞줄" in html
    assert message.body.strip() == "전체 문서"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"no such user")}), False),
        (smtplib.SMTPRecipientsRefused({"x@example.com": (452, b"mailbox full")}), True),
        (smtplib.SMTPDataError(554, b"rejected content"), False),
        (smtplib.SMTPDataError(421, b"try later"), True),
        (smtplib.SMTPServerDisconnected("gone"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (RuntimeError("unexpected"), False),
    ],
)
def test_smtp_errors_map_to_transient_or_permanent(locmem, monkeypatch, error, transient):
    send = SendFactory()

    def fail(self, messages):
        raise error

    monkeypatch.setattr(LocmemBackend, "send_messages", fail)
    [result] = backend_for("email").send_batch([message_for(send)])

    assert not result.ok
    assert result.transient is transient
    if isinstance(error, RuntimeError):
        assert result.error.startswith("delivery unknown")


def test_html_to_text_keeps_links_and_paragraphs():
    text = html_to_text(
        "<h1>제목</h1><p>본문 <a href='https://x.example/a'>링크</a></p><table><tr><td>셀</td></tr></table>"
    )
    assert text == "제목\n\n본문 [링크](https://x.example/a)\n\n셀\n"


def test_without_public_url_nothing_is_sent_and_the_batch_is_released(mailgun, email_settings):
    send = SendFactory()
    email_settings.LOOP_PUBLIC_URL = ""
    with pytest.raises(ImproperlyConfigured, match="PUBLIC_URL"):
        backend_for("email").send_batch([message_for(send)])
    ConsentFactory(contact=send.contact, purpose="email")
    sends_process(send_ids=[send.pk])

    send.refresh_from_db()
    assert len(mailgun.calls) == 0
    assert send.status == Send.Status.QUEUED  # released with a backoff, retried once PUBLIC_URL is set
    assert "PUBLIC_URL" in send.error


def test_sparkpost_batch_carries_each_recipients_link_header_and_send_id(email_settings):
    email_settings.EMAIL_BACKEND = "anymail.backends.sparkpost.EmailBackend"
    email_settings.ANYMAIL = {"SPARKPOST_API_KEY": "sp-test-key"}
    sends = SendFactory.create_batch(2)
    with responses.RequestsMock() as rsps:
        rsps.post(
            "https://api.sparkpost.com/api/v1/transmissions/",
            json={
                "results": {"total_rejected_recipients": 0, "total_accepted_recipients": 2, "id": "11668787484950529"}
            },
        )
        results = backend_for("email").send_batch([message_for(s) for s in sends])
        assert len(rsps.calls) == 1
        body = json.loads(rsps.calls[0].request.body)

    assert all(r.ok and r.provider_message_id == "11668787484950529" for r in results)
    assert "{{loop_unsubscribe_url}}" in body["content"]["html"]
    assert body["content"]["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    recipients = {r["address"]["email"]: r for r in body["recipients"]}
    for send in sends:
        mine = recipients[send.contact.email]
        link = mine["substitution_data"]["loop_unsubscribe_url"]
        assert read_token(link.removeprefix(f"{PUBLIC}/u/").removesuffix("/")).send_id == send.pk
        assert mine["substitution_data"]["Header__List_Unsubscribe"].startswith(f"<{link}>")
        assert mine["metadata"] == {"loop_send_id": str(send.pk)}
    assert body["content"]["headers"]["List-Unsubscribe"] == "{{Header__List_Unsubscribe}}"


def test_admin_preview_shows_the_email_as_received(admin_client, email_settings):
    from django.urls import reverse

    contact = ContactFactory(name="최수아")
    campaign = CampaignFactory(purpose=Purpose.ADVERTISING, sender_name="루프샵 이벤트")
    url = reverse("admin:campaigns_campaign_preview", args=[campaign.pk])

    response = admin_client.get(url, {"contact": contact.email, "variant": campaign.variants.get().pk})

    email = response.context["email"]
    assert email["from"] == "루프샵 이벤트 <news@shop.example>"
    assert "최수아님, 주말 한정 할인이 4시간 뒤 종료돼요!" in email["html"]
    assert 'role="presentation"' in email["html"]
    assert 'href="#unsubscribe"' in email["html"]
    assert email["text"].startswith("최수아님, 주말 한정 할인이 4시간 뒤 종료돼요!")
    assert "받는 모습" in response.content.decode()
    assert not Send.objects.exists()


def test_an_invalid_address_fails_alone_and_the_rest_of_the_batch_goes_out(mailgun):
    good = SendFactory.create_batch(2)
    bad = SendFactory(contact=ContactFactory(email="not-an-address"))
    mailgun_ok(mailgun)

    results = {r.send_id: r for r in backend_for("email").send_batch([message_for(s) for s in [*good, bad]])}

    assert len(mailgun.calls) == 1
    assert sorted(form(mailgun.calls[0].request)["to"]) == sorted(s.contact.email for s in good)
    assert all(results[s.pk].ok for s in good)
    assert not results[bad.pk].ok
    assert not results[bad.pk].transient
    assert results[bad.pk].error == "invalid email address"


def test_a_line_break_in_the_subject_is_a_permanent_failure(locmem):
    send = SendFactory()

    [result] = backend_for("email").send_batch([message_for(send, subject="할인\nBcc: everyone@example.com")])

    assert not result.ok
    assert not result.transient
    assert "BadHeaderError" in result.error
    assert locmem == []
