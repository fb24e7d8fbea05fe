"""The SQL of simple and indexed metrics: one description of what a metric reads from a
record, used to aggregate records when asked (simple), to keep hourly rollups as
records are processed or backfilled (indexed), and to read the partial hours at the
edges of an indexed metric's timeframe. Written once, so the two query types cannot
disagree about a record.

Every value and path segment is a bound parameter; only names of our own tables and
columns are written into the SQL.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection

from collection.models import Record
from common.json import dumps_text, loads
from reporting import definitions as d
from reporting.definitions import Filter, MetricSpec, Path
from reporting.models import MetricDistinctRollup, MetricRollup

RECORDS = Record._meta.db_table
ROLLUPS = MetricRollup._meta.db_table
DISTINCT = MetricDistinctRollup._meta.db_table
PROCESSED = int(Record.Status.PROCESSED)

Sql = tuple[str, list[Any]]


@dataclass(frozen=True)
class Window:
    """[start, end) of event time; None: unbounded on that side."""

    start: datetime.datetime | None = None
    end: datetime.datetime | None = None


# -- What a record holds --------------------------------------------------------------------


def _property(path: Path) -> Sql:
    """The record's property at `path`, as jsonb (SQL NULL when absent). Keys and
    positions use their own operators: a key never matches an array position, nor a
    position an object key."""
    parts, params = ["payload"], []
    for segment in path:
        parts.append("-> %s::int" if isinstance(segment, int) else "-> %s::text")
        params.append(segment)
    return f"({' '.join(parts)})", params


_TYPED = {
    d.NUMERIC: ("number", "({p})::numeric"),
    d.STRING: ("string", "({p}) #>> '{{}}'"),
    d.BOOLEAN: ("boolean", "({p})::boolean"),
}


def _value(spec: MetricSpec) -> Sql:
    """The record's value: the property converted to the metric's type, NULL when the
    property is absent or holds another type."""
    prop, params = _property(spec.path)
    json_type, conversion = _TYPED[spec.value_type]
    sql = f"CASE WHEN jsonb_typeof({prop}) = '{json_type}' THEN {conversion.format(p=prop)} END"
    return sql, params + params


def _value_key(spec: MetricSpec) -> Sql:
    """The value as text for counting distinct values: numbers without trailing zeros
    (1.50 and 1.5 are one value), booleans as true/false."""
    value, params = _value(spec)
    if spec.value_type == d.NUMERIC:
        return f"trim_scale({value})::text", params
    if spec.value_type == d.BOOLEAN:
        return f"({value})::text", params
    return value, params


def _filter(item: Filter) -> Sql:
    prop, params = _property(item.path)
    if item.op == d.EXISTS:
        test = "<>" if item.value else "="
        return f"coalesce(jsonb_typeof({prop}), 'null') {test} 'null'", params
    if item.op in d.ORDERING_OPS:
        symbol = {d.GT: ">", d.GTE: ">=", d.LT: "<", d.LTE: "<="}[item.op]
        number = f"CASE WHEN jsonb_typeof({prop}) = 'number' THEN ({prop})::numeric END"
        return f"{number} {symbol} %s::numeric", [*params, *params, item.value]
    if item.op == d.IN:
        return f"{prop} = ANY(%s::jsonb[])", [*params, [dumps_text(each) for each in item.value]]
    symbol = "=" if item.op == d.EQ else "<>"
    return f"{prop} {symbol} %s::jsonb", [*params, dumps_text(item.value)]


def _within(column: str, window: Window) -> tuple[list[str], list[Any]]:
    """The conditions (and their parameters) that keep `column` inside `window`."""
    bounds, params = [], []
    if window.start is not None:
        bounds.append(f"{column} >= %s")
        params.append(window.start)
    if window.end is not None:
        bounds.append(f"{column} < %s")
        params.append(window.end)
    return bounds, params


def _selection(
    spec: MetricSpec,
    *,
    operator_id: uuid.UUID,
    customer_id: str | None = None,
    windows: list[Window] | None = None,
    ids: list[int] | None = None,
    id_range: tuple[int, int | None] | None = None,
) -> Sql:
    """WHERE of the records a metric reads: the operator's PROCESSED records of its
    event name passing its filters (and having a value, when it reads a property),
    narrowed to a customer and windows of event time, to ids, or to an id range."""
    conditions = ["operator_id = %s", "type = %s", f"status = {PROCESSED}"]
    params: list[Any] = [operator_id, spec.event_name]
    if customer_id is not None:
        conditions.append("customer_id = %s")
        params.append(customer_id)
    if windows is not None:
        ors = []
        for window in windows:
            bounds, bound_params = _within("event_time", window)
            ors.append(f"({' AND '.join(bounds) or 'TRUE'})")
            params.extend(bound_params)
        conditions.append(f"({' OR '.join(ors) or 'FALSE'})")
    if ids is not None:
        conditions.append("id = ANY(%s::bigint[])")
        params.append(ids)
    if id_range is not None:
        low, high = id_range
        conditions.append("id > %s")
        params.append(low)
        if high is not None:
            conditions.append("id <= %s")
            params.append(high)
    for item in spec.filters:
        sql, filter_params = _filter(item)
        conditions.append(sql)
        params.extend(filter_params)
    if spec.path:
        value, value_params = _value(spec)
        conditions.append(f"{value} IS NOT NULL")
        params.extend(value_params)
    return " AND ".join(conditions), params


# -- Values ------------------------------------------------------------------------------

# Per aggregation: the columns a part of the answer gives (from records, from rollups)
# and how the parts are combined. AVG divides in SQL, as PostgreSQL's avg() does
# (numeric_div of the sum by the count), so it agrees with a SQL metric's avg().
_RECORD_COLUMNS = {
    d.COUNT: "1::bigint AS n",
    d.SUM: "1::bigint AS n, {v} AS s",
    d.AVG: "1::bigint AS n, {v} AS s",
    d.MIN: "1::bigint AS n, {v} AS lo",
    d.MAX: "1::bigint AS n, {v} AS hi",
    d.LATEST: "1::bigint AS n, event_time AS at, id AS rid, {p} AS lv",
}
_ROLLUP_COLUMNS = {
    d.COUNT: "count AS n",
    d.SUM: "count AS n, total AS s",
    d.AVG: "count AS n, total AS s",
    d.MIN: "count AS n, smallest AS lo",
    d.MAX: "count AS n, largest AS hi",
    d.LATEST: "count AS n, latest_at AS at, latest_record AS rid, latest_value AS lv",
}
_COMBINE = {
    d.COUNT: "SELECT coalesce(sum(n), 0) FROM parts",
    d.SUM: "SELECT coalesce(sum(s), 0) FROM parts",
    d.AVG: "SELECT sum(s) / nullif(sum(n), 0) FROM parts",
    d.MIN: "SELECT min(lo) FROM parts",
    d.MAX: "SELECT max(hi) FROM parts",
    d.LATEST: "SELECT lv::text FROM parts ORDER BY at DESC, rid DESC LIMIT 1",
    d.UNIQUE_COUNT: "SELECT count(DISTINCT k) FROM parts",
}


def _records_part(spec: MetricSpec, where: Sql) -> Sql:
    where_sql, where_params = where
    if spec.aggregation == d.UNIQUE_COUNT:
        key, key_params = _value_key(spec)
        return f"SELECT {key} AS k FROM {RECORDS} WHERE {where_sql}", key_params + where_params  # noqa: S608
    columns, params = _RECORD_COLUMNS[spec.aggregation], []
    if "{v}" in columns:
        value, params = _value(spec)
        columns = columns.format(v=value)
    elif "{p}" in columns:
        prop, params = _property(spec.path)
        columns = columns.format(p=prop)
    return f"SELECT {columns} FROM {RECORDS} WHERE {where_sql}", params + where_params  # noqa: S608


def _rollup_part(spec: MetricSpec, metric_id: uuid.UUID, customer_id: str, hours: Window) -> Sql:
    bounds, params = _within("hour", hours)
    where = " AND ".join(["metric_id = %s", "customer_id = %s", *bounds])
    params = [metric_id, customer_id, *params]
    if spec.aggregation == d.UNIQUE_COUNT:
        return f"SELECT value_key AS k FROM {DISTINCT} WHERE {where}", params  # noqa: S608
    return f"SELECT {_ROLLUP_COLUMNS[spec.aggregation]} FROM {ROLLUPS} WHERE {where}", params  # noqa: S608


def _hour_floor(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime.datetime) -> datetime.datetime:
    floor = _hour_floor(moment)
    return floor if floor == moment else floor + datetime.timedelta(hours=1)


def indexed_plan(window: Window) -> tuple[Window | None, list[Window]]:
    """Split a timeframe into the whole hours read from rollups and the partial hours
    at its edges read from records."""
    hours_start = _hour_ceil(window.start) if window.start is not None else None
    hours_end = _hour_floor(window.end) if window.end is not None else None
    if hours_start is not None and hours_end is not None and hours_start >= hours_end:
        return None, [window]
    edges = []
    if window.start is not None and window.start < hours_start:
        edges.append(Window(window.start, hours_start))
    if window.end is not None and hours_end < window.end:
        edges.append(Window(hours_end, window.end))
    return Window(hours_start, hours_end), edges


def metric_compute(
    spec: MetricSpec,
    *,
    operator_id: uuid.UUID,
    customer_id: str,
    window: Window,
    rollups_of: uuid.UUID | None = None,
) -> Any:
    """The metric's value for a customer over `window`: from the records (simple), or
    with `rollups_of` (an indexed metric's id) from its rollups and the records of the
    partial hours at the window's edges."""
    parts: list[Sql] = []
    if rollups_of is None:
        hours, edges = None, [window]
    else:
        hours, edges = indexed_plan(window)
    if hours is not None:
        parts.append(_rollup_part(spec, rollups_of, customer_id, hours))
    if edges:
        where = _selection(spec, operator_id=operator_id, customer_id=customer_id, windows=edges)
        parts.append(_records_part(spec, where))
    union = " UNION ALL ".join(f"({sql})" for sql, _ in parts)
    params = [param for _, part_params in parts for param in part_params]
    with connection.cursor() as cursor:
        cursor.execute(f"WITH parts AS ({union}) {_COMBINE[spec.aggregation]}", params)
        row = cursor.fetchone()
    value = row[0] if row else None
    if spec.aggregation == d.LATEST and value is not None:
        return loads(value)
    return value


# -- Rollups of indexed metrics ----------------------------------------------------------

_HOUR = "date_trunc('hour', event_time, 'UTC')"


def rollups_add(
    spec: MetricSpec,
    *,
    metric_id: uuid.UUID,
    operator_id: uuid.UUID,
    ids: list[int] | None = None,
    id_range: tuple[int, int | None] | None = None,
) -> None:
    """Add the metric's records among `ids` (or in `id_range`) to its rollups. The
    caller makes sure no record is added twice (see MetricDefinition)."""
    where_sql, where_params = _selection(spec, operator_id=operator_id, ids=ids, id_range=id_range)
    if spec.aggregation == d.UNIQUE_COUNT:
        key, key_params = _value_key(spec)
        sql = f"""
            INSERT INTO {DISTINCT} (metric_id, customer_id, hour, value_key)
            SELECT DISTINCT %s::uuid, customer_id, {_HOUR}, {key}
            FROM {RECORDS} WHERE {where_sql}
            ORDER BY 2, 3, 4
            ON CONFLICT (metric_id, customer_id, hour, value_key) DO NOTHING
        """  # noqa: S608 (our tables; values are parameters)
        params = [metric_id, *key_params, *where_params]
    else:
        columns, column_params = _rollup_aggregates(spec)
        sql = f"""
            INSERT INTO {ROLLUPS} AS t (metric_id, customer_id, hour, count, total,
                smallest, largest, latest_at, latest_record, latest_value)
            SELECT %s::uuid, customer_id, {_HOUR}, count(*), {columns}
            FROM {RECORDS} WHERE {where_sql}
            GROUP BY 2, 3
            ORDER BY 2, 3
            ON CONFLICT (metric_id, customer_id, hour) DO UPDATE SET
                count = t.count + excluded.count,
                total = t.total + excluded.total,
                smallest = least(t.smallest, excluded.smallest),
                largest = greatest(t.largest, excluded.largest),
                latest_at = CASE WHEN {_NEWER} THEN excluded.latest_at ELSE t.latest_at END,
                latest_record = CASE WHEN {_NEWER}
                    THEN excluded.latest_record ELSE t.latest_record END,
                latest_value = CASE WHEN {_NEWER}
                    THEN excluded.latest_value ELSE t.latest_value END
        """  # noqa: S608 (our tables; values are parameters)
        params = [metric_id, *column_params, *where_params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


_NEWER = (
    "(t.latest_at IS NULL OR "
    "(excluded.latest_at, excluded.latest_record) > (t.latest_at, t.latest_record))"
)


def _rollup_aggregates(spec: MetricSpec) -> Sql:
    """total, smallest, largest, latest_at, latest_record, latest_value of one group."""
    nothing = "NULL::numeric"
    if spec.aggregation in (d.SUM, d.AVG):
        value, params = _value(spec)
        return f"sum({value}), {nothing}, {nothing}, NULL, NULL, NULL", params
    if spec.aggregation == d.MIN:
        value, params = _value(spec)
        return f"{nothing}, min({value}), {nothing}, NULL, NULL, NULL", params
    if spec.aggregation == d.MAX:
        value, params = _value(spec)
        return f"{nothing}, {nothing}, max({value}), NULL, NULL, NULL", params
    if spec.aggregation == d.LATEST:
        prop, params = _property(spec.path)
        order = "ORDER BY event_time DESC, id DESC"
        return (
            f"{nothing}, {nothing}, {nothing}, max(event_time), "
            f"(array_agg(id {order}))[1], (array_agg({prop} {order}))[1]",
            params,
        )
    return f"{nothing}, {nothing}, {nothing}, NULL, NULL, NULL", []
