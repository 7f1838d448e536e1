# ruff: noqa: E501 (rows of test data are kept one per line, as they appear in the files)
"""Write the contact import test files in this folder: ``python crm/tests/data/make_files.py``.

The outputs are kept in the repository (the tests read them as real files, byte for byte): the same six Korean
contacts as UTF-8, UTF-8 with BOM, CP949 (Excel's "CSV" on Korean Windows, CRLF), UTF-16 tab-separated (Excel's
"Unicode text") and XLSX (typed cells: dates, numbers, a phone stored as a number); Shopify's customer export and
Mailchimp's audience exports; a file of broken rows; an undecodable file; an old ``.xls``.
"""

from __future__ import annotations

import codecs
import csv
import io
from datetime import date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

HEADERS = ["회원ID", "이름", "이메일", "휴대폰", "마케팅 수신 동의", "생년월일", "성별", "태그", "등급", "포인트", "가입일", "VIP여부"]  # fmt: skip
ROWS = [
    ["m001", "김민준", "MinJun.Kim@Example.COM", "010-1234-5678", "Y", "1990-03-05", "남", "VIP, 신규", "GOLD", "12,000", "2024-01-02", "Y"],
    ["m002", "이서연", "seoyeon@example.co.kr", "01023456789", "예", "1992.07.14", "여", "신규", "SILVER", "500", "2024.02.03", "N"],
    ["m003", "박지훈", "jihoon@example.com", "+82 10 3456 7890", "아니오", "1988년 11월 2일", "남", "", "BRONZE", "0", "2024-03-04", "아니오"],
    ["m004", "최수아", "", "010 4567 8901", "동의", "2001. 5. 9.", "여", "VIP", "GOLD", "7500", "2024-04-05", "예"],
    ["", "", "", "", "", "", "", "", "", "", "", ""],
    ["m005", "정하준", "hajun@example.com", "", "거부", "", "", "", "일반", "30", "2024-05-06", "N"],
    ["m006", "강지우", "jiwoo@example.com", "010-5678-9012", "1", "19950817", "F", "신규", "SILVER", "1,250", "2024-06-07", "yes"],
]  # fmt: skip


def csv_text(headers: list[str], rows: list[list[str]], *, delimiter: str = ",", newline: str = "\r\n") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()


def write_contacts() -> None:
    text = csv_text(HEADERS, ROWS, newline="\n")
    (HERE / "contacts_utf8.csv").write_bytes(text.encode("utf-8"))
    (HERE / "contacts_utf8_bom.csv").write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    # Excel on Korean Windows: CP949 and CRLF line ends.
    (HERE / "contacts_cp949.csv").write_bytes(csv_text(HEADERS, ROWS).encode("cp949"))
    # Excel's "Unicode text": UTF-16 little endian with a BOM, tab-separated.
    (HERE / "contacts_utf16.txt").write_bytes(csv_text(HEADERS, ROWS, delimiter="\t").encode("utf-16"))


def write_xlsx() -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "회원"
    sheet.append(HEADERS)
    typed = [
        ["m001", "김민준", "MinJun.Kim@Example.COM", "010-1234-5678", "Y", date(1990, 3, 5), "남", "VIP, 신규", "GOLD", 12000, datetime(2024, 1, 2), True],
        # A phone typed as a number: Excel drops the leading 0.
        ["m002", "이서연", "seoyeon@example.co.kr", 1023456789, "예", date(1992, 7, 14), "여", "신규", "SILVER", 500, datetime(2024, 2, 3), False],
        ["m003", "박지훈", "jihoon@example.com", "+82 10 3456 7890", "아니오", "1988년 11월 2일", "남", None, "BRONZE", 0, datetime(2024, 3, 4), False],
        ["m004", "최수아", None, "010 4567 8901", "동의", date(2001, 5, 9), "여", "VIP", "GOLD", 7500, datetime(2024, 4, 5), True],
        [None] * 12,
        ["m005", "정하준", "hajun@example.com", None, "거부", None, None, None, "일반", 30, datetime(2024, 5, 6), False],
        ["m006", "강지우", "jiwoo@example.com", "010-5678-9012", 1, "19950817", "F", "신규", "SILVER", 1250, datetime(2024, 6, 7), True],
    ]  # fmt: skip
    for row in typed:
        sheet.append(row)
    workbook.save(HERE / "contacts.xlsx")


SHOPIFY_HEADERS = [
    "Customer ID", "First Name", "Last Name", "Email", "Accepts Email Marketing", "Default Address Company",
    "Default Address Address1", "Default Address Address2", "Default Address City", "Default Address Province Code",
    "Default Address Country Code", "Default Address Zip", "Default Address Phone", "Phone", "Accepts SMS Marketing",
    "Total Spent", "Total Orders", "Note", "Tax Exempt", "Tags",
]  # fmt: skip
SHOPIFY_ROWS = [
    ["'7212345678901", "민준", "김", "minjun@example.com", "yes", "", "테헤란로 123", "4층", "서울", "", "KR", "06236", "'+82212345678", "'+821012345678", "no", "125000.00", "3", "", "no", "VIP, 재구매"],
    ["'7212345678902", "Jane", "Doe", "JANE.DOE@EXAMPLE.COM", "no", "Acme", "1 Main St", "", "Ottawa", "ON", "CA", "K1A 0B1", "", "'+16135550135", "yes", "0.00", "0", "wholesale", "yes", ""],
    ["'7212345678903", "서연", "이", "seoyeon@example.com", "yes", "", "", "", "부산", "", "KR", "04524", "", "", "", "89000.50", "1", "", "no", "신규"],
]  # fmt: skip

