"""Template filters for the dashboards (`{% load tally_web %}`, registered in settings)."""

from __future__ import annotations

from decimal import Decimal

from django import template
from django.utils.timesince import timesince

from common.json import normalize_decimal

register = template.Library()


@register.filter
def quantity(value) -> str:
    """An exact number as people read it: 4,068 and 0.5, never 4068.0000000000."""
    if value is None or value == "":
        return ""
    number = normalize_decimal(Decimal(value))
    whole, _, fraction = f"{number:f}".partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-') or 0):,}"
    return f"{sign}{grouped}.{fraction}" if fraction else f"{sign}{grouped}"


@register.filter
def percent(share) -> str:
    """A share (0.875) as a whole percentage ("88%"), rounded down so 99.9% is not 100%."""
    if share is None or share == "":
        return ""
    return f"{int(Decimal(share) * 100):,}%"


@register.filter
def bar_width(share) -> str:
    """A share as a CSS width for a bar, capped at 100%."""
    if share is None or share == "":
        return "0%"
    return f"{min(Decimal(100), max(Decimal(0), Decimal(share) * 100)):.1f}%"


@register.filter
def ago(moment, now) -> str:
    """How long ago `moment` was: "just now" within a minute, else "3 hours ago"."""
    if moment is None:
        return ""
    if (now - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment, now, depth=1)} ago"
