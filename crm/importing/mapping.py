"""Column mapping and value parsing for contact imports.

Headers are matched after normalisation (Unicode NFKC, case-folded, without spaces, ``_ - . / ( ) * :``), so
``Email Address``, ``email_address`` and ``이메일 주소`` all match. Recognised:

- our own field names (``external_id``, ``email``, ``phone``, ``name``, ``consent_email`` ...) and the headers of our
  own export, in English and in the workspace language;
- Korean headers (이름, 성, 이메일, 휴대폰/전화번호, 수신동의/마케팅 수신 동의, 생년월일, 성별, 태그, 회원ID ...);
- Shopify's customer export (Customer ID, First Name, Last Name, Email, Phone, Accepts Email Marketing, Accepts SMS
  Marketing, Accepts Marketing, Tags) and Mailchimp's audience export (Email Address, First Name, Last Name, Phone
  Number, Birthday, TAGS, UNSUB_TIME).

Every other column becomes a contact attribute (key: the header in snake_case, Hangul kept) with a type inferred
from all of its values in the file: number, boolean, date, datetime, else text. Nothing is dropped.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.emails import email_domain_lowercased
from crm.models import ConsentPurpose
from crm.phones import DEFAULT_REGION, InvalidPhoneNumber, normalize_phone

# --- Fields ------------------------------------------------------------------------------------------------------
EXTERNAL_ID = "external_id"
EMAIL = "email"
PHONE = "phone"
NAME = "name"
FIRST_NAME = "first_name"
LAST_NAME = "last_name"
LOCALE = "locale"
TIME_ZONE = "time_zone"
BIRTH_DATE = "birth_date"
GENDER = "gender"
TAGS = "tags"
CONSENT = "consent"  # a general marketing consent: advertising, email and SMS
UNSUBSCRIBED_AT = "unsubscribed_at"  # Mailchimp's UNSUB_TIME: email consent withdrawn
IGNORE = "ignore"  # our own error column in a re-imported error CSV
ATTRIBUTE = "attribute"
CONSENT_PREFIX = "consent_"
CONSENT_FIELDS = {f"{CONSENT_PREFIX}{p}": p for p in ConsentPurpose.values}
#: Purposes set by a general "marketing consent" column (수신동의, 마케팅 수신 동의, Accepts Marketing).
GENERAL_CONSENT_PURPOSES = (ConsentPurpose.ADS.value, ConsentPurpose.EMAIL.value, ConsentPurpose.SMS.value)
#: Contact model fields an import writes.
PROFILE_FIELDS = (EMAIL, PHONE, NAME, LOCALE, TIME_ZONE)

# Attribute types.
NUMBER = "number"
BOOLEAN = "boolean"
DATE = "date"
DATETIME = "datetime"
TEXT = "text"
ATTRIBUTE_TYPES = (NUMBER, BOOLEAN, DATE, DATETIME, TEXT)

#: Labels of our fields (the export's headers). Both languages' forms are recognised when importing.
FIELD_LABELS = {
    EXTERNAL_ID: gettext_lazy("Member ID"),
    NAME: gettext_lazy("Name"),
    EMAIL: gettext_lazy("Email"),
    PHONE: gettext_lazy("Phone"),
    FIRST_NAME: gettext_lazy("First name"),
    LAST_NAME: gettext_lazy("Last name"),
    LOCALE: gettext_lazy("Language"),
    TIME_ZONE: gettext_lazy("Time zone"),
    BIRTH_DATE: gettext_lazy("Date of birth"),
    GENDER: gettext_lazy("Gender"),
    TAGS: gettext_lazy("Tags"),
    CONSENT: gettext_lazy("Marketing consent"),
    UNSUBSCRIBED_AT: gettext_lazy("Unsubscribed at"),
    IGNORE: gettext_lazy("Import error"),
    f"{CONSENT_PREFIX}email": gettext_lazy("Email consent"),
    f"{CONSENT_PREFIX}sms": gettext_lazy("SMS consent"),
    f"{CONSENT_PREFIX}push": gettext_lazy("Push consent"),
    f"{CONSENT_PREFIX}kakao": gettext_lazy("KakaoTalk consent"),
    f"{CONSENT_PREFIX}ads": gettext_lazy("Advertising consent"),
    f"{CONSENT_PREFIX}ads_night": gettext_lazy("Night-time advertising consent"),
}

#: Columns of our export that the CRM computes (order history, creation time): ignored when imported again.
READ_ONLY_LABELS = {
    "created_at": gettext_lazy("Created in CRM"),
    "order_count": gettext_lazy("Orders (CRM)"),
    "total_revenue": gettext_lazy("Revenue (CRM)"),
    "last_order_at": gettext_lazy("Last order (CRM)"),
}

ALIASES: dict[str, tuple[str, ...]] = {
    EXTERNAL_ID: (
        "external_id", "externalid", "id", "user_id", "userid", "member_id", "memberid", "customer_id",
        "customerid", "회원ID", "회원 아이디", "아이디", "고객ID", "고객 아이디", "고객번호", "회원번호", "회원코드",
        "고객코드", "ID(아이디)",
    ),
    EMAIL: (
        "email", "e-mail", "email address", "emailaddress", "mail", "이메일", "이메일 주소", "메일", "메일주소",
        "전자우편", "전자메일",
    ),
    PHONE: (
        "phone", "phone number", "phonenumber", "mobile", "mobile phone", "mobile number", "cell", "cellphone",
        "tel", "telephone", "휴대폰", "휴대폰번호", "휴대폰 번호", "휴대전화", "휴대전화번호", "핸드폰",
        "핸드폰번호", "전화번호", "전화", "연락처", "휴대폰 연락처",
    ),
    NAME: ("name", "full name", "fullname", "성명", "고객명", "회원명", "성함", "이름(성명)", "고객 이름", "회원 이름"),
    FIRST_NAME: ("first_name", "first name", "firstname", "given name", "givenname", "fname"),
    LAST_NAME: ("last_name", "last name", "lastname", "surname", "family name", "familyname", "lname", "성"),
    LOCALE: ("locale", "language", "lang", "언어"),
    TIME_ZONE: ("time_zone", "timezone", "tz", "시간대", "타임존"),
    BIRTH_DATE: ("birth_date", "birthdate", "birthday", "date of birth", "dob", "생년월일", "생일"),
    GENDER: ("gender", "sex", "성별"),
    TAGS: ("tags", "tag", "태그"),
    CONSENT: (
        "consent", "marketing", "marketing consent", "accepts marketing", "accepts_marketing", "수신동의",
        "수신 동의", "수신여부", "마케팅 수신 동의", "마케팅수신동의", "마케팅 동의", "마케팅 정보 수신 동의",
        "마케팅 수신 여부", "광고성 정보 수신 동의", "광고성정보수신동의", "광고 수신 동의", "광고수신동의",
    ),
    UNSUBSCRIBED_AT: ("unsub_time", "unsubscribed_at", "unsubscribe time", "수신거부일", "수신 거부 일시"),
    IGNORE: ("import_error", "import error", "가져오기 오류", "오류", "error", "errors", "오류 내용"),
    f"{CONSENT_PREFIX}email": (
        "consent_email", "email consent", "email_consent", "accepts email marketing", "email marketing",
        "이메일 수신동의", "이메일 수신 동의", "이메일 수신여부", "이메일수신", "메일 수신동의", "메일수신여부",
        "이메일 마케팅 수신 동의",
    ),
    f"{CONSENT_PREFIX}sms": (
        "consent_sms", "sms consent", "sms_consent", "accepts sms marketing", "sms marketing", "sms 수신동의",
        "sms 수신 동의", "sms 수신여부", "sms수신", "문자 수신동의", "문자 수신 동의", "문자수신여부", "문자수신",
        "sms/lms 수신동의",
    ),
    f"{CONSENT_PREFIX}push": (
        "consent_push", "push consent", "push_consent", "푸시 수신동의", "푸시 수신 동의", "앱 푸시 수신동의",
        "앱푸시수신동의", "푸시알림 동의", "푸시 알림 수신 동의",
    ),
    f"{CONSENT_PREFIX}kakao": (
        "consent_kakao", "kakao consent", "kakaotalk consent", "카카오톡 수신동의", "카카오톡 수신 동의",
        "카카오 수신동의", "친구톡 수신동의",
    ),
    f"{CONSENT_PREFIX}ads": ("consent_ads", "ads consent", "advertising consent", "ads_consent"),
    f"{CONSENT_PREFIX}ads_night": (
        "consent_ads_night", "night ads consent", "ads_night_consent", "야간 광고 수신 동의", "야간광고수신동의",
        "야간 수신 동의", "야간 광고성 정보 수신 동의",
    ),
}  # fmt: skip

_SEPARATORS = re.compile(r"[\s_\-.·/()\[\]*:]+")
_BRACKETED = re.compile(r"\(.*?\)|\[.*?\]|\*")


def normalize_header(header: str) -> str:
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", header).casefold())


@lru_cache(maxsize=8)
def _alias_table(language: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for field, aliases in ALIASES.items():
        for alias in aliases:
            table.setdefault(normalize_header(alias), field)
    for lang in dict.fromkeys((language, "en", "ko")):
        with translation.override(lang):
            for field, label in FIELD_LABELS.items():
                table.setdefault(normalize_header(str(label)), field)
            for label in READ_ONLY_LABELS.values():
                table.setdefault(normalize_header(str(label)), IGNORE)
    return table


def field_for_header(header: str) -> str | None:
    table = _alias_table(translation.get_language() or "en")
    found = table.get(normalize_header(header))
    if found is None:
        stripped = _BRACKETED.sub("", header)
        if stripped != header and stripped.strip():
            found = table.get(normalize_header(stripped))
    return found


_KEY_JUNK = re.compile(r"[^\w]+")


def attribute_key(header: str, position: int) -> str:
    """``Total Spent`` → ``total_spent``; ``포인트 잔액`` → ``포인트_잔액``; an empty header → ``column_3``."""
    text = unicodedata.normalize("NFKC", header).strip()
    text = "".join(ch.lower() if ch.isascii() else ch for ch in text)
    key = _KEY_JUNK.sub("_", text).strip("_")
    return key[:100] or f"column_{position}"


@dataclass(slots=True)
class Column:
    index: int
    header: str
    field: str
    key: str = ""  # attribute key, for ATTRIBUTE columns
    type: str = ""  # inferred attribute type, for ATTRIBUTE columns

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "header": self.header, "field": self.field, "key": self.key, "type": self.type}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Column:
        return cls(**data)

    @property
    def label(self) -> str:
        return self.header or f"#{self.index + 1}"


def map_columns(headers: list[str]) -> list[Column]:
    """Decide what each column is. A field claimed twice keeps its first column; the others become attributes.

    ``이름`` is the full name, unless the file also has a family-name column (``성``, ``Last Name``): then it is the
    given name."""
    fields = [field_for_header(h) if h.strip() else None for h in headers]
    given = FIRST_NAME if LAST_NAME in fields else NAME
    fields = [given if normalize_header(h) == "이름" else f for f, h in zip(fields, headers, strict=True)]
    columns: list[Column] = []
    claimed: set[str] = set()
    keys: set[str] = set()
    for index, (header, field) in enumerate(zip(headers, fields, strict=True)):
        if field is not None and field != IGNORE and field in claimed:
            field = None
        if field is None:
            key = attribute_key(header, index + 1)
            base, n = key, 2
            while key in keys:
                key, n = f"{base}_{n}", n + 1
            keys.add(key)
            columns.append(Column(index, header, ATTRIBUTE, key=key, type=TEXT))
        else:
            claimed.add(field)
            if field in (BIRTH_DATE, GENDER):
                keys.add(field)
            columns.append(Column(index, header, field))
    return columns


# --- Value parsers: each returns the normalised value or raises ValueError with a message for the marketer ---------


class CellError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def as_text(value: Any) -> str:
    if type(value) is str:  # the common case (every CSV cell)
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


_KR = phonenumbers.PhoneMetadata.metadata_for_region(DEFAULT_REGION)
_KR_GENERAL = re.compile(_KR.general_desc.national_number_pattern)
_KR_MOBILE = re.compile(_KR.mobile.national_number_pattern)
_KR_GENERAL_LENGTHS = frozenset(_KR.general_desc.possible_length)
_KR_MOBILE_LENGTHS = frozenset(_KR.mobile.possible_length or _KR.general_desc.possible_length)
_PHONE_PUNCT = str.maketrans("", "", " -.()")


def _kr_mobile_fast(text: str) -> str | None:
    """E.164 of a Korean mobile number written the usual ways, without libphonenumber's full parse (35 µs).

    Only returns a value that ``normalize_phone`` would return too (tested against it); else None."""
    compact = text.translate(_PHONE_PUNCT)
    if compact.startswith("+82"):
        nsn = compact[3:]
    elif compact.startswith("0"):
        nsn = compact[1:]
    elif compact.startswith("1"):
        nsn = compact  # Excel dropped the leading 0 of a number stored as a number
    else:
        return None
    if not (nsn.isascii() and nsn.isdigit() and nsn.startswith("1")):
        return None
    n = len(nsn)
    if n not in _KR_MOBILE_LENGTHS or n not in _KR_GENERAL_LENGTHS:
        return None
    if _KR_MOBILE.fullmatch(nsn) and _KR_GENERAL.fullmatch(nsn):
        return f"+82{nsn}"
    return None


def parse_phone(value: Any) -> str:
    text = as_text(value).strip().lstrip("'")
    fast = _kr_mobile_fast(text)
    if fast is not None:
        return fast
    try:
        return normalize_phone(text)
    except InvalidPhoneNumber as exc:
        raise CellError("phone", str(exc)) from None


_EMAIL_FAST = re.compile(
    r"[A-Za-z0-9_%+!#$&'*/=?^`{|}~-]+(?:\.[A-Za-z0-9_%+!#$&'*/=?^`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
MAX_EMAIL = 254


def parse_email(value: Any) -> str:
    """Validated, with the domain lower-cased (the local part is kept: it may be case-sensitive)."""
    text = as_text(value).strip()
    candidate = email_domain_lowercased(text)
    if len(candidate) > MAX_EMAIL:
        raise CellError(
            "email", _("'%(value)s' is longer than %(n)d characters.") % {"value": text[:60], "n": MAX_EMAIL}
        )
    if _EMAIL_FAST.fullmatch(candidate):
        return candidate
    try:
        validate_email(candidate)
    except ValidationError:
        raise CellError("email", _("'%(value)s' is not a valid email address.") % {"value": text[:100]}) from None
    return candidate


TRUE_WORDS = frozenset(
    [
        "y",
        "yes",
        "true",
        "t",
        "예",
        "네",
        "동의",
        "동의함",
        "수신",
        "수신동의",
        "o",
        "○",
        "1",
        "agree",
        "agreed",
        "subscribed",
        "optin",
        "opt-in",
        "허용",
        "승인",
    ]
)
FALSE_WORDS = frozenset(
    [
        "n",
        "no",
        "false",
        "f",
        "아니오",
        "아니요",
        "거부",
        "동의안함",
        "미동의",
        "비동의",
        "수신거부",
        "거절",
        "x",
        "×",
        "0",
        "disagree",
        "unsubscribed",
        "optout",
        "opt-out",
        "미수신",
        "수신안함",
        "비허용",
    ]
)
_BOOL_NUMERIC = frozenset({"1", "0"})


def _bool_word(text: str) -> str:
    return text.strip().casefold().replace(" ", "")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    word = _bool_word(as_text(value))
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise CellError(
        "consent",
        _("'%(value)s' is not a yes/no value (use Y/N, 예/아니오, 동의/거부, TRUE/FALSE, yes/no or 1/0).")
        % {"value": as_text(value)[:50]},
    )


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
#: The common case, a whole number without sign or leading zero (``12,345``, ``500``): read without the checks below.
_PLAIN_WHOLE = re.compile(r"[1-9]\d{0,2}(?:,\d{3})+|[1-9]\d*|0")
MAX_NUMBER_DIGITS = 15


def parse_number(value: Any) -> int | float:
    """``12,000``, ``₩12,000``, ``12000원``, ``-3.5``. Codes with a leading zero (``04524``) are not numbers."""
    if type(value) is str and _PLAIN_WHOLE.fullmatch(value):
        digits = value.replace(",", "")
        if len(digits) <= MAX_NUMBER_DIGITS:
            return int(digits)
    if isinstance(value, bool):
        raise CellError("number", _("'%(value)s' is not a number.") % {"value": as_text(value)})
    if isinstance(value, int | float):
        return value
    text = as_text(value).strip().removeprefix("₩").removesuffix("원").strip()
    if not _NUMBER.fullmatch(text):
        raise CellError("number", _("'%(value)s' is not a number.") % {"value": as_text(value)[:50]})
    plain = text.replace(",", "").lstrip("+-")
    whole = plain.split(".", 1)[0]
    if (len(whole) > 1 and whole.startswith("0")) or len(plain.replace(".", "")) > MAX_NUMBER_DIGITS:
        raise CellError("number", _("'%(value)s' is not a number.") % {"value": as_text(value)[:50]})
    number = text.replace(",", "")
    return float(number) if "." in number else int(number)


_DATETIME = re.compile(
    r"(?P<y>\d{4})\s*(?:-|/|\.|년)\s*(?P<m>\d{1,2})\s*(?:-|/|\.|월)\s*(?P<d>\d{1,2})\s*(?:\.|일)?"
    r"(?:(?:\s+|T)(?P<ap1>오전|오후|AM|PM)?\s*(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,6}))?)?"
    r"\s*(?P<ap2>오전|오후|AM|PM)?\s*(?P<tz>Z|[+-]\d{2}:?\d{2})?)?",
    re.IGNORECASE,
)
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_SHORT_DATE = re.compile(r"(\d{2})(\d{2})(\d{2})|(\d{2})[./-](\d{1,2})[./-](\d{1,2})")
_MONTH_DAY = re.compile(r"(\d{1,2})/(\d{1,2})")


def _workspace_tz():
    return timezone.get_default_timezone()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=_workspace_tz())


def parse_date(value: Any, *, compact: bool = False, birthday: bool = False) -> date | datetime | str:
    """A date or an aware datetime (workspace time zone when none is written).

    Accepted: ``2024-03-05``, ``2024.03.05``, ``2024. 3. 5.``, ``2024/3/5``, ``2024년 3월 5일``, with an optional time
    (``2024-03-05 14:30``, ``2024-03-05 오후 2:30:00``, ISO 8601 with offset). ``compact`` also accepts
    ``20240305``; ``birthday`` also accepts ``900305``/``90.03.05`` (year 19xx/20xx) and Mailchimp's ``03/05``
    (no year, returned as ``--03-05``)."""
    if isinstance(value, datetime):
        return _aware(value) if value.time() != time(0) or value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    text = as_text(value).strip()
    try:
        match = _DATETIME.fullmatch(text)
        if match:
            y, m, d = int(match["y"]), int(match["m"]), int(match["d"])
            if match["H"] is None:
                return date(y, m, d)
            hour = int(match["H"])
            ampm = (match["ap1"] or match["ap2"] or "").upper()
            if ampm in ("오후", "PM") and hour < 12:
                hour += 12
            elif ampm in ("오전", "AM") and hour == 12:
                hour = 0
            micro = int((match["f"] or "0").ljust(6, "0"))
            parsed = datetime(y, m, d, hour, int(match["M"]), int(match["S"] or 0), micro)
            if match["tz"]:
                parsed = datetime.fromisoformat(
                    parsed.isoformat() + match["tz"].replace("Z", "+00:00").replace("z", "+00:00")
                )
            return _aware(parsed)
        if compact or birthday:
            match = _COMPACT_DATE.fullmatch(text)
            if match:
                return date(int(match[1]), int(match[2]), int(match[3]))
        if birthday:
            match = _SHORT_DATE.fullmatch(text)
            if match:
                yy, mm, dd = (int(g) for g in (match.groups()[:3] if match[1] else match.groups()[3:]))
                this_year = timezone.localdate().year % 100
                return date((1900 if yy > this_year else 2000) + yy, mm, dd)
            match = _MONTH_DAY.fullmatch(text)
            if match:
                month, day = int(match[1]), int(match[2])
                date(2000, month, day)  # validates (2000 is a leap year: 02/29 is a birthday)
                return f"--{month:02d}-{day:02d}"
    except ValueError:
        pass
    raise CellError(
        "date",
        _("'%(value)s' is not a date (use 2024-03-05, 2024.03.05 or 2024년 3월 5일).") % {"value": text[:50]},
    )


def date_json(value: date | datetime | str) -> str:
    if isinstance(value, datetime):
        return value.astimezone(_workspace_tz()).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


GENDERS = {
    "male": ["남", "남자", "남성", "m", "male", "man", "男"],
    "female": ["여", "여자", "여성", "f", "female", "woman", "女"],
    "other": ["기타", "other", "x"],
}
_GENDER = {word: code for code, words in GENDERS.items() for word in words}
_NO_VALUE = frozenset(["-", "--", "n/a", "na", "미입력", "미기재", "없음", "선택안함", "unknown", "알수없음"])


def parse_gender(value: Any) -> str | None:
    """``male``/``female``/``other`` from 남/여, M/F, 남성/여성 ...; other text is kept as written."""
    text = as_text(value).strip()
    word = text.casefold().replace(" ", "")
    if word in _NO_VALUE:
        return None
    return _GENDER.get(word, text[:50])


MAX_TAG = 100


def parse_tags(value: Any) -> list[str]:
    """``VIP, 신규`` (Shopify) or ``"VIP","신규"`` (Mailchimp) → ``["VIP", "신규"]``."""
    names: list[str] = []
    for part in as_text(value).split(","):
        name = part.strip().strip('"').strip()
        if not name:
            continue
        if len(name) > MAX_TAG:
            raise CellError(
                "tag", _("The tag '%(value)s…' is longer than %(n)d characters.") % {"value": name[:30], "n": MAX_TAG}
            )
        if name not in names:
            names.append(name)
    return names


def parse_time_zone(value: Any) -> str:
    text = as_text(value).strip()
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CellError(
            "time_zone", _("'%(value)s' is not a time zone such as Asia/Seoul.") % {"value": text[:64]}
        ) from None
    return text


def parse_text(value: Any, *, limit: int, code: str) -> str:
    text = as_text(value).strip()
    if len(text) > limit:
        raise CellError(code, _("'%(value)s…' is longer than %(n)d characters.") % {"value": text[:30], "n": limit})
    return text


def parse_external_id(value: Any) -> str:
    # Shopify writes IDs with a leading apostrophe so that Excel keeps them as text.
    return parse_text(as_text(value).strip().lstrip("'"), limit=255, code="external_id")


def parse_locale(value: Any) -> str:
    return parse_text(as_text(value).replace("_", "-"), limit=20, code="locale")


# --- Type inference for attribute columns ----------------------------------------------------------------------


class TypeSniffer:
    """Feed every non-empty value of a column; ``type`` is the narrowest type all of them fit."""

    __slots__ = ("boolean", "done", "fed", "has_time", "number", "seen", "temporal")

    #: Distinct texts remembered (values repeat: grades, amounts); a text fed again changes nothing. Only texts: Excel's
    #: TRUE and 1 are equal in Python but not of the same type.
    MEMO = 20_000

    def __init__(self) -> None:
        self.number = self.boolean = self.temporal = True
        self.has_time = False
        self.seen = False
        self.done = False  # text: no value can change the type any more
        self.fed: set[Any] = set()

    def feed(self, value: Any) -> None:
        self.seen = True
        if self.done:
            return
        if type(value) is str:
            if value in self.fed:
                return
            if len(self.fed) < self.MEMO:
                self.fed.add(value)
        self._feed(value)
        self.done = not (self.number or self.boolean or self.temporal)

    def _feed(self, value: Any) -> None:
        if isinstance(value, bool):
            self.number = self.temporal = False
            return
        if isinstance(value, int | float):
            self.boolean = self.temporal = False
            return
        if isinstance(value, datetime | date):
            self.number = self.boolean = False
            if isinstance(value, datetime) and value.time() != time(0):
                self.has_time = True
            return
        if isinstance(value, time):
            self.number = self.boolean = self.temporal = False
            return
        if self.boolean:
            word = _bool_word(value)
            self.boolean = word not in _BOOL_NUMERIC and (word in TRUE_WORDS or word in FALSE_WORDS)
        if self.number:
            try:
                parse_number(value)
            except CellError:
                self.number = False
        if self.temporal:
            try:
                parsed = parse_date(value)
            except CellError:
                self.temporal = False
            else:
                self.has_time = self.has_time or isinstance(parsed, datetime)

    @property
    def type(self) -> str:
        if not self.seen:
            return TEXT
        if self.boolean:
            return BOOLEAN
        if self.number:
            return NUMBER
        if self.temporal:
            return DATETIME if self.has_time else DATE
        return TEXT


def convert_attribute(value: Any, kind: str) -> Any:
    """A cell of an attribute column as stored in ``Contact.attributes`` (JSON): the column's type decides."""
    if kind == NUMBER:
        return parse_number(value)
    if kind == BOOLEAN:
        return parse_bool(value)
    if kind in (DATE, DATETIME):
        parsed = parse_date(value)
        if kind == DATETIME and type(parsed) is date:
            parsed = _aware(datetime.combine(parsed, time(0)))
        return date_json(parsed)
    return as_text(value).strip()
