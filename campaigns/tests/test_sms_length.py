"""The SMS/LMS/MMS rule by EUC-KR bytes (ASCII 1, Korean 2), and that the admin's JS counter has the same rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.channels.sms_length import (
    LMS,
    MMS,
    SMS,
    euc_kr_length,
    length_report,
    message_type,
    unsendable_characters,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("abc", 3), ("가", 2), ("가a", 3), ("할인 10%", 8), ("\n", 1), ("똠", 2), ("漢", 2)],
)
def test_euc_kr_length_counts_korean_as_two_bytes(text, expected):
    assert euc_kr_length(text) == expected


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("a" * 89, SMS),
        ("a" * 90, SMS),
        ("a" * 91, LMS),
        ("가" * 45, SMS),  # 90 bytes
        ("가" * 44 + "a", SMS),  # 89 bytes
        ("가" * 45 + "a", LMS),  # 91 bytes
        ("가" * 46, LMS),  # 92 bytes
    ],
)
def test_type_at_the_90_byte_boundary(text, kind):
    assert message_type(text) == kind


def test_subject_makes_lms_and_image_makes_mms():
    assert message_type("짧은 글", subject="제목") == LMS
    assert message_type("짧은 글", subject="   ") == SMS
    assert message_type("짧은 글", has_image=True) == MMS
    assert message_type("가" * 1000, has_image=True) == MMS


def test_length_report_refuses_above_2000_bytes():
    assert length_report("가" * 1000).errors == ()
    report = length_report("가" * 1000 + "a")
    assert report.kind == LMS
    assert report.text_bytes == 2001
    assert "2,001" in report.errors[0]


def test_unsendable_characters_and_long_subject():
    assert unsendable_characters("세일 🎉 시작 🎉") == ["🎉"]
    report = length_report("본문 🎉", subject="가" * 21)
    assert len(report.errors) == 2


def test_js_counter_has_the_same_limits():
    source = (Path(__file__).resolve().parents[2] / "static/campaigns/sms_counter.js").read_text()
    assert "SMS_MAX = 90, LMS_MAX = 2000" in source
    assert "code < 0x80 ? 1 : 2" in source
