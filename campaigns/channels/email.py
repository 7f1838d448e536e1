"""The email backend ("anymail"): delivers campaign email through Django's email backend, i.e. django-anymail and any
ESP it supports (Mailgun, Postmark, Amazon SES, Brevo, SparkPost…) or SMTP (``EMAIL_BACKEND``).

What it adds to the pipeline's rendered content:

- the HTML in the responsive layout ``templates/email/base.html`` (table-based, inline styles, a hidden preheader,
  a footer with the sender's name, contact and address and the unsubscribe link); a complete HTML document of the
  author's is kept as it is (the preheader is inserted after ``<body>``); a text-only message gets an HTML part made
  from its text;
- a text part made from the HTML (inscriptis) when the author wrote HTML;
- the contact's signed unsubscribe link in place of ``campaigns.advertising.UNSUBSCRIBE_URL``, and the headers
  ``List-Unsubscribe: <https://…/u/TOKEN/>, <mailto:…>`` and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
  (RFC 8058);
- the open pixel (``campaigns.tracking``) at the end of the HTML body, its per-send URL filled in like the
  unsubscribe link (a merge field in batches); links were made tracked redirects by the pipeline, so a message
  with links is personal (one per recipient) and only link-free content goes out in merged batches;
- ``From`` with the sender's name (the campaign's, else ``SENDER_NAME``) and ``DEFAULT_FROM_EMAIL``'s address.

**Batch sending.** For ESPs whose anymail backend has batch sending with per-recipient merge data and headers
(``BATCH_MERGE_FIELDS``), messages whose content is identical but for the unsubscribe link go out as one
``EmailMultiAlternatives`` with ``merge_data`` (the link, as the ESP's merge field), ``merge_headers``
(List-Unsubscribe) and ``merge_metadata`` (the send id, echoed by tracking webhooks): one API call, one message
per recipient. Personalized content (different per contact) and every other backend (SMTP…) send one message per
recipient, over one connection per batch.

**Results.** Each recipient's ESP message id (``anymail_status.recipients``; for SMTP the Message-ID header) is
recorded. Errors: HTTP 429, 5xx, connect timeouts and connection errors, SMTP 4xx and a refused connection are transient
(retried with backoff); a read timeout (the request reached the ESP, no answer) is "delivery unknown" and never retried
(no duplicate); invalid addresses, recipients the ESP rejected, other 4xx and SMTP 5xx are permanent.
"""

from __future__ import annotations

import re
import smtplib
from collections import defaultdict
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import getaddresses, make_msgid

import requests
import structlog
from anymail.exceptions import (
    AnymailAPIError,
    AnymailError,
    AnymailInvalidAddress,
    AnymailRecipientsRefused,
    AnymailSerializationError,
    AnymailUnsupportedFeature,
)
from anymail.message import AnymailMessage
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import BadHeaderError, get_connection
from django.core.mail.utils import DNS_NAME
from django.core.validators import validate_email
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.html import escape, linebreaks, urlize
from django.utils.safestring import mark_safe
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

from campaigns.advertising import AD_FOOTER_CLASS, UNSUBSCRIBE_URL
from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, ChannelBackend, Message, SendResult
from campaigns.tracking import OPEN_PIXEL_URL, add_open_pixel, click_url, fill_links, link_placeholders, open_url
from campaigns.unsubscribe import public_url, unsubscribe_mailto, unsubscribe_url

log = structlog.get_logger(__name__)

#: ESPs (anymail ``esp_name``) sent in batches, with the syntax of a merge field in their on-the-fly templates.
BATCH_MERGE_FIELDS: dict[str, str] = {
    "Mailgun": "%recipient.{}%",
    "SparkPost": "{{{{{}}}}}",
}
#: Most recipients per batch API call (Mailgun accepts 1,000).
MAX_BATCH_RECIPIENTS = 500
MERGE_KEY = "loop_unsubscribe_url"
OPEN_MERGE_KEY = "loop_open_url"
#: Metadata key carrying the send id (tracking webhooks echo it; see campaigns.services.receipts).
SEND_ID_METADATA = "loop_send_id"
ONE_CLICK = "List-Unsubscribe=One-Click"
#: ESP recipient statuses: accepted, or refused for good.
ACCEPTED = {"sent", "queued", "unknown"}
REFUSED = {"invalid", "rejected"}

