"""Thresholds: the one rule set for what a threshold is, and alerts when a meter reaches one.

On the wire a threshold is `{"absoluteValue": 800}` or `{"capacityPercentage": 80}` (of
the meter's capacity, else its type's), with an optional `name` and `customFields` that
downstream systems route on. `{"value": 800}` is read as `absoluteValue`. The API
serializers, the admin forms and `thresholds_evaluate` all go through `thresholds_parse`
and `Threshold`, so a threshold that was accepted is one that can fire.

Storage (the `thresholds` JSON of meter types and meters) is
`{"kind": "absoluteValue" | "capacityPercentage", "number": "800", "name"?, "customFields"?}`:
the number is a decimal string, so no float ever touches it, and `Threshold.from_stored`
is the only reader.

A threshold is reached when the value is >= its level (for `Min` meters, <=) and fires
once per meter, period and threshold: the Alert table's unique (meter, period_start,
threshold_key) decides, so concurrent batches and retries cannot fire it twice. Each new
alert is queued as a `meter.threshold_crossed` notification in the same transaction.
"""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection

from common.json import dumps, dumps_text, normalize_decimal
from metering.models import Alert, Meter, MeterType, Notification
from metering.notifications import NotificationItem, notifications_enqueue_many

ABSOLUTE = "absoluteValue"
PERCENTAGE = "capacityPercentage"
KINDS = (ABSOLUTE, PERCENTAGE)
# Read as absoluteValue on input, never written back.
ABSOLUTE_SYNONYM = "value"
MAX_THRESHOLDS = 5
MAX_NAME_LENGTH = 100
MAX_CUSTOM_FIELDS_BYTES = 4096
# Numbers as the API takes them elsewhere (NumberField): 30 digits, 10 after the point.
MAX_DIGITS = 30
MAX_PLACES = 10

_FIELDS = {*KINDS, ABSOLUTE_SYNONYM, "name", "customFields"}


