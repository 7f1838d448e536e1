"""Column mapping and value parsing: Korean, Shopify and Mailchimp headers; phones, emails, dates, yes/no values."""

import random
from datetime import date, datetime

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import translation

from crm.importing import mapping as m
from crm.importing.mapping import CellError, TypeSniffer, map_columns
from crm.phones import InvalidPhoneNumber, normalize_phone


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


def fields(headers):
    return [(c.field, c.key) if c.field == m.ATTRIBUTE else c.field for c in map_columns(headers)]


def test_korean_headers():
    headers = ["회원ID", "이름", "이메일", "휴대폰", "수신동의", "생년월일", "성별", "태그", "포인트 잔액", "전화번호"]
    assert fields(headers) == [
        "external_id",
        "name",
        "email",
        "phone",
        "consent",
        "birth_date",
        "gender",
        "tags",
        ("attribute", "포인트_잔액"),
        ("attribute", "전화번호"),  # the phone is already mapped: a second phone column is kept as an attribute
    ]


def test_korean_given_and_family_name_columns_and_header_decorations():
    assert fields(["성", "이름", "휴대폰 번호(필수)", "마케팅 수신 동의*", "SMS 수신여부", "이메일 수신 동의"]) == [
        "last_name",
        "first_name",
        "phone",
        "consent",
        "consent_sms",
        "consent_email",
    ]


def test_shopify_customer_export_headers():
    from crm.tests.data.make_files import SHOPIFY_HEADERS

    mapped = dict(zip(SHOPIFY_HEADERS, fields(SHOPIFY_HEADERS), strict=True))
    assert mapped["Customer ID"] == "external_id"
    assert mapped["First Name"] == "first_name"
    assert mapped["Last Name"] == "last_name"
    assert mapped["Email"] == "email"
    assert mapped["Phone"] == "phone"
    assert mapped["Accepts Email Marketing"] == "consent_email"
    assert mapped["Accepts SMS Marketing"] == "consent_sms"
    assert mapped["Tags"] == "tags"
    assert mapped["Total Spent"] == ("attribute", "total_spent")
    assert mapped["Default Address Zip"] == ("attribute", "default_address_zip")
    assert fields(["Accepts Marketing"]) == ["consent"]  # Shopify's older export


def test_mailchimp_audience_export_headers():
    from crm.tests.data.make_files import MAILCHIMP_HEADERS, MAILCHIMP_UNSUB_HEADERS

    mapped = dict(zip(MAILCHIMP_HEADERS, fields(MAILCHIMP_HEADERS), strict=True))
    assert mapped["Email Address"] == "email"
    assert mapped["Phone Number"] == "phone"
    assert mapped["Birthday"] == "birth_date"
    assert mapped["TAGS"] == "tags"
    assert mapped["TIMEZONE"] == "time_zone"
    assert mapped["MEMBER_RATING"] == ("attribute", "member_rating")
    assert mapped["LEID"] == ("attribute", "leid")
    assert dict(zip(MAILCHIMP_UNSUB_HEADERS, fields(MAILCHIMP_UNSUB_HEADERS), strict=True))["UNSUB_TIME"] == (
        "unsubscribed_at"
    )


def test_our_field_names_and_export_labels_in_both_languages():
    assert fields(["external_id", "email", "phone", "consent_email", "consent_ads_night"]) == [
        "external_id",
        "email",
        "phone",
        "consent_email",
        "consent_ads_night",
    ]
    english_labels = [str(m.FIELD_LABELS[f]) for f in ("external_id", "phone", "consent_sms", "ignore")]
    with translation.override("ko"):
        korean_labels = [str(m.FIELD_LABELS[f]) for f in ("external_id", "phone", "consent_sms", "ignore")]
        assert fields(english_labels) == ["external_id", "phone", "consent_sms", "ignore"]
    assert fields(korean_labels) == ["external_id", "phone", "consent_sms", "ignore"]


def test_unknown_and_empty_headers_become_distinct_attributes():
    assert fields(["Total Spent", "total spent", "", "#"]) == [
        ("attribute", "total_spent"),
        ("attribute", "total_spent_2"),
        ("attribute", "column_3"),
        ("attribute", "column_4"),
    ]


