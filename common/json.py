"""JSON for all of Tally, with msgspec: exact decimals in and out.

Quantities are JSON numbers on the wire and `Decimal` inside. Decoding turns every
number with a fraction or an exponent into a Decimal (integers stay int); encoding
writes a Decimal's own digits as a JSON number, so 1.1 + 2.2 stays 3.3. Datetimes leave
as ISO 8601 UTC with milliseconds (2023-07-01T00:00:00.000Z), the API's one format.
"""

from __future__ import annotations

import datetime
import json
import re
from decimal import Decimal
from typing import Any

import msgspec

DecodeError = msgspec.DecodeError
Raw = msgspec.Raw

# Deeper documents are refused: nothing Tally takes needs more, and the parsers and
# encoders down the line recurse.
MAX_DEPTH = 64
# What PostgreSQL's numeric (and so jsonb) can hold: 131,072 digits before the point and
# 16,383 after it.
_NUMERIC_MAX_ADJUSTED = 131_071
_NUMERIC_MAX_PLACES = 16_383


class InvalidJSON(DecodeError):
    """A body Tally will not take. `where` names the place ("data[3].price", "" for the
    whole document); the message never repeats the offending text."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where


class _Unstorable:
    """Stands for a number PostgreSQL cannot store, so that decoding goes on and the
    caller can say where it was (or refuse only the record that holds it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unstorable number>"


UNSTORABLE = _Unstorable()


def _decimal(text: str) -> Decimal | _Unstorable:
    try:
        number = Decimal(text)
    except ArithmeticError:  # an exponent beyond what Decimal itself can hold
        return UNSTORABLE
    exponent = number.as_tuple().exponent
    if number.adjusted() > _NUMERIC_MAX_ADJUSTED or -exponent > _NUMERIC_MAX_PLACES:
        return UNSTORABLE
    return number


_decoder = msgspec.json.Decoder(float_hook=_decimal)
_encoder = msgspec.json.Encoder(decimal_format="number")
_NESTED = (dict, list, tuple, datetime.datetime)


def loads(data: bytes | str) -> Any:
    """Decode a JSON document Tally can store, or raise InvalidJSON (a DecodeError, a
    ValueError) naming where it is wrong: not JSON (NaN and Infinity included), nested
    more than MAX_DEPTH levels, a number PostgreSQL cannot store, or a NUL character
    (which no PostgreSQL text holds)."""
    value = loads_lenient(data)
    problem = find_problem(value)
    if problem is not None:
        where, message = problem
        raise InvalidJSON(message, where)
    repeated = _repeated_key(data)
    if repeated is not None:
        raise InvalidJSON("This field name appears twice in one object.", repeated)
    return value


# Every string token (a key when a colon follows), and the braces around objects. Quotes
# outside strings always open one, so scanning string tokens in order never starts
# inside a string.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?|[{}]')


def _repeated_key(data: bytes | str) -> str | None:
    """The first field name that appears twice in one object, or None. msgspec keeps the
    last of a repeated name; Tally refuses the document instead, so no value is
    silently dropped. (A scan of the text: small bodies only, see `loads`.)"""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b":") < 2:
        return None
    objects: list[set[str]] = []
    for token in _TOKENS.finditer(raw):
        text = token.group()
        if text == b"{":
            objects.append(set())
        elif text == b"}":
            if objects:
                objects.pop()
        elif token.group(1) is not None and objects:
            key = _decoder.decode(text[: text.rindex(b'"') + 1])
            if key in objects[-1]:
                return key
            objects[-1].add(key)
    return None


def loads_lenient(data: bytes | str) -> Any:
    """Decode JSON, leaving unstorable numbers as UNSTORABLE and strings unchecked, for
    callers that refuse part of a document (one record of a batch) rather than all of
    it; they call `find_problem` on each part. Raises InvalidJSON for what is not JSON."""
    try:
        return _decoder.decode(data)
    except RecursionError:
        raise InvalidJSON(f"The JSON is nested more than {MAX_DEPTH} levels deep.") from None
    except DecodeError as exc:
        raise InvalidJSON(_decode_error_message(data, exc)) from None
    except ValueError:  # an integer beyond Python's digit limit for conversions
        raise InvalidJSON("A number has more digits than can be stored.") from None


_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _decode_error_message(data: bytes | str, exc: DecodeError) -> str:
    # msgspec's messages give a byte position, never the text itself; say what a client
    # can act on where msgspec's words would mislead.
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if "out of range" in str(exc):
        return "A number has more digits than can be stored."
    if _LONE_SURROGATE.search(raw):
        return "The body holds an unpaired UTF-16 surrogate (\\ud800-\\udfff escape)."
    return f"The body is not valid JSON: {exc}"


_RAW_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_KEY_ENDS = re.compile(rb'"\s*:')


def split_object(data: bytes | str) -> dict[str, bytes] | None:
    """The members of a JSON object, each as its own JSON text (undecoded); None when the
    document is valid JSON but not an object. Raises InvalidJSON for what is not JSON."""
    members = _decode_raw(_RAW_OBJECT, data)
    return None if members is None else {key: bytes(raw) for key, raw in members.items()}


def split_array(data: bytes | str) -> list[bytes] | None:
    """The items of a JSON array, each as its own JSON text; None when not an array."""
    items = _decode_raw(_RAW_ARRAY, data)
    return None if items is None else [bytes(raw) for raw in items]


def _decode_raw(decoder: msgspec.json.Decoder, data: bytes | str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError:  # valid JSON, another shape
        return None
    except RecursionError:
        raise InvalidJSON(f"The JSON is nested more than {MAX_DEPTH} levels deep.") from None
    except DecodeError as exc:
        raise InvalidJSON(_decode_error_message(data, exc)) from None


def repeated_key_in(raw: bytes, decoded: dict) -> str | None:
    """`_repeated_key` for one decoded object and its text, scanning the text only when
    it could hold a repeat: every key ends in a quote and a colon, so when the text has
    no more of those than the object has keys, no key was repeated (the common case of
    a flat record costs one regex count)."""
    if len(_KEY_ENDS.findall(raw)) <= len(decoded):
        return None
    return _repeated_key(raw)


def find_problem(value: Any, where: str = "") -> tuple[str, str] | None:
    """(where, why) for the first thing in a decoded document Tally cannot store, or
    None: nesting deeper than MAX_DEPTH, an unstorable number, a NUL character."""
    stack = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                return path[:80], f"Nested more than {MAX_DEPTH} levels deep."
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if "\x00" in key:
                    return path, "A field name contains a NUL character."
                stack.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                return path[:80], f"Nested more than {MAX_DEPTH} levels deep."
            stack.extend((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                return path, "Contains a NUL character."
        elif item is UNSTORABLE or (
            isinstance(item, int) and not isinstance(item, bool) and _int_too_large(item)
        ):
            return path, "This number is too large or too precise to be stored."
    return None


def _int_too_large(value: int) -> bool:
    return value.bit_length() > 435_412  # about 131,072 decimal digits


class WithoutDatetimes(dict):
    """An answer its maker knows holds no datetime, so `dumps` writes it without looking
    (large answers: the walk costs more than the encoding)."""


def dumps(data: Any) -> bytes:
    """Encode as UTF-8 JSON bytes."""
    if type(data) is WithoutDatetimes:
        return _encoder.encode(data)
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


def format_datetime(value: datetime.datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds: 2023-07-01T00:00:00.000Z (None stays None)."""
    if value is None:
        return None
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
