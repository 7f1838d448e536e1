"""KakaoTalk through Solapi: AlimTalk (approved templates, informational) and FriendTalk (free text to the
channel's friends, advertising allowed, never 20:00–08:00), with buttons and an SMS/LMS fallback.

- **AlimTalk** (Solapi type ``ATA``): ``kakaoOptions`` with the channel's ``pfId``, the template's ``templateId``
  and ``variables`` (``{"#{고객명}": "홍길동"}``). The campaign's text must be the approved template's text
  (``template_mismatch``, checked when the marketer saves); the pipeline renders each variable per contact
  (``alimtalk_variables``). Refused for advertising campaigns.
- **FriendTalk** (``CTA``): the text as rendered (with the advertising form for advertising), ``adFlag`` for
  advertising, the variant's link as a web-link button. The KAKAO channel's quiet hours (20:00–08:00) are enforced
  by the pipeline before anything reaches this backend.
- **Fallback**: when Kakao answers that the person cannot get it (no KakaoTalk, not a friend, blocked), the same
  text goes by SMS/LMS (``campaigns.services.fallback``) — right away when Solapi says so in its answer, or when
  the delivery receipt says so later — and the send records ``fallback_channel`` and ``fallback_reason``.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.translation import gettext as _

from campaigns.channels import register_backend
from campaigns.channels.base import Capabilities, ChannelBackend, Message, SendResult
from campaigns.channels.sms import solapi_deliver, solapi_recipient
from campaigns.channels.solapi import KAKAO_FALLBACK_CODES, SolapiClient
from campaigns.personalization import TOKEN, compile_template, render

ALIMTALK, FRIENDTALK = "alimtalk", "friendtalk"
BUTTON_TYPES = {"WL": ("url_mobile",), "AL": ("scheme_android", "scheme_ios")}
MAX_BUTTONS = 5
FRIENDTALK_LINK_BUTTON = "자세히 보기"


# --- Templates -----------------------------------------------------------------------------------------------------


def _segments(text: str) -> tuple[list[str], list[str]]:
    """The literal pieces and the variable names of a text with ``#{…}`` variables."""
    text = (text or "").replace("\r\n", "\n").strip()
    literals, names, last = [], [], 0
    for match in TOKEN.finditer(text):
        literals.append(text[last : match.start()])
        names.append(match["name"].strip())
        last = match.end()
    literals.append(text[last:])
    return literals, names


def template_variables(text: str) -> list[str]:
    return _segments(text)[1]


def template_mismatch(template_text: str, body: str) -> list[str]:
    """Why ``body`` is not the approved ``template_text`` (empty when it is). Fallbacks and formats on a
    variable (``#{고객명|고객}``) are ours and allowed; the variables and the text around them must be identical."""
    t_literals, t_names = _segments(template_text)
    b_literals, b_names = _segments(body)
    errors = []
    missing = [n for n in dict.fromkeys(t_names) if n not in b_names]
    unknown = [n for n in dict.fromkeys(b_names) if n not in t_names]
    if missing:
        errors.append(
            _("Variables of the approved template missing from the text: %(names)s")
            % {"names": ", ".join(f"#{{{n}}}" for n in missing)}
        )
    if unknown:
        errors.append(
            _("Variables not in the approved template: %(names)s") % {"names": ", ".join(f"#{{{n}}}" for n in unknown)}
        )
    if not errors and (t_names != b_names or t_literals != b_literals):
        errors.append(_("The text must be exactly the approved template's text (only the variables are filled in)."))
    return errors


def alimtalk_variables(body: str, data: dict[str, Any]) -> dict[str, str]:
    """``{"#{name}": value}`` for each variable of the (template-matching) ``body``, rendered for one contact."""
    values: dict[str, str] = {}
    for match in TOKEN.finditer(body or ""):
        key = "#{" + match["name"].strip() + "}"
        if key not in values:
            values[key] = render(compile_template(match.group(0)), data)
    return values