class ThresholdsInvalid(ValueError):
    """Thresholds that break a rule. `problems` are (path, message) pairs; the path is
    relative to the list: "" for the list itself, "[0]", "[0].absoluteValue"."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Threshold:
    """One threshold: an absolute level or a percentage of capacity."""

    kind: str
    number: Decimal
    name: str | None = None
    custom_fields: dict | None = None

    @property
    def key(self) -> str:
        """What makes the threshold itself, for firing once per period: its kind and
        number, and its name when it has one (two named thresholds may share a level)."""
        key = f"{self.kind}:{_plain(self.number)}"
        return f"{key}#{self.name}" if self.name is not None else key

    def level(self, capacity: Decimal | None) -> Decimal | None:
        """The meter value at which it is reached, or None when it cannot apply (a
        percentage on a meter without a capacity)."""
        if self.kind == ABSOLUTE:
            return self.number
        if capacity is None:
            return None
        return capacity * self.number / 100

    def to_stored(self) -> dict[str, Any]:
        stored: dict[str, Any] = {"kind": self.kind, "number": _plain(self.number)}
        if self.name is not None:
            stored["name"] = self.name
        if self.custom_fields is not None:
            stored["customFields"] = self.custom_fields
        return stored

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> Threshold:
        return cls(
            kind=stored["kind"],
            number=Decimal(stored["number"]),
            name=stored.get("name"),
            custom_fields=stored.get("customFields"),
        )

    def to_wire(self) -> dict[str, Any]:
        """As the API answers it: the number under its kind, name and custom fields as
        they were sent (absent when they were not)."""
        wire: dict[str, Any] = {self.kind: normalize_decimal(self.number)}
        if self.name is not None:
            wire["name"] = self.name
        if self.custom_fields is not None:
            wire["customFields"] = self.custom_fields
        return wire


def thresholds_parse(items: Any) -> list[Threshold]:
    """Thresholds from their wire form; raises ThresholdsInvalid naming every problem.

    A list of at most five objects, each with exactly one of `absoluteValue` (or its
    synonym `value`, a number >= 0) and `capacityPercentage` (a number > 0); `name` a
    string of 1 to 100 characters, unique within the list; `customFields` a JSON object
    of at most 4 KB. Numbers must be JSON numbers: strings and booleans are refused.
    """
    if not isinstance(items, list):
        raise ThresholdsInvalid([("", "Must be a list of threshold objects.")])
    if len(items) > MAX_THRESHOLDS:
        raise ThresholdsInvalid([("", f"At most {MAX_THRESHOLDS} thresholds are allowed.")])
    problems: list[tuple[str, str]] = []
    parsed: list[Threshold] = []
    names: set[str] = set()
    for index, item in enumerate(items):
        threshold, item_problems = _parse_one(item, f"[{index}]")
        if threshold is not None and threshold.name is not None:
            if threshold.name in names:
                item_problems.append(
                    (f"[{index}].name", "Another threshold in this list has this name.")
                )
            names.add(threshold.name)
        problems.extend(item_problems)
        if threshold is not None:
            parsed.append(threshold)
    if problems:
        raise ThresholdsInvalid(problems)
    return parsed


def _parse_one(item: Any, path: str) -> tuple[Threshold | None, list[tuple[str, str]]]:
    if not isinstance(item, dict):
        return None, [(path, "Must be an object.")]
    problems = [(f"{path}.{key}", "Unknown field.") for key in item if key not in _FIELDS]
    given = [key for key in (ABSOLUTE, ABSOLUTE_SYNONYM, PERCENTAGE) if key in item]
    if len(given) != 1:
        problems.append(
            (path, 'Give exactly one of "absoluteValue" (or "value") and "capacityPercentage".')
        )
        return None, problems

    (key,) = given
    kind = ABSOLUTE if key == ABSOLUTE_SYNONYM else key
    number, problem = _number(item[key], minimum_exclusive=kind == PERCENTAGE)
    if problem:
        problems.append((f"{path}.{key}", problem))

    name = item.get("name")
    if name is not None:
        if not isinstance(name, str):
            problems.append((f"{path}.name", "Must be a string."))
        elif not name.strip() or len(name) > MAX_NAME_LENGTH:
            problems.append(
                (f"{path}.name", f"Must be 1 to {MAX_NAME_LENGTH} characters, not blank.")
            )

    custom_fields = item.get("customFields")
    if custom_fields is not None:
        if not isinstance(custom_fields, dict):
            problems.append((f"{path}.customFields", "Must be a JSON object."))
        elif _json_size(custom_fields) > MAX_CUSTOM_FIELDS_BYTES:
            problems.append(
                (
                    f"{path}.customFields",
                    f"Must be at most {MAX_CUSTOM_FIELDS_BYTES} bytes as JSON.",
                )
            )
    if problems:
        return None, problems
    return Threshold(kind, number, name, custom_fields), []


def _number(value: Any, *, minimum_exclusive: bool) -> tuple[Decimal, str | None]:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return Decimal(0), "Must be a number."
    if isinstance(value, float) and not math.isfinite(value):
        return Decimal(0), "Must be a finite number."
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return Decimal(0), "Must be a number."
    if not number.is_finite():
        return number, "Must be a finite number."
    if minimum_exclusive and number <= 0:
        return number, "Must be more than 0."
    if number < 0:
        return number, "Must be 0 or more."
    # Sized before anything else touches it: 1e308 is a valid JSON number.
    places = max(0, -number.normalize().as_tuple().exponent)
    if places > MAX_PLACES or number.adjusted() >= MAX_DIGITS - MAX_PLACES:
        return number, (
            f"At most {MAX_DIGITS - MAX_PLACES} digits before the point and {MAX_PLACES} after it."
        )
    return normalize_decimal(number), None


def _json_size(value: Any) -> int:
    return len(dumps(value))


def _plain(number: Decimal) -> str:
    """800, 800.0 and 8E+2 all give "800"; 0.50 gives "0.5"."""
    return format(number.normalize(), "f")


def thresholds_to_stored(thresholds: Iterable[Threshold]) -> list[dict[str, Any]]:
    return [threshold.to_stored() for threshold in thresholds]


def thresholds_from_stored(stored: list[dict] | None) -> list[Threshold]:
    return [Threshold.from_stored(item) for item in stored or []]


def thresholds_to_wire(stored: list[dict] | None) -> list[dict[str, Any]]:
    return [threshold.to_wire() for threshold in thresholds_from_stored(stored)]


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
    for meter in meters:
        if meter.record_count <= 0:  # no value yet: nothing can have been reached
            continue
        falls = meter.meter_type.aggregation == MeterType.Aggregation.MIN
        capacity = meter.effective_capacity
        for threshold in thresholds_from_stored(meter.effective_thresholds):
            level = threshold.level(capacity)
            if level is None:
                continue
            reached = meter.value <= level if falls else meter.value >= level
            identity = (meter.pk, meter.period_start, threshold.key)
            if reached and identity not in candidates:
                candidates[identity] = Alert(
                    id=uuid.uuid4(),
                    operator_id=meter.operator_id,
                    meter_id=meter.pk,
                    period_start=meter.period_start,
                    threshold_key=threshold.key,
                    threshold_name=threshold.name or "",
                    threshold=threshold.to_stored(),
                    threshold_value=level,
                    meter_value=meter.value,
                    crossed_at=now,
                )
                meters_by_id[meter.pk] = meter
    if not candidates:
        return []

    inserted = _insert_new(list(candidates.values()))
    alerts = [alert for alert in candidates.values() if alert.id in inserted]
    notifications_enqueue_many(
        _crossed_notification(alert, meters_by_id[alert.meter_id]) for alert in alerts
    )
    return alerts


def _insert_new(alerts: list[Alert]) -> set[uuid.UUID]:
    table = Alert._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (id, operator_id, meter_id, period_start, threshold_key,
                                 threshold_name, threshold, threshold_value, meter_value,
                                 crossed_at)
            SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::timestamptz[],
                                 %s::text[], %s::text[], %s::jsonb[], %s::numeric[],
                                 %s::numeric[], %s::timestamptz[])
            ON CONFLICT (meter_id, period_start, threshold_key) DO NOTHING
            RETURNING id
            """,  # noqa: S608 (the table name is ours, values are parameters)
            [
                [alert.id for alert in alerts],
                [alert.operator_id for alert in alerts],
                [alert.meter_id for alert in alerts],
                [alert.period_start for alert in alerts],
                [alert.threshold_key for alert in alerts],
                [alert.threshold_name for alert in alerts],
                [_jsonb_text(alert.threshold) for alert in alerts],
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


def _jsonb_text(value: Any) -> str:
    return dumps_text(value)


def _crossed_notification(alert: Alert, meter: Meter) -> NotificationItem:
    threshold = Threshold.from_stored(alert.threshold)
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
            "threshold": threshold.to_wire(),
            "thresholdName": threshold.name,
            "customFields": threshold.custom_fields,
            "thresholdValue": alert.threshold_value,
            "meterValue": alert.meter_value,
            "periodStart": meter.period_start,
            "periodEnd": meter.period_end,
            "crossedAt": alert.crossed_at,
        },
    )
