"""Own click and open tracking (docs/analytics.md).

**Links.** When a send is rendered, every ``http(s)`` link in its content (email HTML ``href``\\ s, URLs in text
bodies, the push/KakaoTalk ``link_url``) is replaced by ``PUBLIC_URL/t/c/<token>``. The send keeps the original URLs,
in order, under ``content["tracked_links"]``; the token is ``django.core.signing`` over ``"<send id>.<link index>"``
with its own salt. The redirect looks the destination up in the send, so only a URL that was in that message can be
reached (no open redirect) and a forged or altered token is refused (400). The unsubscribe placeholder and links
that are not ``http(s)`` (``mailto:``, ``tel:``, anchors) are left alone.

**Opens.** Email gets a 1×1 pixel ``PUBLIC_URL/t/o/<token>.gif`` (token: the send id, its own salt).

**Bots.** A request is judged automatic (``BotReason``) when it is a ``HEAD`` request (link checkers), its user agent
is a known scanner/bot (or empty), a click comes within ``TRACKING_BOT_SECONDS`` of the send's delivery (security
gateways open every link as the mail arrives), or an open is Apple Mail Privacy Protection's prefetch (Apple's proxy
fetches with the bare user agent ``Mozilla/5.0`` from Apple's network 17.0.0.0/8). Automatic hits are recorded but
set neither ``opened_at`` nor ``clicked_at`` unless ``TRACKING_COUNT_BOTS`` is on.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.crypto import salted_hmac

from campaigns.advertising import UNSUBSCRIBE_URL
from campaigns.unsubscribe import public_url
from config import ratelimit

CLICK_SALT = "loop.campaigns.tracking.click"
OPEN_SALT = "loop.campaigns.tracking.open"
IP_SALT = "loop.campaigns.tracking.ip"
#: Key of ``Send.content`` holding the original URLs of the tracked links, in the order of their tokens' indexes.
LINKS_KEY = "tracked_links"
#: In the rendered email in place of the send's open pixel URL (filled in per recipient by the email backend).
OPEN_PIXEL_URL = "%%loop_open_url%%"

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&*+,;=%]+")
_TRAILING = ".,;:!?"
LINK_PLACEHOLDER = "%%loop_link_{}%%"
_PLACEHOLDER = re.compile(r"%%loop_link_(\d+)%%")
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)

#: User agents of security scanners, link checkers, previewers and HTTP libraries (case-insensitive substrings).
BOT_USER_AGENTS = re.compile(
    r"bot\b|bot/|crawler|spider|preview|scanner|headless|python-requests|python-urllib|aiohttp|httpx|curl/|wget/|"
    r"go-http-client|java/|okhttp|libwww|barracuda|proofpoint|mimecast|messagelabs|symantec|zscaler|forcepoint|"
    r"trendmicro|sophos|fireeye|safelinks|urldefense|cisco|ironport|microsoft office|ms-office|facebookexternalhit|"
    r"slackbot|whatsapp|kakaotalk-scrap|yeti|daum",
    re.IGNORECASE,
)
#: Apple Mail Privacy Protection: Apple's proxy requests with this bare user agent, from Apple's 17.0.0.0/8.
APPLE_PROXY_USER_AGENT = "Mozilla/5.0"
APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)


# --- Tokens --------------------------------------------------------------------------------------------------------


def click_token(*, send_id: int, index: int) -> str:
    return signing.Signer(salt=CLICK_SALT).sign(f"{send_id}.{index}")


def read_click_token(token: str) -> tuple[int, int]:
    """``(send id, link index)``; ``signing.BadSignature`` for a forged, altered or malformed token."""
    value = signing.Signer(salt=CLICK_SALT).unsign(token)
    send_id, _dot, index = value.partition(".")
    if not (send_id.isdigit() and index.isdigit()):
        raise signing.BadSignature("click token with malformed values")
    return int(send_id), int(index)


def open_token(*, send_id: int) -> str:
    return signing.Signer(salt=OPEN_SALT).sign(str(send_id))


def read_open_token(token: str) -> int:
    value = signing.Signer(salt=OPEN_SALT).unsign(token)
    if not value.isdigit():
        raise signing.BadSignature("open token with malformed values")
    return int(value)


def click_url(*, send_id: int, index: int) -> str:
    return public_url(reverse("track-click", kwargs={"token": click_token(send_id=send_id, index=index)}))


def open_url(*, send_id: int) -> str:
    return public_url(reverse("track-open", kwargs={"token": open_token(send_id=send_id)}))


# --- Rewriting a send's content ------------------------------------------------------------------------------------


def trackable(url: str) -> bool:
    """An ``http(s)`` link that is neither the unsubscribe link nor already one of ours."""
    lowered = url.strip().lower()
    if not lowered.startswith(("http://", "https://")) or UNSUBSCRIBE_URL in url:
        return False
    own = settings.LOOP_PUBLIC_URL.lower()
    return not (own and lowered.startswith(f"{own}/"))  # our own pages (unsubscribe, preferences, surveys, /t/)


class _Links:
    """The URLs of one message, each given an index once (the same URL twice shares its index)."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self._index: dict[str, int] = {}

    def tracked(self, url: str) -> str:
        if url not in self._index:
            self._index[url] = len(self.urls)
            self.urls.append(url)
        return LINK_PLACEHOLDER.format(self._index[url])


