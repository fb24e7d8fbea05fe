"""`transforms/data_aggregate`: records grouped by key fields, folded by operations.

Configured as the reference product's exports do it:

* `groupKeys`: `{field, operationType, alias?}`. `NONE` groups on the value itself;
  `HOUR`, `DAY`, `MONTH`, `YEAR` on the UTC period an ISO 8601 timestamp falls in,
  written as the start of the timestamp (`2024-09` for a month). The output field is the
  alias, else the field for `NONE`, else `<period>_<field>` (`month_timestamp`).
* `operations`: `{field, type, alias?}`, named `<prefix>_<field>` unless aliased:
  NUMERIC_SUM `sum_`, NUMERIC_AVERAGE `avg_`, NUMERIC_MIN `min_`, NUMERIC_MAX `max_`,
  GENERAL_COUNT `count_` (records where the field is present and not null),
  GENERAL_CARRY_FIRST `carry_first_` and GENERAL_CARRY_LAST `carry_last_` (the first and
  last value seen). Sums are exact decimals, and so are averages whose quotient ends (a
  recurring one is given to 28 significant digits). Numeric operations read numbers
  or numeric text and fail a record carrying anything else; a missing value is skipped.
* `flushType`: when a group goes downstream as one record (its group fields, its
  operation results and `createdAt`, plus `timeoutAt` when it has one):
  - `EACH_FILE`: at the end of each batch (a realtime batch, or an execution);
  - `ALL_FILES`: at the end of a batch stream's execution (a realtime stream has none,
    so enabling one with it is refused);
  - `TIMEOUT`: `timeout: {value, unit}` (`SECONDS`, `MINUTES`, `HOURS`, `DAYS`) after
    the group's session was created, sent by Beat;
  - `CONDITION`: as soon as the group's output meets `conditionalFlushConfig`
    (`{conditions: [{field, op, value}], relation: "and" | "or"}`, the split's
    operators); with a `timeout` as well, whichever comes first.

EACH_FILE and ALL_FILES groups live within their batch; TIMEOUT and CONDITION groups are
sessions of the node's aggregation store, changed in the batch's transaction.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any

from common.json import format_datetime
from streams.runtime import sessions as store
from streams.runtime.base import Emit, Function, Item, RecordFailed, function
from streams.runtime.functions.basic import ConfigurationError, condition_test
from streams.runtime.paths import MISSING, Path, get_path, parse_path, tidy_number, to_number

PERIODS = {"HOUR": 13, "DAY": 10, "MONTH": 7, "YEAR": 4}  # ISO 8601 prefix lengths
OPERATIONS = {
    "NUMERIC_SUM": "sum",
    "NUMERIC_AVERAGE": "avg",
    "NUMERIC_MIN": "min",
    "NUMERIC_MAX": "max",
    "GENERAL_COUNT": "count",
    "GENERAL_CARRY_FIRST": "carry_first",
    "GENERAL_CARRY_LAST": "carry_last",
}
FLUSH_TYPES = ("EACH_FILE", "ALL_FILES", "TIMEOUT", "CONDITION")
STORED_FLUSH_TYPES = ("TIMEOUT", "CONDITION")
TIMEOUT_UNITS = {
    "SECONDS": datetime.timedelta(seconds=1),
    "MINUTES": datetime.timedelta(minutes=1),
    "HOURS": datetime.timedelta(hours=1),
    "DAYS": datetime.timedelta(days=1),
}


def timeout_of(params: dict[str, Any], where: str = "timeout") -> datetime.timedelta | None:
    """`{value, unit}` as a duration; None when not configured."""
    spec = params.get("timeout")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ConfigurationError(f"{where} must be an object {{value, unit}}")
    value, unit = spec.get("value"), str(spec.get("unit") or "").upper()
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{where}.value must be a positive whole number")
    if unit not in TIMEOUT_UNITS:
        raise ConfigurationError(f"{where}.unit must be one of {', '.join(TIMEOUT_UNITS)}")
    return TIMEOUT_UNITS[unit] * value


def truncate(value: Any, period: str) -> str:
    """The UTC period of an ISO 8601 timestamp, as the start of its text."""
    if not isinstance(value, str):
        raise RecordFailed(f"needs an ISO 8601 timestamp to group by {period}, got {value!r}")
    text = value.strip()
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise RecordFailed(f"{value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H")[: PERIODS[period]]


@dataclass(frozen=True)
class GroupKey:
    path: Path
    field: str
    period: str | None  # None for NONE
    output: str

    def value(self, payload: Any) -> Any:
        raw = get_path(payload, self.path, MISSING)
        if self.period is None:
            return None if raw is MISSING else raw
        if raw is MISSING or raw is None:
            raise RecordFailed(f"group field {self.field!r} is missing")
        try:
            return truncate(raw, self.period)
        except RecordFailed as failure:
            raise RecordFailed(f"group field {self.field!r}: {failure.reason}") from None


@dataclass(frozen=True)
class Operation:
    path: Path
    field: str
    kind: str  # a value of OPERATIONS
    output: str

    def read(self, payload: Any) -> Any:
        """The record's contribution, MISSING when it has none."""
        raw = get_path(payload, self.path, MISSING)
        if raw is MISSING or raw is None:
            return MISSING
        if self.kind in ("sum", "avg", "min", "max"):
            number = to_number(raw)
            if number is None:
                raise RecordFailed(f"{self.output}: {self.field!r} is not a number ({raw!r})")
            return number
        return raw


