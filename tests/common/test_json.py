"""common.json: one JSON library, exact decimals both ways, one timestamp format."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pytest

from common.json import (
    DecodeError,
    ExactJSONDecoder,
    ExactJSONEncoder,
    dumps,
    dumps_pretty,
    encode,
    format_datetime,
    loads,
    normalize_decimal,
)

MOMENT = datetime.datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=datetime.UTC)


def test_fractions_decode_as_exact_decimals_and_integers_stay_integers():
    decoded = loads(b'{"a": 0.1, "b": 12345678901234567890.123456789, "c": 7, "d": 1e3}')
    assert decoded == {
        "a": Decimal("0.1"),
        "b": Decimal("12345678901234567890.123456789"),
        "c": 7,
        "d": Decimal("1E+3"),
    }
    assert isinstance(decoded["c"], int)


@pytest.mark.parametrize("text", [b"", b"{", b"[NaN]", b"[Infinity]", b"{'a': 1}", b"\xff"])
def test_anything_that_is_not_json_is_a_decode_error(text):
    with pytest.raises(DecodeError):
        loads(text)


def test_decimals_are_written_with_their_own_digits():
    total = Decimal("1.1") + Decimal("2.2")
    assert dumps({"total": total, "big": Decimal("12345678901234567890.5")}) == (
        b'{"total":3.3,"big":12345678901234567890.5}'
    )


def test_datetimes_leave_in_the_api_format_wherever_they_are():
    data = {"at": MOMENT, "nested": [{"at": MOMENT}, (MOMENT,)], "id": uuid.UUID(int=1)}
    assert loads(dumps(data)) == {
        "at": "2026-05-01T12:30:15.123Z",
        "nested": [{"at": "2026-05-01T12:30:15.123Z"}, ["2026-05-01T12:30:15.123Z"]],
        "id": "00000000-0000-0000-0000-000000000001",
    }
    assert data["at"] is MOMENT  # the caller's data is not changed


def test_encode_keeps_microseconds_for_the_database():
    assert encode({"at": MOMENT}) == b'{"at":"2026-05-01T12:30:15.123456Z"}'


def test_format_and_normalize():
    berlin = MOMENT.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert format_datetime(berlin) == "2026-05-01T12:30:15.123Z"
    assert str(normalize_decimal(Decimal("1000.000"))) == "1000"
    assert str(normalize_decimal(Decimal("0.50"))) == "0.5"
    assert dumps_pretty({"a": [1]}) == '{\n  "a": [\n    1\n  ]\n}'


def test_model_json_fields_round_trip_exact_numbers():
    text = ExactJSONEncoder().encode({"rate": Decimal("0.1")})
    assert text == '{"rate":0.1}'
    assert ExactJSONDecoder().decode(text) == {"rate": Decimal("0.1")}
