"""Slack team notifications through incoming webhooks (``slack``), with Block Kit payloads.

One ``POST`` of ``{"text": …, "blocks": [...]}`` per message to the destination's webhook URL. Slack answers
``200 ok``; ``429`` (with ``Retry-After``) and ``5xx`` are transient; any other status is permanent, recorded with
Slack's error string (``invalid_payload``, ``no_service``, ``channel_not_found``, ``channel_is_archived``,
``action_prohibited``…). The webhook URL is a secret: it is never logged nor put in an error.

``blocks(...)`` builds the Block Kit layout the product's notifications use (header, section, fields, context,
button); ``campaigns.services.notifications.slack_notify`` queues a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import requests
from django.conf import settings

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, ChannelBackend, Message, SendResult
from campaigns.channels.http import describe_exception, is_transient_status, retry_after, session
from campaigns.channels.team import destinations_for, missing_setting, unknown_destination

#: Slack's limits: header text 150 characters, section text 3,000, a message 50 blocks, a button label 75.
HEADER_MAX, SECTION_MAX, BLOCKS_MAX, BUTTON_MAX, FIELD_MAX = 150, 3000, 50, 75, 2000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def blocks(
    *,
    header: str = "",
    text: str = "",
    fields: Sequence[tuple[str, str]] = (),
    context: str = "",
    button: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A Block Kit layout: a header, a section of mrkdwn text (with ``fields`` as label/value pairs), a context line
    and a link button ``(label, url)``. Texts are cut to Slack's limits."""
    result: list[dict[str, Any]] = []
    if header:
        result.append({"type": "header", "text": {"type": "plain_text", "text": _cut(header, HEADER_MAX)}})
    if text or fields:
        section: dict[str, Any] = {"type": "section"}
        if text:
            section["text"] = {"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}
        if fields:
            section["fields"] = [
                {"type": "mrkdwn", "text": _cut(f"*{label}*\n{value}", FIELD_MAX)} for label, value in fields[:10]
            ]
        result.append(section)
    if button is not None:
        label, url = button
        result.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": _cut(label, BUTTON_MAX)}, "url": url}
                ],
            }
        )
    if context:
        result.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, SECTION_MAX)}]})
    return result[:BLOCKS_MAX]


def payload(message: Message) -> dict[str, Any]:
    """The webhook body: ``text`` (the notification's fallback) and the Block Kit blocks, or blocks made from the
    message's title, text and link."""
    layout = message.extra.get("blocks")
    if not layout:
        button = (str(message.extra.get("button_label") or "Open"), message.link_url) if message.link_url else None
        layout = blocks(header=message.subject, text=message.body, button=button)
    return {"text": message.body or message.subject, "blocks": layout, "unfurl_links": False}


@register_backend
class SlackWebhookBackend(ChannelBackend):
    name = "slack"
    capabilities = Capabilities(max_batch_size=50, idempotent=False, channels=frozenset({"slack"}))

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        destinations = destinations_for(messages, kind="slack")
        results = []
        with session(pool_size=2) as http:
            for message in messages:
                destination = destinations.get(message.to) if isinstance(message.to, str) else None
                if destination is None:
                    results.append(unknown_destination(message))
                    continue
                url = destination.resolved_url()
                if not url:
                    results.append(missing_setting(message, "the webhook URL", destination.url_env))
                    continue
                results.append(self._post(http, url, message))
        return results

    @staticmethod
    def _post(http: requests.Session, url: str, message: Message) -> SendResult:
        try:
            response = http.post(url, json=payload(message), timeout=settings.LOOP_TEAM_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            return SendResult(
                send_id=message.send_id, ok=False, error=f"Slack: {describe_exception(exc)}", transient=True
            )
        answer = response.text.strip()[:100]
        if response.status_code == 200:
            return SendResult(send_id=message.send_id, ok=True)
        error = f"Slack {response.status_code}: {answer or response.reason}"
        if is_transient_status(response.status_code):
            return SendResult(
                send_id=message.send_id, ok=False, error=error, transient=True, retry_after=retry_after(response)
            )
        return SendResult(send_id=message.send_id, ok=False, error=error)
