"""Which Korean text message a content becomes: SMS, LMS or MMS, by its length in EUC-KR bytes.

Korean carriers measure text messages in EUC-KR (KS X 1001 / CP949) bytes: an ASCII character is one byte, any
other character (Hangul, Hanja, full-width symbols) two. The rule, shared by the send path (the SMS backends pick
the type with it), the admin's validation and the counter the marketer sees while typing
(``static/campaigns/sms_counter.js`` implements the same three lines):

- **SMS**: at most 90 bytes, no subject, no image;
- **LMS**: up to 2,000 bytes, with an optional subject (40 bytes);
- **MMS**: an LMS with an image.

Text above 2,000 bytes cannot be sent; characters outside CP949 (emoji, most symbols beyond KS X 1001) are
replaced by "?" on handsets, so the admin refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext as _

SMS_MAX_BYTES = 90
LMS_MAX_BYTES = 2000
SUBJECT_MAX_BYTES = 40

SMS, LMS, MMS = "SMS", "LMS", "MMS"


def euc_kr_length(text: str) -> int:
    """Bytes of ``text`` as Korean carriers count them: 1 per ASCII character, 2 for any other."""
    return sum(1 if ord(char) < 0x80 else 2 for char in text or "")


def message_type(text: str, *, subject: str = "", has_image: bool = False) -> str:
    """``"SMS"``, ``"LMS"`` or ``"MMS"`` for this content (whether or not it is too long: see ``length_errors``)."""
    if has_image:
        return MMS
    if subject.strip() or euc_kr_length(text) > SMS_MAX_BYTES:
        return LMS
    return SMS


def unsendable_characters(text: str) -> list[str]:
    """Characters a handset would show as "?" (not in CP949), each once, in order."""
    seen: list[str] = []
    for char in text or "":
        if ord(char) < 0x80 or char in seen:
            continue
        try:
            char.encode("cp949")
        except UnicodeEncodeError:
            seen.append(char)
    return seen


@dataclass(frozen=True, slots=True)
class LengthReport:
    kind: str
    text_bytes: int
    subject_bytes: int
    errors: tuple[str, ...]


def length_report(text: str, *, subject: str = "", has_image: bool = False) -> LengthReport:
    """The type, byte counts and what makes the content unsendable (empty when it can be sent)."""
    errors = []
    text_bytes, subject_bytes = euc_kr_length(text), euc_kr_length(subject)
    if text_bytes > LMS_MAX_BYTES:
        errors.append(
            _("The text is %(bytes)s bytes; a text message holds at most %(max)s bytes (Korean characters count 2).")
            % {"bytes": f"{text_bytes:,}", "max": f"{LMS_MAX_BYTES:,}"}
        )
    if subject_bytes > SUBJECT_MAX_BYTES:
        errors.append(
            _("The LMS subject is %(bytes)s bytes; at most %(max)s.")
            % {"bytes": subject_bytes, "max": SUBJECT_MAX_BYTES}
        )
    bad = unsendable_characters(text) + [c for c in unsendable_characters(subject) if c not in text]
    if bad:
        errors.append(_("Text messages cannot show these characters: %(chars)s") % {"chars": " ".join(bad)})
    return LengthReport(
        message_type(text, subject=subject, has_image=has_image), text_bytes, subject_bytes, tuple(errors)
    )
