"""How a meter type's values combine: Sum and Increment add (Increment adds 1 per
record), Max and Min keep the extreme. Shared by the usage writer and revenue."""

from __future__ import annotations

from decimal import Decimal

from metering.models import MeterType

ADD, MAX, MIN = "add", "max", "min"
KIND = {
    MeterType.Aggregation.SUM: ADD,
    MeterType.Aggregation.INCREMENT: ADD,
    MeterType.Aggregation.MAX: MAX,
    MeterType.Aggregation.MIN: MIN,
}


def combine(kind: str, old: Decimal | None, new: Decimal) -> Decimal:
    """Combine two values of one aggregation; None means "no value yet", so the first
    Max or Min is the value itself rather than a comparison with zero."""
    if old is None:
        return new
    if kind == ADD:
        return old + new
    if kind == MAX:
        return new if new > old else old
    return new if new < old else old
