"""``{% load loop_format %}``: ``{{ order.total|money:order.currency }}`` → ₩39,000."""

from django import template

from config import formatting

register = template.Library()


@register.filter
def money(value, currency: str = formatting.DEFAULT_CURRENCY) -> str:
    return formatting.money(value, currency or formatting.DEFAULT_CURRENCY)