_AD_FOOTER = re.compile(rf'<p class="{AD_FOOTER_CLASS}">.*?</p>', re.DOTALL)
_BODY_OPEN = re.compile(r"<body[^>]*>", re.IGNORECASE)
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=True)


@dataclass(frozen=True, slots=True)
class EmailContent:
    """One message as it goes out, with ``UNSUBSCRIBE_URL`` still in place of the contact's link."""

    from_email: str
    subject: str
    text: str
    html: str


def html_to_text(html: str) -> str:
    text = get_text(html, _TEXT_CONFIG)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def from_address(sender_name: str) -> str:
    """``DEFAULT_FROM_EMAIL``'s address with the sender's name (advertising must name its sender)."""
    _name, address = getaddresses([settings.DEFAULT_FROM_EMAIL])[0]
    username, _at, domain = address.rpartition("@")
    return str(Address(display_name=sender_name, username=username, domain=domain))


def render_email(message: Message, *, sender_name: str) -> EmailContent:
    """The subject, text and HTML parts of ``message`` (the pipeline's rendered content) in the email layout."""
    footer_context = {
        "sender_name": sender_name,
        "sender_contact": settings.LOOP_SENDER_CONTACT,
        "sender_address": settings.LOOP_SENDER_ADDRESS,
        "unsubscribe_url": UNSUBSCRIBE_URL,
    }
    with translation.override(settings.LANGUAGE_CODE):
        footer_html = render_to_string("email/footer.html", footer_context)
        if message.html and "<html" in message.html.lower():
            # The author's own complete document: kept, with the preheader as the first thing in the body.
            html = message.html
            if message.preheader:
                hidden = render_to_string(
                    "email/preheader.html", {"preheader": message.preheader, "preheader_padding": range(60)}
                )
                html = _BODY_OPEN.sub(lambda m: m.group(0) + hidden, html, count=1)
            text = html_to_text(_BODY_OPEN.sub("", message.html))
        else:
            if message.html:
                content = _AD_FOOTER.sub("", message.html).strip()
                text = html_to_text(content + footer_html)
            else:
                body = message.body.strip()
                head, _sep, tail = body.rpartition("\n\n")
                if message.advertising and UNSUBSCRIBE_URL in tail:
                    body = head  # the advertising form's footer; the layout has its own
                    text = message.body.strip() + "\n"
                else:
                    text = f"{body}\n\n{html_to_text(footer_html)}"
                content = linebreaks(urlize(escape(body), nofollow=False, autoescape=False), autoescape=False)
                content = link_tracked_urls(content)
            html = render_to_string(
                "email/base.html",
                {
                    **footer_context,
                    "language": settings.LANGUAGE_CODE,
                    "subject": message.subject,
                    "preheader": message.preheader,
                    "preheader_padding": range(60) if message.preheader else (),
                    "content": mark_safe(content),  # noqa: S308  (the author's HTML, values escaped when rendered)
                },
            )
    html = add_open_pixel(html, send_id=message.send_id)  # OPEN_PIXEL_URL in place of the send's pixel URL
    return EmailContent(from_email=from_address(sender_name), subject=message.subject, text=text, html=html)


_LINK_PLACEHOLDER = re.compile(r"%%loop_link_\d+%%")


def link_tracked_urls(content: str) -> str:
    """A text body's tracked links (placeholders, which ``urlize`` does not see as URLs) made clickable."""
    return _LINK_PLACEHOLDER.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', content)


def valid_address(address: object) -> bool:
    if not isinstance(address, str) or any(c in address for c in "\r\n<>,"):
        return False
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


def list_unsubscribe(message: Message) -> str:
    links = [unsubscribe_url(contact_id=message.contact_id, channel=message.channel, send_id=message.send_id)]
    mailto = unsubscribe_mailto(contact_id=message.contact_id, channel=message.channel, send_id=message.send_id)
    if mailto:
        links.append(mailto)
    return ", ".join(f"<{link}>" for link in links)


