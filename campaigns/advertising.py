"""The legally required form of advertising messages in Korea (정보통신망법 제50조), applied by the send pipeline.

- "(광고)" at the very start (the subject for email, the text otherwise), followed by the sender's name;
- the sender's name and contact (email footer);
- a free way to opt out at the end: an unsubscribe link for email (``UNSUBSCRIBE_URL`` is replaced by the email
  backend with the contact's signed one-click link), the free 080 number for SMS/LMS and KakaoTalk.

Informational messages are left unchanged. The form is applied after personalization, so a template cannot remove
or alter it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.html import escape

AD_MARK = "(광고)"
#: Replaced by the email backend with the contact's signed unsubscribe URL.
UNSUBSCRIBE_URL = "%%loop_unsubscribe_url%%"
#: Class of the paragraph the form appends to email HTML (the email layout moves it into its own footer).
AD_FOOTER_CLASS = "loop-ad-footer"


def apply_advertising_form(*, channel: str, content: dict[str, Any], sender_name: str = "") -> dict[str, Any]:
    """Return a copy of rendered ``content`` in the advertising form for ``channel``."""
    sender = sender_name or settings.LOOP_SENDER_NAME
    result = dict(content)
    body = result.get("body", "").strip()
    if channel == "email":
        subject = result.get("subject", "").strip()
        if not subject.startswith(AD_MARK):
            result["subject"] = f"{AD_MARK} {subject}".strip()
        contact = settings.LOOP_SENDER_CONTACT
        sender_line = f"{sender} {contact}".strip()
        footer = f"{sender_line}\n수신을 원하지 않으시면 수신거부: {UNSUBSCRIBE_URL}"
        result["body"] = f"{body}\n\n{footer}".strip()
        if result.get("html"):
            html_footer = (
                f'<p class="{AD_FOOTER_CLASS}">{escape(sender_line)}<br>'
                f'수신을 원하지 않으시면 <a href="{UNSUBSCRIBE_URL}">수신거부</a></p>'
            )
            html = result["html"]
            result["html"] = (
                html.replace("</body>", html_footer + "</body>") if "</body>" in html else html + html_footer
            )
        return result
    if channel in ("sms", "kakao"):
        opt_out = f"무료수신거부 {settings.LOOP_OPTOUT_PHONE}"
        result["body"] = f"{AD_MARK}{sender}\n{body}\n{opt_out}"
        return result
    # Push and other channels: the mark and sender in the title (or the text when there is no title).
    if result.get("subject"):
        result["subject"] = f"{AD_MARK} {result['subject']}"
    else:
        result["body"] = f"{AD_MARK} {body}"
    return result
