"""Thresholds: alerts when a meter's value reaches a configured level in its period.

A threshold is `{"value": 800}` (absolute) or `{"capacityPercentage": 80}` (of the
meter's capacity, else its type's). It is reached when the value is >= the level (for
`Min` meters, <=), and fires once per meter, period and threshold: the Alert table's
unique (meter, period_start, threshold_key) decides, so concurrent batches and retries
cannot fire it twice. Each new alert is queued as a `meter.threshold_crossed`
notification in the same transaction.
"""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db import connection

from metering.models import Alert, Meter, MeterType, Notification
from metering.notifications import NotificationItem, notifications_enqueue_many

THRESHOLD_KINDS = ("value", "capacityPercentage")


def threshold_problem(item: Any) -> str | None:
    """Why `item` is not a valid threshold object, or None.

    Exactly one of `value` (a number >= 0) or `capacityPercentage` (a number > 0).
    Booleans and numeric strings are refused: quantities are JSON numbers.
    """
    if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in THRESHOLD_KINDS:
        return 'Must be an object with exactly one key: "value" or "capacityPercentage".'
    ((kind, number),) = item.items()
    if not _is_number(number):
        return f'"{kind}" must be a number.'
    if kind == "value" and number < 0:
        return '"value" must be 0 or more.'
    if kind == "capacityPercentage" and number <= 0:
        return '"capacityPercentage" must be more than 0.'
    return None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False
    return value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)


def _decimal(number: int | float | Decimal) -> Decimal:
    return number if isinstance(number, Decimal) else Decimal(str(number))


def _plain(number: Decimal) -> str:
    """800, 800.0 and 8E+2 all give "800"; 0.50 gives "0.5"."""
    return format(number.normalize(), "f")


def threshold_target(item: dict, capacity: Decimal | None) -> tuple[str, Decimal] | None:
    """(key, level) of one threshold for a meter with this capacity, or None when it
    cannot apply (a percentage without a capacity, or an invalid item)."""
    if threshold_problem(item) is not None:
        return None
    ((kind, number),) = item.items()
    number = _decimal(number)
    if kind == "value":
        return f"value:{_plain(number)}", number
    if capacity is None:
        return None
    return f"capacityPercentage:{_plain(number)}", capacity * number / 100


def thresholds_evaluate(*, meters: Iterable[Meter], now: datetime.datetime) -> list[Alert]:
    """Record the thresholds these meters have reached in their current period.

    Call it in the transaction that changed the meters (with `meter_type` loaded).
    Returns the alerts fired now; thresholds that already fired this period are left
    alone.

    1. For each meter with at least one record this period, compare its value with each
       effective threshold (the meter's own list if set, else its type's).
    2. Insert the reached ones in one INSERT … ON CONFLICT DO NOTHING RETURNING, so only
       alerts that are new come back.
    3. Queue a notification for each new alert.
    """
    candidates: dict[tuple, Alert] = {}
    meters_by_id: dict[Any, Meter] = {}
    thresholds_by_key: dict[tuple, dict] = {}
    for meter in meters:
        if meter.record_count <= 0:  # no value yet: nothing can have been reached
            continue
        meter_type = meter.meter_type
        capacity = meter.effective_capacity
        for item in meter.effective_thresholds or []:
            target = threshold_target(item, capacity)
            if target is None:
                continue
            key, level = target
            if meter_type.aggregation == MeterType.Aggregation.MIN:
                reached = meter.value <= level
            else:
                reached = meter.value >= level
            identity = (meter.pk, meter.period_start, key)
            if reached and identity not in candidates:
                candidates[identity] = Alert(
                    id=uuid.uuid4(),
                    operator_id=meter.operator_id,
                    meter_id=meter.pk,
                    period_start=meter.period_start,
                    threshold_key=key,
                    threshold_value=level,
                    meter_value=meter.value,
                    crossed_at=now,
                )
                meters_by_id[meter.pk] = meter
                thresholds_by_key[identity] = item
    if not candidates:
        return []

    inserted = _insert_new(list(candidates.values()))
    alerts = [alert for alert in candidates.values() if alert.id in inserted]
    notifications_enqueue_many(
        _crossed_notification(
            alert,
            meters_by_id[alert.meter_id],
            thresholds_by_key[(alert.meter_id, alert.period_start, alert.threshold_key)],
        )
        for alert in alerts
    )
    return alerts


def _insert_new(alerts: list[Alert]) -> set[uuid.UUID]:
    table = Alert._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (id, operator_id, meter_id, period_start, threshold_key,
                                 threshold_value, meter_value, crossed_at)
            SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::timestamptz[],
                                 %s::text[], %s::numeric[], %s::numeric[], %s::timestamptz[])
            ON CONFLICT (meter_id, period_start, threshold_key) DO NOTHING
            RETURNING id
            """,  # noqa: S608 (the table name is ours, values are parameters)
            [
                [alert.id for alert in alerts],
                [alert.operator_id for alert in alerts],
                [alert.meter_id for alert in alerts],
                [alert.period_start for alert in alerts],
                [alert.threshold_key for alert in alerts],
                [alert.threshold_value for alert in alerts],
                [alert.meter_value for alert in alerts],
                [alert.crossed_at for alert in alerts],
            ],
        )
        inserted = {row[0] for row in cursor.fetchall()}
    for alert in alerts:
        alert._state.adding = False
        alert._state.db = connection.alias
    return inserted


def _crossed_notification(alert: Alert, meter: Meter, threshold: dict) -> NotificationItem:
    return NotificationItem(
        alert.operator_id,
        Notification.Kind.THRESHOLD_CROSSED,
        {
            "alertId": alert.id,
            "meterId": meter.pk,
            "meterTypeId": meter.meter_type_id,
            "meterTypeName": meter.meter_type.name,
            "userId": meter.user_id,
            "meterKey": meter.meter_key,
            "threshold": {kind: _decimal(number) for kind, number in threshold.items()},
            "thresholdValue": alert.threshold_value,
            "meterValue": alert.meter_value,
            "periodStart": meter.period_start,
            "periodEnd": meter.period_end,
            "crossedAt": alert.crossed_at,
        },
    )