def failure(exc: BaseException) -> tuple[str, bool]:
    """``(error, transient)`` for an exception of a send call."""
    error = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, AnymailInvalidAddress | AnymailUnsupportedFeature | AnymailSerializationError):
        return error, False
    if isinstance(exc, BadHeaderError):  # e.g. a line break in the subject
        return error, False
    if isinstance(exc, AnymailRecipientsRefused):
        return error, False
    if isinstance(exc, requests.ReadTimeout):
        # The request reached the ESP and no answer came in time: it may have been accepted. Retrying could send the
        # message twice (ESPs have no idempotency key), so it is recorded as unknown and never retried.
        return f"delivery unknown: {error}", False
    if isinstance(exc, AnymailAPIError):
        status = getattr(exc, "status_code", None)
        if status is None:  # no answer: connection refused or reset, connect timeout
            return error, True
        # Rate limits, server errors, and credentials or account problems an operator can fix: retried.
        return error, status in (401, 403, 408, 409, 425, 429) or status >= 500
    if isinstance(exc, smtplib.SMTPResponseException):
        return error, 400 <= exc.smtp_code < 500 or isinstance(exc, smtplib.SMTPAuthenticationError)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _msg in exc.recipients.values()]
        return error, bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPException | OSError | AnymailError):
        return error, True  # disconnected, refused, timed out
    # Anything else happened mid-call: the message may have left; never retried, so never sent twice.
    return f"delivery unknown: {error}", False