MAILCHIMP_HEADERS = [
    "Email Address", "First Name", "Last Name", "Address", "Phone Number", "Birthday", "MEMBER_RATING", "OPTIN_TIME",
    "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE", "GMTOFF", "DSTOFF", "TIMEZONE", "CC", "REGION",
    "LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS",
]  # fmt: skip
MAILCHIMP_ROWS = [
    ["jihoon@example.com", "지훈", "박", "서울 강남구", "010-3456-7890", "11/02", "4", "2023-04-01 10:22:33", "", "2023-04-01 10:23:01", "203.0.113.7", "37.5", "127.03", "9", "9", "Asia/Seoul", "KR", "11", "2024-02-01 09:00:00", "123456789", "a1b2c3d4e5", "", '"VIP","뉴스레터"'],
    ["sua@example.com", "수아", "최", "", "", "", "2", "2023-05-02 08:00:00", "", "2023-05-02 08:01:00", "198.51.100.4", "", "", "", "", "", "", "", "2024-03-01 12:30:00", "123456790", "f6g7h8i9j0", "", ""],
]  # fmt: skip
MAILCHIMP_UNSUB_HEADERS = [
    "Email Address", "First Name", "Last Name", "MEMBER_RATING", "OPTIN_TIME", "CONFIRM_TIME", "UNSUB_TIME",
    "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID", "UNSUB_REASON", "UNSUB_REASON_OTHER", "LEID", "EUID", "TAGS",
]  # fmt: skip
MAILCHIMP_UNSUB_ROWS = [
    ["sua@example.com", "수아", "최", "2", "2023-05-02 08:00:00", "2023-05-02 08:01:00", "2024-06-01 21:10:00", "봄 세일", "c1", "NORMAL", "", "123456790", "f6g7h8i9j0", ""],
]  # fmt: skip


def write_exports() -> None:
    (HERE / "shopify_customers.csv").write_bytes(csv_text(SHOPIFY_HEADERS, SHOPIFY_ROWS, newline="\n").encode())
    (HERE / "mailchimp_subscribed.csv").write_bytes(csv_text(MAILCHIMP_HEADERS, MAILCHIMP_ROWS, newline="\n").encode())
    (HERE / "mailchimp_unsubscribed.csv").write_bytes(
        csv_text(MAILCHIMP_UNSUB_HEADERS, MAILCHIMP_UNSUB_ROWS, newline="\n").encode()
    )


BROKEN_HEADERS = ["회원ID", "이름", "이메일", "휴대폰", "수신동의", "생년월일", "포인트"]
#: Row numbers as Excel shows them (header = row 1).
BROKEN_LINES = [
    "b01,김민준,minjun@example.com,010-1111-2222,Y,1990-01-01,100",  # 2: ok
    "b02,이서연,seoyeon@example,010-2222-3333,Y,1991-02-02,200",  # 3: bad email
    "b03,박지훈,jihoon@example.com,010-12,N,1992-03-03,300",  # 4: phone '010-12'
    "b04,최수아,sua@example.com,010-4444-5555,모름,1993-04-04,400",  # 5: consent value
    "b05,정하준,hajun@example.com,010-5555-6666,Y,1994-13-40,500",  # 6: date
    ",강지우,,,Y,,600",  # 7: no identifier
    "b07,조예린,yerin@example.com,010-7777-8888,Y,1996-07-07,700,extra",  # 8: too many values
    "b08,윤도윤,MINJUN@example.com,010-8888-9999,N,1997-08-08,800",  # 9: ok (local part differs: another email)
    "b09,장하은,haeun@example.com,+82 10 1111 2222,Y,1998-09-09,900",  # 10: duplicate phone of row 2
    "b01,김민준,minjun2@example.com,010-9999-0000,Y,1990-01-01,100",  # 11: duplicate member ID of row 2
    "b11,임시우,siwoo@example.com,010-1010-2020,예,2000-10-10,1000",  # 12: ok
]


def write_broken() -> None:
    text = ",".join(BROKEN_HEADERS) + "\n" + "\n".join(BROKEN_LINES) + "\n"
    (HERE / "broken_rows.csv").write_bytes(text.encode("utf-8"))


def write_undecodable() -> None:
    # A UTF-8 file that got a CP949 line and stray bytes appended (two exports pasted together): neither UTF-8 nor
    # CP949 can read it.
    good = "회원ID,이름,이메일\nu1,김민준,minjun@example.com\n".encode()
    bad = "u2,이서연,".encode("cp949") + b"\x80\xff\xfe seoyeon@example.com\n"
    (HERE / "undecodable.csv").write_bytes(good + bad)


def write_legacy_xls() -> None:
    # The first bytes of an OLE2 compound document (Excel 97-2003).
    (HERE / "legacy.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504)


def main() -> None:
    write_contacts()
    write_xlsx()
    write_exports()
    write_broken()
    write_undecodable()
    write_legacy_xls()


if __name__ == "__main__":
    main()