def _rewrite_html(source: str, links: _Links) -> str:
    def replace(match: re.Match) -> str:
        url = html.unescape(match.group(3)).strip()
        if not trackable(url):
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{links.tracked(url)}{match.group(2)}"

    return _HREF.sub(replace, source)


def _rewrite_text(source: str, links: _Links) -> str:
    def replace(match: re.Match) -> str:
        url = match.group(0)
        stripped = url.rstrip(_TRAILING)
        if not trackable(stripped):
            return url
        return links.tracked(stripped) + url[len(stripped) :]

    return _TEXT_URL.sub(replace, source)


REWRITERS: dict[str, Callable[[str, _Links], str]] = {"html": _rewrite_html, "body": _rewrite_text}


def track_content(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` with its links replaced by placeholders (``%%loop_link_0%%``…) and the originals under
    ``LINKS_KEY`` (unchanged when click tracking is off or there is no link). Identical content gives identical
    placeholders, so the email backend can still send one batch with the per-recipient URLs as merge data."""
    if not settings.LOOP_TRACK_CLICKS or not settings.LOOP_PUBLIC_URL:
        return content
    links = _Links()
    result = dict(content)
    for name, rewrite in REWRITERS.items():
        if result.get(name):
            result[name] = rewrite(result[name], links)
    link = (result.get("link_url") or "").strip()
    if link and trackable(link):
        result["link_url"] = links.tracked(link)
    if links.urls:
        result[LINKS_KEY] = links.urls
    return result


def link_placeholders(text: str) -> list[int]:
    """The link indexes whose placeholders are in ``text``, in order, once each."""
    return list(dict.fromkeys(int(i) for i in _PLACEHOLDER.findall(text)))


def fill_links(text: str, *, send_id: int, using: Callable[[int], str] | None = None) -> str:
    """``text`` with the link placeholders replaced by ``send_id``'s tracked URLs (or by ``using(index)``)."""
    if "%%loop_link_" not in text:
        return text
    make = using or (lambda index: click_url(send_id=send_id, index=index))
    return _PLACEHOLDER.sub(lambda m: make(int(m.group(1))), text)


def add_open_pixel(document: str, *, send_id: int) -> str:
    """The email's HTML with the open pixel (``OPEN_PIXEL_URL``) at the end of its body (none in previews, whose
    ``send_id`` is 0)."""
    if not settings.LOOP_TRACK_OPENS or not send_id or not settings.LOOP_PUBLIC_URL:
        return document
    pixel = (
        f'<img src="{OPEN_PIXEL_URL}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;" />'
    )
    if _BODY_CLOSE.search(document):
        return _BODY_CLOSE.sub(lambda m: pixel + m.group(0), document, count=1)
    return document + pixel


# --- Requests ------------------------------------------------------------------------------------------------------


def client_ip(request) -> str:
    """``REMOTE_ADDR``, or the client behind a trusted proxy (``TRUSTED_PROXIES``, as the audit log sees it)."""
    from crm.audit import client_ip as audited_client_ip

    return audited_client_ip(request) or ""


def hash_ip(ip: str) -> str:
    return salted_hmac(IP_SALT, ip, algorithm="sha256").hexdigest() if ip else ""


def over_rate_limit(ip_hash: str) -> bool:
    """More than ``TRACKING_RATE_LIMIT_PER_MINUTE`` hits from this address in the current minute."""
    if not ip_hash:
        return False
    return ratelimit.hit("tracking", ip_hash, rate=f"{settings.LOOP_TRACKING_RATE_LIMIT}/min")


def _apple_network(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in APPLE_NETWORKS)


def bot_reason(*, method: str, user_agent: str, ip: str, kind: str, at: datetime, delivered_at: datetime | None) -> str:
    """Why a hit is automatic (a ``BotReason`` value), or ``""`` for a person's. ``kind``: ``click`` or ``open``."""
    from campaigns.models import BotReason  # campaigns.models imports the channels, which import this module

    if method == "HEAD":
        return BotReason.HEAD
    agent = user_agent.strip()
    if kind == "open" and (agent == APPLE_PROXY_USER_AGENT or (_apple_network(ip) and "Mozilla" in agent)):
        return BotReason.APPLE_MPP
    if not agent or BOT_USER_AGENTS.search(agent):
        return BotReason.USER_AGENT
    if (
        kind == "click"
        and delivered_at is not None
        and at - delivered_at <= timedelta(seconds=settings.LOOP_TRACKING_BOT_SECONDS)
    ):
        return BotReason.TOO_FAST
    return ""
