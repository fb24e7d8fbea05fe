"""Default token-bucket limits per endpoint group (the API reference's numbers).

`rate` is tokens added per second, `burst` the bucket size. TALLY_RATE_LIMITS overrides
any group with a JSON object of the same shape.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ImproperlyConfigured

DEFAULT_RATE_LIMITS: dict[str, dict[str, float]] = {
    "token": {"rate": 10, "burst": 5},
    "meter-types": {"rate": 20, "burst": 5},
    "meters": {"rate": 50, "burst": 5},
    "collectors-write": {"rate": 1, "burst": 1},
    # Five requests a minute.
    "collectors-read": {"rate": 5 / 60, "burst": 5},
    "ingestion": {"rate": 2000, "burst": 5},
    "streams": {"rate": 20, "burst": 5},
    "aggregation": {"rate": 50, "burst": 5},
    "parameters": {"rate": 2, "burst": 4},
    "parameters-delete": {"rate": 1, "burst": 2},
    "metrics": {"rate": 20, "burst": 5},
    "platform": {"rate": 20, "burst": 5},
}


def _positive_number(group: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ImproperlyConfigured(f"TALLY_RATE_LIMITS[{group!r}].{key} must be a number.")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ImproperlyConfigured(
            f"TALLY_RATE_LIMITS[{group!r}].{key} must be a number, not {value!r}."
        ) from None
    if not number.is_finite() or number <= 0:
        raise ImproperlyConfigured(f"TALLY_RATE_LIMITS[{group!r}].{key} must be above zero.")
    return float(number)


def merge_rate_limits(overrides: Any) -> dict[str, dict[str, float]]:
    """Return the defaults with `overrides` (group -> {"rate", "burst"}) merged over them."""
    limits = {group: dict(values) for group, values in DEFAULT_RATE_LIMITS.items()}
    if overrides is None:
        return limits
    if not isinstance(overrides, dict):
        raise ImproperlyConfigured("TALLY_RATE_LIMITS must be a JSON object.")
    for group, values in overrides.items():
        if group not in limits:
            known = ", ".join(sorted(limits))
            raise ImproperlyConfigured(
                f"TALLY_RATE_LIMITS names an unknown group {group!r} (known: {known})."
            )
        if not isinstance(values, dict) or not values or set(values) - {"rate", "burst"}:
            raise ImproperlyConfigured(
                f'TALLY_RATE_LIMITS[{group!r}] must be an object with "rate" and/or "burst".'
            )
        for key, value in values.items():
            limits[group][key] = _positive_number(group, key, value)
    return limits
