"""`transforms/meter`: the meter processor.

Each record needs `userId` and `value` (and may carry `timestamp`, ISO 8601 or Unix
milliseconds; without one it counts now). The guiding rules are tried in order: a rule
whose conditions hold (all of them with `and`, any with `or`; `ignoreCondition` means no
condition) places the record on every meter of this node (`meterKey`) and the record's
user whose meter type is in the rule's `matchCategory`. When the user has no such meter,
the next rule is tried; a record no rule places is failed, never dropped: meters are
provisioned through the API, not made up by the stream.

The usage of the whole batch goes to `usage_apply` in one call. Thresholds crossed by it
leave through the `threshold` output as the meter's fields plus `thresholdReached`. When
a meter's period closes, the reset writes a pending flush that `flushes_run` sends down
the `reset` output (see streams.runtime.runner). With a flush type of stream execution,
the node closes its meters' periods at the end of each batch execution instead.
"""

from __future__ import annotations

import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection

from collection.rules import MAX_RECORD_LEAD
from metering.models import Meter, MeterType
from metering.usage import UsageUpdate, usage_apply
from streams.runtime.base import Emit, Function, Item, fixed_output_id, function
from tenants.models import Operator

# Clocks of senders drift: a timestamp as far ahead as ingestion accepts still counts.
FUTURE_TOLERANCE = MAX_RECORD_LEAD
_EXECUTION_FLUSHES = ("STREAM_EXECUTION", "EXECUTION", "END_OF_EXECUTION", "EXECUTION_END")


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _timestamp(value: Any) -> datetime.datetime | str | None:
    """The event time, None when absent, or an error message."""
    if value is None or value == "":
        return None
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(float(value) / 1000, tz=datetime.UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return datetime.datetime.fromtimestamp(int(text) / 1000, tz=datetime.UTC)
        try:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return f"timestamp {value!r} is neither ISO 8601 nor Unix milliseconds"
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
    return f"timestamp {value!r} is neither ISO 8601 nor Unix milliseconds"


def _field(payload: dict, path: str) -> Any:
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _condition_holds(payload: dict, condition: dict) -> bool:
    actual = _field(payload, str(condition.get("field") or ""))
    expected = condition.get("value")
    if isinstance(expected, bool) or isinstance(actual, bool):
        return _text(actual) == _text(expected)
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None and not isinstance(actual, str):
        return left == right
    return _text(actual) == _text(expected)  # matching is case-sensitive


def _rule_applies(payload: dict, rule: dict) -> bool:
    if rule.get("ignoreCondition"):
        return True
    conditions = [c for c in rule.get("conditions") or [] if isinstance(c, dict) and c.get("field")]
    if not conditions:
        return True
    results = (_condition_holds(payload, condition) for condition in conditions)
    return any(results) if rule.get("conditionRelation") == "or" else all(results)


def _names(entries: Any) -> list[str]:
    """Field names from a list of strings or of objects naming a `field`."""
    names = []
    for entry in entries or []:
        if isinstance(entry, str) and entry:
            names.append(entry)
        elif isinstance(entry, dict):
            name = entry.get("field") or entry.get("value") or entry.get("name")
            if isinstance(name, str) and name:
                names.append(name)
    return names


def _carried(payload: dict, rule: dict) -> dict | None:
    """The fields the rule's carry operations keep (carryFirst / carryLast)."""
    fields: list[str] = []
    for operation in rule.get("otherOperations") or []:
        if isinstance(operation, dict):
            fields += _names(operation.get("fields") or [operation])
    if not fields:
        return None
    return {name: _field(payload, name) for name in fields}


@function("transforms/meter")
class MeterFunction(Function):
    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.meter_key = ctx.keys.get("meterKey") or ""
        self.rules = [
            rule for rule in self.params.get("guidingRules") or [] if isinstance(rule, dict)
        ]
        self.threshold_output = fixed_output_id(ctx.node, "threshold")

    def process(self, items: list[Item], emit: Emit) -> None:
        parsed = []
        for item in items:
            payload = item.payload if isinstance(item.payload, dict) else {}
            user_id = _text(payload.get("userId"))
            if not user_id:
                emit.fail(item, "The record has no userId.")
                continue
            value = _number(payload.get("value"))
            if value is None:
                emit.fail(item, f"The record's value {payload.get('value')!r} is not a number.")
                continue
            at = _timestamp(payload.get("timestamp"))
            if isinstance(at, str):
                emit.fail(item, f"The record's {at}.")
                continue
            at = at or self.ctx.now
            if at > self.ctx.now + FUTURE_TOLERANCE:
                emit.fail(item, f"The record's timestamp {at.isoformat()} is in the future.")
                continue
            parsed.append((item, payload, user_id, value, at))
        if not parsed:
            return

        categories = {str(rule.get("matchCategory")) for rule in self.rules}
        # The user's meters of this node, by category. The category's types first (few
        # rows), then the meters by the unique (type, key, user) index, as plain tuples.
        types = {
            meter_type.pk: meter_type
            for meter_type in MeterType.objects.filter(
                operator_id=self.ctx.operator_id, category__in=categories
            ).order_by("name", "id")
        }
        meters: dict[tuple[str, str], list[tuple[str, MeterType]]] = {}
        if types:
            users = sorted({user_id for _, _, user_id, _, _ in parsed})
            with connection.cursor() as cursor:
                # Arrays, not IN lists: one parameter each however large the batch.
                cursor.execute(
                    f"""
                    SELECT id::text, user_id, meter_type_id FROM {Meter._meta.db_table}
                    WHERE meter_type_id = ANY(%s::uuid[]) AND meter_key = %s
                      AND user_id = ANY(%s::text[])
                    ORDER BY meter_type_id
                    """,  # noqa: S608 (our table)
                    [list(types), self.meter_key, users],
                )
                found = cursor.fetchall()
            for meter_id, user_id, type_id in found:
                meter_type = types[type_id]
                meters.setdefault((user_id, meter_type.category), []).append((meter_id, meter_type))

        updates: list[UsageUpdate] = []
        last_origin: dict[str, int] = {}  # meter id -> the last record that moved it
        for item, payload, user_id, value, at in parsed:
            placed = None
            for rule in self.rules:
                if not _rule_applies(payload, rule):
                    continue
                targets = meters.get((user_id, str(rule.get("matchCategory"))))
                if targets:
                    placed = (rule, targets)
                    break
            if placed is None:
                wanted = ", ".join(sorted(categories)) or "none"
                emit.fail(
                    item,
                    f"No meter for user {user_id} in category {wanted} "
                    f"(meter key {self.meter_key}).",
                )
                continue
            rule, targets = placed
            inactive = [t.name for _, t in targets if not t.is_active_at(at)]
            if inactive:
                emit.fail(item, f"Meter type {inactive[0]} is not active at {at.isoformat()}.")
                continue
            groups = _names(rule.get("groupBy"))
            group = (
                "/".join(_text(_field(payload, name)) or "" for name in groups) if groups else None
            )
            carried = _carried(payload, rule)
            # Revenue goes to the billing account the record names (metering.revenue).
            account_id = payload.get("accountId")
            account_id = account_id if isinstance(account_id, str) and account_id else None
            for meter_id, meter_type in targets:
                updates.append(
                    UsageUpdate(
                        meter_type_id=meter_type.pk,
                        category=None,
                        meter_key=self.meter_key,
                        user_id=user_id,
                        value=value,
                        event_time=at,
                        group=group,
                        record=carried,
                        account_id=account_id,
                    )
                )
                last_origin[meter_id] = item.origin
                self.ctx.changes.append(
                    {
                        "nodeId": self.ctx.node_id,
                        "meterId": meter_id,
                        "meterTypeId": str(meter_type.pk),
                        "userId": user_id,
                        "value": value,
                        "timestamp": at,
                    }
                )
        if not updates or not self.ctx.side_effects:
            return
        operator = Operator.objects.get(pk=self.ctx.operator_id)
        result = usage_apply(operator=operator, updates=updates, now=self.ctx.now)
        if result.alerts and self.threshold_output:
            for record, meter_id in threshold_records(result.alerts):
                origin = last_origin.get(meter_id)
                if origin is not None:
                    emit(Item(record, origin), self.threshold_output)

    def finish(self, emit: Emit, *, end_of_execution: bool) -> None:
        flush = str(self.params.get("flushType") or "").upper()
        if end_of_execution and flush in _EXECUTION_FLUSHES and self.ctx.side_effects:
            meters_flush_now(
                operator_id=self.ctx.operator_id, meter_key=self.meter_key, now=self.ctx.now
            )


def _exact_groups(breakdowns: dict) -> list[dict[str, Any]]:
    return [
        {"group": group, "value": Decimal(value)} for group, value in sorted(breakdowns.items())
    ]


def meter_record(meter: Meter) -> dict[str, Any]:
    """A meter's fields as the API answers them (camelCase, exact numbers)."""
    from metering.api.serializers import MeterSerializer

    return dict(MeterSerializer(meter).data)


def threshold_records(alerts) -> list[tuple[dict, str]]:
    """For each new alert: the meter's fields plus `thresholdReached`, and the meter id."""
    from metering.thresholds import Threshold

    ids = {alert.meter_id for alert in alerts if alert.meter_id}
    meters = {m.pk: m for m in Meter.objects.filter(pk__in=ids).select_related("meter_type")}
    records = []
    for alert in alerts:
        meter = meters.get(alert.meter_id)
        if meter is None:
            continue
        record = meter_record(meter)
        reached: dict[str, Any] = {}
        if alert.threshold:
            threshold = Threshold.from_stored(alert.threshold)
            reached = {
                **threshold.to_wire(),
                "name": threshold.name,
                "kind": threshold.kind,
                "number": threshold.number,
                "customFields": threshold.custom_fields or {},
            }
        record["thresholdReached"] = reached
        records.append((record, str(meter.pk)))
    return records


def meters_flush_now(*, operator_id, meter_key: str, now: datetime.datetime) -> int:
    """Close the current period of every meter of this node at `now` (a flush at the end
    of a stream execution): the period ends now and the next one runs to the schedule's
    next fire."""
    from metering.resets import meters_close_periods

    meters = list(
        Meter.objects.select_for_update()
        .filter(operator_id=operator_id, meter_key=meter_key, period_start__lt=now)
        .select_related("meter_type")
        .order_by("id")
    )
    if not meters:
        return 0
    Meter.objects.filter(pk__in=[m.pk for m in meters]).update(period_end=now)
    for meter in meters:
        meter.period_end = now
    return meters_close_periods(meters=meters, now=now).periods_closed