@pytest.mark.parametrize(
    "raw", ["010-1234-5678", "01012345678", "+82 10 1234 5678", "+82-10-1234-5678", "010.1234.5678", "(010)1234-5678"]
)
def test_phone_formats_are_one_number(raw):
    assert m.parse_phone(raw) == "+821012345678"


def test_phone_stored_as_a_number_by_excel_and_shopify_apostrophe():
    assert m.parse_phone(1012345678) == "+821012345678"
    assert m.parse_phone("'+821012345678") == "+821012345678"
    assert m.parse_phone("02-123-4567") == "+8221234567"
    assert m.parse_phone("+1 613 555 0135") == "+16135550135"


def test_invalid_phone_message():
    with pytest.raises(CellError) as exc:
        m.parse_phone("010-12")
    assert exc.value.message == "'010-12' is not a valid phone number."


def test_phone_fast_path_agrees_with_libphonenumber():
    rng = random.Random(7)
    shapes = [
        lambda: f"010{rng.randint(0, 99_999_999):08d}",
        lambda: f"01{rng.choice('016789')}{rng.randint(0, 9_999_999):07d}",
        lambda: f"+8210{rng.randint(0, 99_999_999):08d}",
        lambda: f"10{rng.randint(0, 99_999_999):08d}",
        lambda: f"0{rng.randint(10, 19)}-{rng.randint(0, 9999):04d}-{rng.randint(0, 9999):04d}",
        lambda: "".join(rng.choice("0123456789-+ ") for _ in range(rng.randint(3, 16))),
    ]
    for _ in range(30_000):
        raw = rng.choice(shapes)()
        fast = m._kr_mobile_fast(raw)
        if fast is None:
            continue
        try:
            expected = normalize_phone(raw)
        except InvalidPhoneNumber:
            expected = None
        assert fast == expected, raw


def test_email_domain_is_lower_cased_and_fast_path_never_accepts_what_django_refuses():
    assert m.parse_email("MinJun.Kim@Example.COM") == "MinJun.Kim@example.com"
    for bad in ("seoyeon@example", "a@@b.com", "a..b@example.com", ".a@example.com", "김@example.com x"):
        with pytest.raises(CellError):
            m.parse_email(bad)
    rng = random.Random(3)
    alphabet = "abcXYZ019._%+-@!#"
    for _ in range(20_000):
        candidate = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 20)))
        if "@" not in candidate:
            candidate += "@ex-ample.co"
        if m._EMAIL_FAST.fullmatch(candidate):
            try:
                validate_email(candidate)
            except ValidationError:
                pytest.fail(f"fast path accepted {candidate!r}, which Django refuses")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-05", date(2024, 3, 5)),
        ("2024.03.05", date(2024, 3, 5)),
        ("2024. 3. 5.", date(2024, 3, 5)),
        ("2024/3/5", date(2024, 3, 5)),
        ("2024년 3월 5일", date(2024, 3, 5)),
        (datetime(2024, 3, 5), date(2024, 3, 5)),
    ],
)
def test_korean_and_iso_dates(raw, expected):
    assert m.parse_date(raw) == expected


def test_datetimes_are_aware_in_the_workspace_time_zone():
    assert m.date_json(m.parse_date("2024-03-05 오후 2:30")) == "2024-03-05T14:30:00+09:00"
    assert m.date_json(m.parse_date("2024-03-05 14:30:15")) == "2024-03-05T14:30:15+09:00"
    assert m.date_json(m.parse_date("2024-03-05T05:30:00Z")) == "2024-03-05T14:30:00+09:00"
    assert m.date_json(m.parse_date("2024-03-05 오전 12:05")) == "2024-03-05T00:05:00+09:00"