@register_backend
class AnymailEmailBackend(ChannelBackend):
    name = "anymail"
    #: Tracked links stay placeholders in the pipeline's messages: filled in here, per recipient or as merge data.
    fills_tracking_links = True
    capabilities = Capabilities(max_batch_size=500, idempotent=False, channels=frozenset({"email"}))

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        if not messages:
            return []
        public_url("/")  # links need PUBLIC_URL: fail the whole call before anything leaves
        connection = get_connection(fail_silently=False)
        merge_field = BATCH_MERGE_FIELDS.get(getattr(connection, "esp_name", ""))
        names = self._sender_names(messages)
        results: list[SendResult] = []
        prepared = []
        rendered: dict[tuple, EmailContent] = {}
        for m in messages:
            if not valid_address(m.to):  # refused here, so that one bad address never fails a whole batch
                results.append(SendResult(send_id=m.send_id, ok=False, error="invalid email address", transient=False))
                continue
            sender = names.get(m.extra.get("campaign_id")) or settings.LOOP_SENDER_NAME
            # Identical content (a broadcast without personal variables) is laid out once per call.
            key = (sender, m.subject, m.preheader, m.body, m.html, m.advertising)
            if key not in rendered:
                rendered[key] = render_email(m, sender_name=sender)
            prepared.append((m, rendered[key]))
        if not prepared:
            return results
        try:
            connection.open()
        except Exception as exc:
            error, transient = failure(exc)
            return results + [
                SendResult(send_id=m.send_id, ok=False, error=error, transient=transient) for m, _c in prepared
            ]
        try:
            if merge_field:
                for group in self._batches(prepared):
                    if len(group) == 1:
                        results.append(self._send_one(connection, *group[0]))
                    else:
                        results += self._send_merged(connection, group, merge_field)
            else:
                for message, content in prepared:
                    results.append(self._send_one(connection, message, content))
        finally:
            connection.close()
        log.info(
            "email_batch_sent",
            esp=getattr(connection, "esp_name", type(connection).__module__),
            messages=len(messages),
            ok=sum(r.ok for r in results),
        )
        return results

    @staticmethod
    def _sender_names(messages: list[Message]) -> dict[int, str]:
        from campaigns.models import Campaign

        ids = {m.extra.get("campaign_id") for m in messages} - {None}
        return dict(Campaign.objects.filter(pk__in=ids).exclude(sender_name="").values_list("pk", "sender_name"))

    @staticmethod
    def _batches(prepared: list[tuple[Message, EmailContent]]) -> list[list[tuple[Message, EmailContent]]]:
        """Messages with the same content, each address at most once per batch (merge data is keyed by address)."""
        by_content: dict[EmailContent, list[list[tuple[Message, EmailContent]]]] = defaultdict(list)
        for item in prepared:
            address = str(item[0].to).lower()
            batches = by_content[item[1]]
            for batch in batches:
                if len(batch) < MAX_BATCH_RECIPIENTS and all(str(m.to).lower() != address for m, _c in batch):
                    batch.append(item)
                    break
            else:
                batches.append([item])
        return [batch for batches in by_content.values() for batch in batches]

    def _send_one(self, connection, message: Message, content: EmailContent) -> SendResult:
        link = unsubscribe_url(contact_id=message.contact_id, channel=message.channel, send_id=message.send_id)
        message_id = make_msgid(domain=DNS_NAME)
        email = AnymailMessage(
            subject=content.subject,
            body=fill_links(content.text.replace(UNSUBSCRIBE_URL, link), send_id=message.send_id),
            from_email=content.from_email,
            to=[message.to],
            headers={
                "List-Unsubscribe": list_unsubscribe(message),
                "List-Unsubscribe-Post": ONE_CLICK,
                "Message-ID": message_id,
            },
            connection=connection,
            metadata={SEND_ID_METADATA: str(message.send_id)},
        )
        html = fill_links(content.html.replace(UNSUBSCRIBE_URL, link), send_id=message.send_id)
        if OPEN_PIXEL_URL in html:
            html = html.replace(OPEN_PIXEL_URL, open_url(send_id=message.send_id))
        email.attach_alternative(html, "text/html")
        try:
            email.send()
        except AnymailRecipientsRefused as exc:
            return self._from_status(email, [message], fallback=exc)[0]
        except Exception as exc:
            error, transient = failure(exc)
            return SendResult(send_id=message.send_id, ok=False, error=error, transient=transient)
        if email.anymail_status.recipients:
            return self._from_status(email, [message])[0]
        # Not an anymail backend (SMTP, locmem): our own Message-ID identifies the message.
        return SendResult(send_id=message.send_id, ok=True, provider_message_id=message_id)

    def _send_merged(self, connection, group: list[tuple[Message, EmailContent]], merge_field: str) -> list[SendResult]:
        content = group[0][1]
        field = merge_field.format(MERGE_KEY)
        messages = [m for m, _c in group]
        links = link_placeholders(content.html + content.text)
        merged = lambda index: merge_field.format(f"loop_link_{index}")  # noqa: E731
        email = AnymailMessage(
            subject=content.subject,
            body=fill_links(content.text.replace(UNSUBSCRIBE_URL, field), send_id=0, using=merged),
            from_email=content.from_email,
            to=[m.to for m in messages],
            headers={"List-Unsubscribe-Post": ONE_CLICK},
            connection=connection,
        )
        pixel = OPEN_PIXEL_URL in content.html
        html = content.html.replace(UNSUBSCRIBE_URL, field).replace(OPEN_PIXEL_URL, merge_field.format(OPEN_MERGE_KEY))
        html = fill_links(html, send_id=0, using=merged)
        email.attach_alternative(html, "text/html")
        email.merge_data = {
            m.to: {
                MERGE_KEY: unsubscribe_url(contact_id=m.contact_id, channel=m.channel, send_id=m.send_id),
                **({OPEN_MERGE_KEY: open_url(send_id=m.send_id)} if pixel else {}),
                **{f"loop_link_{index}": click_url(send_id=m.send_id, index=index) for index in links},
            }
            for m in messages
        }
        email.merge_global_data = {}
        email.merge_headers = {m.to: {"List-Unsubscribe": list_unsubscribe(m)} for m in messages}
        email.merge_metadata = {m.to: {SEND_ID_METADATA: str(m.send_id)} for m in messages}
        try:
            email.send()
        except AnymailRecipientsRefused as exc:
            return self._from_status(email, messages, fallback=exc)
        except Exception as exc:
            error, transient = failure(exc)
            return [SendResult(send_id=m.send_id, ok=False, error=error, transient=transient) for m in messages]
        return self._from_status(email, messages)

    @staticmethod
    def _from_status(email, messages: list[Message], fallback: Exception | None = None) -> list[SendResult]:
        """One result per message from anymail's per-recipient status (message id and status)."""
        statuses = {address.lower(): status for address, status in email.anymail_status.recipients.items()}
        results = []
        for message in messages:
            status = statuses.get(str(message.to).lower())
            if status is None:
                error = f"{type(fallback).__name__}: {fallback}" if fallback else "no status for this recipient"
                results.append(SendResult(send_id=message.send_id, ok=False, error=error, transient=fallback is None))
            elif status.status in ACCEPTED:
                results.append(
                    SendResult(send_id=message.send_id, ok=True, provider_message_id=str(status.message_id or ""))
                )
            else:
                results.append(
                    SendResult(
                        send_id=message.send_id,
                        ok=False,
                        error=f"the email provider answered {status.status!r} for this recipient",
                        transient=status.status not in REFUSED,
                    )
                )
        return results
