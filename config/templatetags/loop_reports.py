"""``{% load loop_reports %}``: ``{{ value|report_cell }}`` shows a report cell (rates as 12.3 %, counts as 1,234,
money as ₩39,000, times in the workspace time zone)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils import timezone

from config.formatting import money

register = template.Library()


@register.filter
def report_cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, Decimal):  # amounts of money (revenue)
        return money(value)
    if isinstance(value, int):
        return intcomma(value)
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return value


@register.filter
def percent(value):
    return "-" if value is None else f"{value:.1%}"
