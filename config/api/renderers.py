"""JSON in and out with exact decimals.

Quantities are JSON numbers on the wire and `Decimal` inside. The standard encoder would
turn a Decimal into a float (1.1 + 2.2 → 3.3000000000000003); simplejson writes the
Decimal's own digits instead.
"""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal
from typing import Any

import simplejson
from rest_framework.renderers import JSONRenderer


def format_datetime(value: datetime.datetime) -> str:
    """ISO 8601 UTC with milliseconds: 2023-07-01T00:00:00.000Z."""
    return value.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return format_datetime(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any) -> bytes:
    return simplejson.dumps(
        data, use_decimal=True, default=_default, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def normalize_decimal(value: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent notation (1000, not 1E+3)."""
    normalized = value.normalize()
    if normalized.as_tuple().exponent > 0:
        return normalized.quantize(Decimal(1))
    return normalized


class DecimalJSONRenderer(JSONRenderer):
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        if data is None:
            return b""
        return dumps(data)


class ExactJSONEncoder(json.JSONEncoder):
    """For model JSONFields holding client data: decimals go into jsonb as the numbers
    they are (jsonb keeps them exactly), where the standard encoder refuses them."""

    def encode(self, o: Any) -> str:
        return simplejson.dumps(o, use_decimal=True, default=_default, ensure_ascii=False)


class ExactJSONDecoder(json.JSONDecoder):
    """Reads such a field back with fractions as Decimal, so they leave exactly as sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parse_float", Decimal)
        super().__init__(*args, **kwargs)