def test_birthday_forms():
    assert m.parse_date("19900305", compact=True, birthday=True) == date(1990, 3, 5)
    assert m.parse_date("900305", birthday=True) == date(1990, 3, 5)
    assert m.parse_date("03/05", birthday=True) == "--03-05"  # Mailchimp: no year
    with pytest.raises(CellError) as exc:
        m.parse_date("1990-13-40", birthday=True)
    assert exc.value.message == "'1990-13-40' is not a date (use 2024-03-05, 2024.03.05 or 2024년 3월 5일)."


@pytest.mark.parametrize("word", ["Y", "y", "예", "TRUE", "true", "yes", "1", 1, "동의", "O", True])
def test_yes_values(word):
    assert m.parse_bool(word) is True


@pytest.mark.parametrize("word", ["N", "아니오", "FALSE", "no", "0", 0, "거부", "X", "수신거부", False])
def test_no_values(word):
    assert m.parse_bool(word) is False


def test_a_value_that_is_not_yes_or_no():
    with pytest.raises(CellError) as exc:
        m.parse_bool("모름")
    assert "'모름' is not a yes/no value" in exc.value.message


def test_numbers_and_codes():
    assert m.parse_number("12,000") == 12000
    assert m.parse_number("₩12,000") == 12000
    assert m.parse_number("12000원") == 12000
    assert m.parse_number("-3.5") == -3.5
    for code in ("04524", "010-1234", "1,23", "12.000,5", "1234567890123456", "123,456,789,012,345,678", "00"):
        with pytest.raises(CellError):
            m.parse_number(code)
    # The fast path for plain whole numbers reads exactly what the full parser reads.
    for plain in ("0", "7", "500", "12,345", "1,234,567", "123456789012345", " 12", "12,34,567", "+5"):
        try:
            slow = m.parse_number(f"₩{plain}")  # the prefix takes the full path
        except CellError:
            slow = "refused"
        try:
            fast = m.parse_number(plain)
        except CellError:
            fast = "refused"
        assert fast == slow, plain


def sniff(*values):
    sniffer = TypeSniffer()
    for value in values:
        sniffer.feed(value)
    return sniffer.type


def test_type_inference():
    assert sniff("12,000", "500", "0") == m.NUMBER
    assert sniff("1", "0", "1") == m.NUMBER  # 1/0 are numbers unless the column is a consent column
    assert sniff("Y", "N", "예") == m.BOOLEAN
    assert sniff("2024-01-02", "2024.02.03") == m.DATE
    assert sniff("2024-01-02", "2024-02-03 10:00") == m.DATETIME
    assert sniff("GOLD", "12") == m.TEXT
    assert sniff("04524", "06236") == m.TEXT  # postal codes keep their zeros
    assert sniff(12000, 3.5) == m.NUMBER
    assert sniff(datetime(2024, 1, 2), datetime(2024, 1, 3)) == m.DATE
    assert sniff(True, False) == m.BOOLEAN
    assert sniff() == m.TEXT
    # Repeated texts are remembered; Excel's TRUE and 1 are equal in Python but still make the column text.
    assert sniff("12,000", "500", "12,000", "500", "GOLD", "500") == m.TEXT
    assert sniff(True, 1) == m.TEXT
    assert sniff("Y", "N", "Y", "1") == m.TEXT  # "1" is no yes/no in an attribute column, "Y" no number


def test_attribute_values_follow_the_column_type():
    assert m.convert_attribute("12,000", m.NUMBER) == 12000
    assert m.convert_attribute("예", m.BOOLEAN) is True
    assert m.convert_attribute("2024.02.03", m.DATE) == "2024-02-03"
    assert m.convert_attribute("2024-02-03", m.DATETIME) == "2024-02-03T00:00:00+09:00"
    assert m.convert_attribute(12000, m.TEXT) == "12000"


def test_gender_and_tags():
    assert [m.parse_gender(v) for v in ("남", "여성", "F", "m", "기타", "미입력", "논바이너리")] == [
        "male",
        "female",
        "female",
        "male",
        "other",
        None,
        "논바이너리",
    ]
    assert m.parse_tags("VIP, 신규,,VIP") == ["VIP", "신규"]
    assert m.parse_tags('"VIP","뉴스레터"') == ["VIP", "뉴스레터"]
