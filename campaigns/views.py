"""Public pages of the campaigns app (no login): the signed unsubscribe page and the tracking links.

``/u/<token>/``: GET shows a confirmation page; POST unsubscribes. The POST needs no CSRF token: the signed token
is the only authority (it names one contact and channel and cannot be forged), and RFC 8058 one-click requests
(``List-Unsubscribe=One-Click`` POSTed by the mailbox provider) carry no cookie or form token. Repeating it is
harmless. A forged or altered token is answered 400, an erased contact 404. Requests are rate-limited per link
(``SIGNED_LINK_RATE_LIMIT``) and bad tokens per address (``BAD_LINK_RATE_LIMIT``): 429.

``/t/c/<token>``: a tracked link (``campaigns.tracking``): records the click and redirects (302) to the URL the
message had at that place; a forged token or a link index the send does not have is answered 400, so nothing but the
message's own links can be reached. ``/t/o/<token>.gif``: the open pixel, a 1×1 GIF that is never cached.
"""

from __future__ import annotations

import structlog
from django.conf import settings
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import render
from django.utils import translation
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from campaigns.channels import channel as channel_kind
from campaigns.models import Send
from campaigns.services.suppressions import contact_unsubscribe
from campaigns.services.tracking import hit_record
from campaigns.tracking import LINKS_KEY, read_click_token, read_open_token
from campaigns.unsubscribe import read_token
from config import ratelimit
from crm.models import Contact

log = structlog.get_logger(__name__)


def _mask(email: str) -> str:
    """``minjun@example.com`` → ``m*****@example.com``: enough for the contact to recognise, nothing for others."""
    local, sep, domain = email.partition("@")
    if not sep:
        return ""
    return f"{local[:1]}{'*' * max(len(local) - 1, 1)}@{domain}"


@never_cache
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    language = request.GET.get("lang")
    if language in ("ko", "en"):
        translation.activate(language)
        request.LANGUAGE_CODE = language
    if ratelimit.link_refused(request, name="unsubscribe"):
        return ratelimit.too_many_requests(settings.LOOP_BAD_LINK_RATE_LIMIT)
    try:
        wanted = read_token(token)
        kind = channel_kind(wanted.channel)
    except (signing.BadSignature, ValueError):
        log.warning("unsubscribe_bad_token")
        ratelimit.link_bad(request, name="unsubscribe")
        return render(
            request, "public/unsubscribe_invalid.html", {"sender_name": settings.LOOP_SENDER_NAME}, status=400
        )
    if ratelimit.link_over_limit(request, name="unsubscribe", token=token):
        return ratelimit.too_many_requests(settings.LOOP_SIGNED_LINK_RATE_LIMIT)
    contact = Contact.objects.filter(pk=wanted.contact_id, erased_at=None).only("email").first()
    if contact is None:
        raise Http404
    context = {
        "sender_name": settings.LOOP_SENDER_NAME,
        "channel": kind.label,
        "address": _mask(contact.email) if kind.address == "email" else "",
    }
    if request.method == "GET":
        return render(request, "public/unsubscribe_confirm.html", context)
    one_click = request.POST.get("List-Unsubscribe") == "One-Click"  # RFC 8058 body: List-Unsubscribe=One-Click
    source = "unsubscribe:one-click" if one_click else "unsubscribe:link"
    if wanted.send_id is not None:
        source = f"{source}:send-{wanted.send_id}"
    if not contact_unsubscribe(
        contact_id=wanted.contact_id, channel=wanted.channel, send_id=wanted.send_id, source=source
    ):
        raise Http404
    log.info("unsubscribed", contact_id=wanted.contact_id, channel=wanted.channel, one_click=one_click)
    return render(request, "public/unsubscribe_done.html", context)


#: The smallest transparent GIF (1×1, 43 bytes).
PIXEL_GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
SEND_FIELDS = ("id", "content", "sent_at", "delivered_at")


@never_cache
@require_http_methods(["GET", "HEAD"])
def track_click(request: HttpRequest, token: str) -> HttpResponse:
    try:
        send_id, index = read_click_token(token)
    except signing.BadSignature:
        log.warning("tracking_bad_click_token")
        return HttpResponseBadRequest("Invalid link.", content_type="text/plain")
    send = Send.objects.filter(pk=send_id).values(*SEND_FIELDS).first()
    if send is None:
        raise Http404
    links = (send["content"] or {}).get(LINKS_KEY)
    if not isinstance(links, list) or not 0 <= index < len(links):
        log.warning("tracking_unknown_link", send_id=send_id, index=index)
        return HttpResponseBadRequest("Invalid link.", content_type="text/plain")
    url = links[index]
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return HttpResponseBadRequest("Invalid link.", content_type="text/plain")
    hit_record(kind="click", send=send, request=request, url=url)
    return HttpResponseRedirect(url)


@never_cache
@require_http_methods(["GET", "HEAD"])
def track_open(request: HttpRequest, token: str) -> HttpResponse:
    try:
        send_id = read_open_token(token)
    except signing.BadSignature:
        log.warning("tracking_bad_open_token")
        return HttpResponseBadRequest("Invalid link.", content_type="text/plain")
    send = Send.objects.filter(pk=send_id).values(*SEND_FIELDS[:1], *SEND_FIELDS[2:]).first()
    if send is not None:
        hit_record(kind="open", send=send, request=request)
    return HttpResponse(PIXEL_GIF, content_type="image/gif")