def _add(left: Any, right: Any) -> Any:
    return right if left is None else left + right


def fold(kind: str, partial: Any, value: Any) -> Any:
    """One operation's partial result with one more value (never MISSING)."""
    if kind == "sum":
        return _add(partial, value)
    if kind == "count":
        return (partial or 0) + 1
    if kind == "min":
        return value if partial is None or value < partial else partial
    if kind == "max":
        return value if partial is None or value > partial else partial
    if kind == "avg":
        total, count = partial or (0, 0)
        return (total + value, count + 1)
    if kind == "carry_first":
        return partial if partial is not None else (value,)
    return (value,)  # carry_last


def merge(kind: str, earlier: Any, later: Any) -> Any:
    """Two partial results of one operation, `earlier` first (None: nothing yet)."""
    if earlier is None:
        return later
    if later is None:
        return earlier
    if kind in ("sum", "count"):
        return earlier + later
    if kind == "min":
        return min(earlier, later)
    if kind == "max":
        return max(earlier, later)
    if kind == "avg":
        return (earlier[0] + later[0], earlier[1] + later[1])
    if kind == "carry_first":
        return earlier
    return later


def result(kind: str, partial: Any) -> Any:
    """What an operation's output field shows."""
    if kind in ("sum", "count"):
        return partial if partial is not None else 0
    if kind == "avg":
        if partial is None:
            return None
        total, count = partial
        return tidy_number(Decimal(total) / Decimal(count))
    if kind in ("carry_first", "carry_last"):
        return partial[0] if partial is not None else None
    return partial


def _partial_to_json(kind: str, partial: Any) -> Any:
    if partial is None:
        return None
    if kind == "avg":
        return {"sum": partial[0], "n": partial[1]}
    if kind in ("carry_first", "carry_last"):
        return {"value": partial[0]}
    return partial


def _partial_from_json(kind: str, stored: Any) -> Any:
    if stored is None:
        return None
    if kind == "avg":
        return (stored["sum"], stored["n"])
    if kind in ("carry_first", "carry_last"):
        return (stored["value"],)
    return stored


@dataclass
class Group:
    """One group of this batch: its key values, operation partials, and the origin of
    the last record that joined it (a flushed group is that record's doing)."""

    key: str
    values: list[Any]
    partials: list[Any]
    count: int = 0
    origin: int = 0