def button_errors(buttons: Any) -> list[str]:
    if not isinstance(buttons, list):
        return [_('Give the buttons as a JSON list, e.g. [{"type": "WL", "name": "…", "url_mobile": "https://…"}].')]
    errors = []
    if len(buttons) > MAX_BUTTONS:
        errors.append(_("At most %(count)d buttons.") % {"count": MAX_BUTTONS})
    for index, button in enumerate(buttons, 1):
        if not isinstance(button, dict) or button.get("type") not in BUTTON_TYPES:
            errors.append(_("Button %(n)d: type must be WL (web link) or AL (app link).") % {"n": index})
            continue
        if not str(button.get("name", "")).strip():
            errors.append(_("Button %(n)d: give it a name.") % {"n": index})
        for field in BUTTON_TYPES[button["type"]]:
            if not str(button.get(field, "")).strip():
                errors.append(_("Button %(n)d: %(field)s is required.") % {"n": index, "field": field})
        for field in ("url_mobile", "url_pc"):
            url = str(button.get(field, "")).strip()
            if url and not re.match(r"^https?://", url):
                errors.append(
                    _("Button %(n)d: %(field)s must start with http:// or https://.") % {"n": index, "field": field}
                )
    return errors


def solapi_buttons(buttons: list[dict[str, Any]]) -> list[dict[str, str]]:
    result = []
    for button in buttons:
        entry = {"buttonType": button["type"], "buttonName": button["name"]}
        if button["type"] == "WL":
            entry["linkMo"] = button["url_mobile"]
            if button.get("url_pc"):
                entry["linkPc"] = button["url_pc"]
        else:
            entry["linkAnd"] = button["scheme_android"]
            entry["linkIos"] = button["scheme_ios"]
        result.append(entry)
    return result


# --- The backend ---------------------------------------------------------------------------------------------------


def solapi_kakao_payload(message: Message, client: SolapiClient | None = None) -> dict[str, Any]:
    kakao = message.extra.get("kakao") or {}
    sender = message.extra.get("sender") or {}
    if sender.get("kind") != "kakao" or not sender.get("sender_key"):
        raise ValueError("no KakaoTalk sender profile (pfId)")
    options: dict[str, Any] = {"pfId": sender["sender_key"], "disableSms": True}
    if kakao.get("type") == ALIMTALK:
        if message.advertising:
            raise ValueError("AlimTalk cannot carry advertising")
        options["templateId"] = kakao["template_code"]
        options["variables"] = kakao.get("variables") or {}
        kind = "ATA"
    else:
        options["adFlag"] = bool(message.advertising)
        kind = "CTA"
    buttons = list(kakao.get("buttons") or [])
    if kind == "CTA" and message.link_url:
        buttons.append({"type": "WL", "name": FRIENDTALK_LINK_BUTTON, "url_mobile": message.link_url})
    if buttons:
        options["buttons"] = solapi_buttons(buttons)
    return {
        **solapi_recipient(str(message.to)),
        "text": message.body,
        "type": kind,
        "kakaoOptions": options,
        "customFields": {"sendId": str(message.send_id)},
    }


@register_backend
class SolapiKakaoBackend(ChannelBackend):
    """KakaoTalk through Solapi: ``CHANNEL_BACKENDS=kakao=solapi_kakao``."""

    name = "solapi_kakao"
    capabilities = Capabilities(max_batch_size=1000, idempotent=False, channels=frozenset({"kakao"}))

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        from campaigns.services.fallback import kakao_fallback

        results = solapi_deliver(messages, solapi_kakao_payload)
        by_id = {m.send_id: m for m in messages}
        unreachable = []
        for result in results:
            code = result.error.removeprefix("Solapi ").split(":", 1)[0] if result.error else ""
            if not result.ok and code in KAKAO_FALLBACK_CODES:
                unreachable.append((by_id[result.send_id], f"{code} {KAKAO_FALLBACK_CODES[code]}"))
        if not unreachable:
            return results
        fallback = kakao_fallback(items=unreachable)
        return [fallback.get(result.send_id, result) for result in results]
