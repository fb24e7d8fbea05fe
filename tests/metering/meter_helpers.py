"""Small builders for meter types and meters, shared by the reset, threshold and
notification tests."""

from __future__ import annotations

import datetime
from decimal import Decimal

from metering.models import Meter
from metering.schedule import period_bounds
from metering.services import customers_ensure
from metering.thresholds import thresholds_parse, thresholds_to_stored
from tests.factories import MeterTypeFactory


def stored(thresholds: list[dict] | None) -> list[dict] | None:
    """Thresholds in their wire form (as a client sends them), stored as the API would."""
    return None if thresholds is None else thresholds_to_stored(thresholds_parse(thresholds))


def make_type(operator, *, name="api-calls", cron="0 0 * * *", tz="Etc/UTC", **fields):
    """A meter type, through the service; `thresholds` in their wire form."""
    return MeterTypeFactory(operator=operator, name=name, reset_cron=cron, timezone=tz, **fields)


def make_meter(meter_type, *, user_id="alice", at: datetime.datetime, key="m1", **fields):
    """Scene: a meter that has counted since before the period that contains `at` (so
    that period is not its first). Time makes such a meter, not a service, so it is set
    up directly; `MeterFactory` makes new ones. `thresholds` in wire form."""
    customer = customers_ensure(operator=meter_type.operator, external_ids=[user_id])[user_id]
    start, end = period_bounds(meter_type.reset_cron, meter_type.timezone, at)
    fields.setdefault("value", Decimal(0))
    fields.setdefault("created_at", start - datetime.timedelta(days=1))
    if "thresholds" in fields:
        fields["thresholds"] = stored(fields["thresholds"])
    return Meter.objects.create(
        operator=meter_type.operator,
        meter_type=meter_type,
        customer=customer,
        meter_key=key,
        user_id=user_id,
        period_start=start,
        period_end=end,
        **fields,
    )


def utc(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=datetime.UTC)
