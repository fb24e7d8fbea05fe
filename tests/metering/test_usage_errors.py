"""Applying usage when the database refuses part of a batch: nothing of it stays.

The meters' change and the rollups are sent together (pipelined), so an error in either
only surfaces when both have been sent; it must still be Django's error, undo the whole
batch and leave the connection usable."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import DataError

from metering.models import Meter, MeterType, UsageRollup
from metering.usage import UsageUpdate, usage_apply
from tests.metering.meter_helpers import make_type, utc

pytestmark = pytest.mark.django_db

NOW = utc(2026, 3, 10, 12)
# numeric(38, 10) holds 28 digits before the point.
LARGEST = Decimal("9" * 28)


def update(meter_type, value, *, user="alice") -> UsageUpdate:
    return UsageUpdate(meter_type.pk, None, "k1", user, Decimal(value), NOW)


def test_a_batch_the_database_refuses_changes_nothing(acme):
    meter_type = make_type(acme.operator, aggregation=MeterType.Aggregation.SUM)
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "1")])

    # The meter's sum overflows; the other user's meter and its rollup would be fine.
    with pytest.raises(DataError):
        usage_apply(
            operator=acme.operator,
            now=NOW,
            updates=[update(meter_type, LARGEST), update(meter_type, "2", user="bob")],
        )

    meter = Meter.objects.get(meter_type=meter_type, user_id="alice")
    assert (meter.value, meter.record_count) == (1, 1)
    assert not Meter.objects.filter(user_id="bob").exists()
    assert list(UsageRollup.objects.values_list("user_id", "value", "record_count")) == [
        ("alice", 1, 1)
    ]
    # The connection goes on working: the next batch applies.
    usage_apply(operator=acme.operator, now=NOW, updates=[update(meter_type, "3")])
    assert Meter.objects.get(meter_type=meter_type, user_id="alice").value == 4
