"""Locale-aware display of money, shared by the admin, reports and messages.

Dates and numbers follow the active language through Django's formats (``ko``: 2026년 11월 24일, 5,000); money
adds the currency's sign: ``₩5,000`` for won (no decimals), ``$12.50``; a currency without a known sign is written
after the amount (``12.50 CHF``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.humanize.templatetags.humanize import intcomma

#: Currency code → sign written before the amount.
SIGNS = {"KRW": "₩", "USD": "$", "EUR": "€", "JPY": "¥", "GBP": "£", "CNY": "¥"}
#: Currencies without minor units: amounts are rounded to whole numbers.
NO_DECIMALS = {"KRW", "JPY"}
DEFAULT_CURRENCY = "KRW"


def money(value: Any, currency: str = DEFAULT_CURRENCY) -> str:
    """``39000.00`` → ``₩39,000``; ``Decimal("12.5"), "USD"`` → ``$12.50``; ``None`` → ``-``."""
    if value is None or value == "":
        return "-"
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    code = (currency or DEFAULT_CURRENCY).upper()
    if code in NO_DECIMALS or amount == amount.to_integral_value():
        amount = amount.quantize(Decimal("1"))
    else:
        amount = amount.quantize(Decimal("0.01"))
    sign = "-" if amount < 0 else ""
    text = intcomma(abs(amount))
    if code in SIGNS:
        return f"{sign}{SIGNS[code]}{text}"
    return f"{sign}{text} {code}"
