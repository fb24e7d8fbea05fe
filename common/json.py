"""JSON for all of Tally, with msgspec: exact decimals in and out.

Quantities are JSON numbers on the wire and `Decimal` inside. Decoding turns every
number with a fraction or an exponent into a Decimal (integers stay int); encoding
writes a Decimal's own digits as a JSON number, so 1.1 + 2.2 stays 3.3. Datetimes leave
as ISO 8601 UTC with milliseconds (2023-07-01T00:00:00.000Z), the API's one format.
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from typing import Any

import msgspec

DecodeError = msgspec.DecodeError
Raw = msgspec.Raw

_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder(decimal_format="number")
_NESTED = (dict, list, tuple, datetime.datetime)


def loads(data: bytes | str) -> Any:
    """Decode JSON; raises DecodeError (a ValueError) for anything that is not JSON,
    NaN and Infinity included."""
    return _decoder.decode(data)


def dumps(data: Any) -> bytes:
    """Encode as UTF-8 JSON bytes."""
    return _encoder.encode(_api_datetimes(data))


def dumps_text(data: Any) -> str:
    return dumps(data).decode()


def encode(data: Any) -> bytes:
    """Encode without looking for datetimes (msgspec writes them as RFC 3339 with
    microseconds): for data known to hold none, such as decoded records on the ingestion
    path, and for PostgreSQL's json functions, which want the full precision."""
    return _encoder.encode(data)


def dumps_pretty(data: Any) -> str:
    """Indented JSON, for people (the admin's record payloads)."""
    return msgspec.json.format(dumps(data), indent=2).decode()


def format_datetime(value: datetime.datetime) -> str:
    """ISO 8601 UTC with milliseconds: 2023-07-01T00:00:00.000Z."""
    return value.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalize_decimal(value: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent notation (1000, not 1E+3)."""
    normalized = value.normalize()
    if normalized.as_tuple().exponent > 0:
        return normalized.quantize(Decimal(1))
    return normalized


def _api_datetimes(value: Any) -> Any:
    """`value` with its datetimes in the API's format. msgspec would write them itself
    with microseconds; a container is copied only when a datetime is found in it."""
    if isinstance(value, datetime.datetime):
        return format_datetime(value)
    if isinstance(value, dict):
        copied = None
        for key, item in value.items():
            if isinstance(item, _NESTED):
                converted = _api_datetimes(item)
                if converted is not item:
                    copied = dict(value) if copied is None else copied
                    copied[key] = converted
        return value if copied is None else copied
    if isinstance(value, list | tuple):
        copied = None
        for index, item in enumerate(value):
            if isinstance(item, _NESTED):
                converted = _api_datetimes(item)
                if converted is not item:
                    copied = list(value) if copied is None else copied
                    copied[index] = converted
        return value if copied is None else copied
    return value


class ExactJSONEncoder(json.JSONEncoder):
    """For model JSONFields holding client data (Django calls `encode`): decimals go
    into jsonb as the numbers they are, where the standard encoder refuses them."""

    def encode(self, o: Any) -> str:
        return dumps_text(o)


class ExactJSONDecoder(json.JSONDecoder):
    """Reads such a field back with fractions as Decimal, so they leave exactly as sent."""

    def decode(self, s: str, *args: Any) -> Any:
        return loads(s)