@function("transforms/data_aggregate")
class DataAggregate(Function):
    @cached_property
    def config(self) -> tuple[list[GroupKey], list[Operation], str]:
        params = self.params
        keys = []
        for index, spec in enumerate(params.get("groupKeys") or []):
            where = f"groupKeys[{index}]"
            name = str(spec.get("field") or "")
            period = str(spec.get("operationType") or "NONE").upper()
            if not name:
                raise ConfigurationError(f"{where}: field is required")
            if period != "NONE" and period not in PERIODS:
                raise ConfigurationError(
                    f"{where}: operationType must be NONE or one of {', '.join(PERIODS)}"
                )
            default = name if period == "NONE" else f"{period.lower()}_{name}"
            keys.append(
                GroupKey(
                    parse_path(name),
                    name,
                    None if period == "NONE" else period,
                    spec.get("alias") or default,
                )
            )
        if not keys:
            raise ConfigurationError("groupKeys needs at least one field")
        operations = []
        for index, spec in enumerate(params.get("operations") or []):
            where = f"operations[{index}]"
            name = str(spec.get("field") or "")
            kind = OPERATIONS.get(str(spec.get("type") or "").upper())
            if not name:
                raise ConfigurationError(f"{where}: field is required")
            if kind is None:
                raise ConfigurationError(f"{where}: type must be one of {', '.join(OPERATIONS)}")
            operations.append(
                Operation(parse_path(name), name, kind, spec.get("alias") or f"{kind}_{name}")
            )
        flush_type = str(params.get("flushType") or "").upper()
        if flush_type not in FLUSH_TYPES:
            raise ConfigurationError(f"flushType must be one of {', '.join(FLUSH_TYPES)}")
        if flush_type == "TIMEOUT" and timeout_of(params) is None:
            raise ConfigurationError("flushType TIMEOUT needs timeout: {value, unit}")
        return keys, operations, flush_type

    @cached_property
    def condition(self) -> Callable[[dict[str, Any]], bool] | None:
        if self.config[2] != "CONDITION":
            return None
        spec = self.params.get("conditionalFlushConfig")
        if not isinstance(spec, dict) or not spec.get("conditions"):
            raise ConfigurationError("flushType CONDITION needs conditionalFlushConfig.conditions")
        tests = []
        for index, condition in enumerate(spec["conditions"]):
            where = f"conditionalFlushConfig.conditions[{index}]"
            if not isinstance(condition, dict) or not condition.get("field"):
                raise ConfigurationError(f"{where}: field is required")
            test = condition_test(condition.get("op"), condition.get("value"), where)
            tests.append((parse_path(str(condition["field"])), test))
        combine = any if str(spec.get("relation") or "and").lower() == "or" else all
        return lambda output: combine(test(get_path(output, path)) for path, test in tests)

    def process(self, items: list[Item], emit: Emit) -> None:
        keys, operations, flush_type = self.config
        groups: dict[str, Group] = {}
        for item in items:
            try:
                values = [key.value(item.payload) for key in keys]
                contributions = [operation.read(item.payload) for operation in operations]
            except RecordFailed as failure:
                emit.fail(item, failure.reason)
                continue
            key = store.session_key(values)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group(key, values, [None] * len(operations))
            for index, (operation, value) in enumerate(zip(operations, contributions, strict=True)):
                if value is not MISSING:
                    group.partials[index] = fold(operation.kind, group.partials[index], value)
            group.count += 1
            group.origin = item.origin
        self._groups = groups
        if flush_type in STORED_FLUSH_TYPES and groups:
            self._merge_stored(groups, emit)

    def finish(self, emit: Emit, *, end_of_execution: bool) -> None:
        flush_type = self.config[2]
        groups = getattr(self, "_groups", {})
        if flush_type == "EACH_FILE" or (flush_type == "ALL_FILES" and end_of_execution):
            for group in groups.values():
                output = self._output(group, created_at=self.ctx.now, timeout_at=None)
                emit(Item(output, group.origin))

    # -- stored sessions ----------------------------------------------------------------

    def _merge_stored(self, groups: dict[str, Group], emit: Emit) -> None:
        operations = self.config[1]
        ctx = self.ctx
        store_id = ctx.keys.get("storeId")
        if store_id is None:
            raise ConfigurationError("this node has no aggregation store")
        timeout = timeout_of(self.params)
        wanted = {key: group.values for key, group in groups.items()}
        stored = store.sessions_for(ctx, store_id=store_id, keys=wanted, timeout=timeout)
        now_text = format_datetime(ctx.now)
        flushed: list[tuple[Group, store.StoredSession, dict[str, Any]]] = []
        kept: list[store.StoredSession] = []
        for key, group in groups.items():
            session = stored.get(key) or store.StoredSession(
                None,
                key,
                group.values,
                {},
                {"count": 0},
                ctx.now,
                ctx.now + timeout if timeout else None,
            )
            partials = session.meta.get("partials") or {}
            for index, operation in enumerate(operations):
                earlier = _partial_from_json(operation.kind, partials.get(operation.output))
                group.partials[index] = merge(operation.kind, earlier, group.partials[index])
            meta = dict(session.meta)
            meta["count"] = int(meta.get("count") or 0) + group.count
            meta.setdefault("firstEvent", now_text)
            meta["lastEvent"] = now_text
            meta["partials"] = {
                operation.output: _partial_to_json(operation.kind, partial)
                for operation, partial in zip(operations, group.partials, strict=True)
            }
            output = self._output(group, created_at=session.created_at, timeout_at=None)
            session.data = {
                name: value
                for name, value in output.items()
                if name not in ("createdAt", "timeoutAt")
            }
            session.meta = meta
            if self.condition is not None and self.condition(output):
                flushed.append((group, session, output))
            else:
                kept.append(session)
            if not ctx.side_effects:
                ctx.changes.append({"store": store_id, "key": key, "data": session.data})
        if ctx.side_effects:
            store.sessions_save(kept, now=ctx.now)
            won = store.sessions_flush(
                operator_id=ctx.operator_id,
                store_id=store_id,
                sessions=[session for _, session, _ in flushed],
                flush_type="CONDITION",
                now=ctx.now,
            )
        else:
            won = {session.id for _, session, _ in flushed}
        for group, session, output in flushed:
            if session.id is None or session.id in won:
                if session.timeout_at is not None:
                    output["timeoutAt"] = format_datetime(session.timeout_at)
                emit(Item(output, group.origin))

    def _output(self, group: Group, *, created_at, timeout_at) -> dict[str, Any]:
        keys, operations, _ = self.config
        output: dict[str, Any] = {}
        for key, value in zip(keys, group.values, strict=True):
            output[key.output] = value
        for operation, partial in zip(operations, group.partials, strict=True):
            output[operation.output] = result(operation.kind, partial)
        output["createdAt"] = format_datetime(created_at)
        if timeout_at is not None:
            output["timeoutAt"] = format_datetime(timeout_at)
        return output
