"""Answering metrics queries from rollups, never from records.

Where each metric is read:

* `EVENTS`: record counts by hour. Without a customer or account filter (or an account
  grouping) from the per-collector rollup, otherwise from the per-customer one; both
  plus the deltas not folded yet, so counts are exact at every moment.
* `USAGE`, `REVENUE`: hourly usage and revenue. Without a customer or account filter or
  grouping from the per-meter-type rollup (one row per type and hour), otherwise from
  the per-customer one. `INVOICE` revenue needs the account, so always the latter.
* `*_FOR_CYCLE`: the cycle rollup, by cycle start.

How values roll up: within one meter type, Sum and Increment types add and Max and Min
types keep the extreme (across hours and across customers alike); a series over several
meter types adds the types' values. Revenue and event counts always add.
"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection

from collection.models import CustomerEventRollup, EventRollup, EventRollupDelta, Record
from common.ids import uuid_or_none
from common.json import normalize_decimal
from metering.models import (
    VALUE_PLACES,
    BillingAccount,
    CycleRollup,
    ExchangeRate,
    MeterType,
    UsageRollup,
    UsageTypeRollup,
)
from metering.selectors import customer_cycles_on
from reporting import definitions, measures
from reporting.metrics import (
    ACCOUNT_ID,
    CUSTOMER_ID,
    CYCLE_METRICS,
    EVENT_STATUS,
    EVENTS,
    INVOICE,
    REVENUE,
    REVENUE_FOR_CYCLE,
    SCHEMA_NAME,
    USAGE_METER_ID,
    MetricQuery,
    MetricsInvalid,
    buckets,
)
from reporting.models import MetricDefinition
from tenants.models import Operator

ZERO = Decimal(0)
_PLACES = Decimal(1).scaleb(-VALUE_PLACES)
_STATUS_CODES = {status.label: int(status.value) for status in Record.Status}
_STATUS_NAMES = {code: name for name, code in _STATUS_CODES.items()}


@dataclass(frozen=True)
class Series:
    """One line of an answer: its group (field name and value), or None ungrouped."""

    group: tuple[str, str] | None
    values: list[Decimal]


@dataclass(frozen=True)
class MetricResult:
    id: str
    name: str
    timestamps: list[datetime.datetime]
    series: list[Series]


def metrics_answer(
    *,
    operator: Operator,
    start: datetime.datetime,
    end: datetime.datetime,
    queries: Iterable[MetricQuery],
) -> list[MetricResult]:
    """Every query's answer, in the order asked. Raises MetricsInvalid (paths relative
    to `metricQueries[<index>]`) for filters that name what the operator does not have
    in a way that cannot be answered (an unknown meter type; INVOICE revenue without a
    rate)."""
    context = _Context(operator)
    results = []
    for index, query in enumerate(queries):
        try:
            results.append(_answer(context, start, end, query))
        except MetricsInvalid as invalid:
            raise MetricsInvalid(
                [
                    (f"metricQueries[{index}].{where}", message)
                    for where, message in invalid.problems
                ]
            ) from invalid
    return results


class _Context:
    """What several queries of one request share: the operator's meter types."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self._types: dict[str, tuple[str, str]] | None = None

    @property
    def types(self) -> dict[str, tuple[str, str]]:
        """Meter type id -> (name, aggregation)."""
        if self._types is None:
            self._types = {
                str(pk): (name, aggregation)
                for pk, name, aggregation in MeterType.objects.filter(
                    operator=self.operator
                ).values_list("id", "name", "aggregation")
            }
        return self._types

    def type_ids(self, values: Iterable[str], where: str) -> list[str]:
        """Meter types named by name or id; an unknown one (another operator's too) is
        a 400, not an empty answer."""
        by_name = {name: pk for pk, (name, _) in self.types.items()}
        found = []
        for value in values:
            as_id = uuid_or_none(value)
            pk = str(as_id) if as_id is not None and str(as_id) in self.types else None
            pk = pk or by_name.get(value)
            if pk is None:
                raise MetricsInvalid([(where, f"Unknown meter type {value!r}.")])
            found.append(pk)
        return found


def _answer(
    context: _Context, start: datetime.datetime, end: datetime.datetime, query: MetricQuery
) -> MetricResult:
    filters = dict(query.filters)
    if USAGE_METER_ID in filters:
        where = f"filters[{list(query.filters).index(USAGE_METER_ID)}].fieldValues"
        filters[USAGE_METER_ID] = tuple(context.type_ids(filters[USAGE_METER_ID], where))
    if query.metric in CYCLE_METRICS:
        rows = _cycle_rows(context, start, end, query, filters)
        timestamps = sorted({bucket for bucket, *_ in rows})
    else:
        timestamps = buckets(start, end, query.period)
        rows = (
            _event_rows(context, start, end, query, filters)
            if query.metric == EVENTS
            else _usage_rows(context, start, end, query, filters)
        )
    by_group = _fold(context, query, rows)
    groups = set(by_group)
    if query.group_by is not None and query.group_by in filters:
        groups |= set(filters[query.group_by])
    if query.group_by is None:
        groups = {None}
    series = []
    for group in sorted(groups, key=lambda value: _group_label(context, query, value) or ""):
        values = by_group.get(group, {})
        label = None if group is None else (query.group_by, _group_label(context, query, group))
        series.append(Series(label, [normalize_decimal(values.get(t, ZERO)) for t in timestamps]))
    return MetricResult(query.id, query.name, timestamps, series)


def _group_label(context: _Context, query: MetricQuery, value) -> str | None:
    if value is None:
        return None
    if query.group_by == USAGE_METER_ID:
        return context.types.get(value, (value, ""))[0]
    return value


# -- Folding rows into series --------------------------------------------------------------


def _fold(
    context: _Context, query: MetricQuery, rows: list[tuple]
) -> dict[object, dict[datetime.datetime, Decimal]]:
    """Rows of (bucket, group, meter type or None, sum, max, min) as group -> bucket ->
    value: per meter type as it aggregates (only USAGE metrics keep extremes), then
    added up across types."""
    extremes = query.metric not in (EVENTS, REVENUE, REVENUE_FOR_CYCLE)
    folded: dict[object, dict[datetime.datetime, Decimal]] = {}
    for bucket, group, type_id, total, highest, lowest in rows:
        value = total
        if extremes and type_id is not None:
            aggregation = context.types.get(type_id, ("", ""))[1]
            if aggregation == MeterType.Aggregation.MAX:
                value = highest
            elif aggregation == MeterType.Aggregation.MIN:
                value = lowest
        series = folded.setdefault(group, {})
        series[bucket] = series.get(bucket, ZERO) + (value or ZERO)
    return folded


# -- EVENTS --------------------------------------------------------------------------------

_EVENT_GROUPS = {EVENT_STATUS: "status", SCHEMA_NAME: "type", ACCOUNT_ID: "account_id"}


def _event_rows(context, start, end, query, filters) -> list[tuple]:
    per_customer = CUSTOMER_ID in filters or ACCOUNT_ID in filters or query.group_by == ACCOUNT_ID
    table = (CustomerEventRollup if per_customer else EventRollup)._meta.db_table
    conditions = ["operator_id = %s", "hour >= %s", "hour < %s", "status = ANY(%s)"]
    params: list = [context.operator.pk, start, end]
    params.append([_STATUS_CODES[name] for name in filters[EVENT_STATUS]])
    for name, column in ((CUSTOMER_ID, "customer_id"), (ACCOUNT_ID, "account_id")):
        if name in filters:
            conditions.append(f"{column} = ANY(%s)")
            params.append(list(filters[name]))
    if SCHEMA_NAME in filters:
        conditions.append("type = ANY(%s)")
        params.append(list(filters[SCHEMA_NAME]))
    if per_customer:  # the deltas' empty ids are not the per-customer rollup's
        conditions.append("(customer_id <> '' OR account_id <> '')")
    group = _EVENT_GROUPS[query.group_by] if query.group_by else "NULL::int"
    where = " AND ".join(conditions)
    # The per-collector rollup has no account column (nor is it grouped by one).
    account = "account_id" if per_customer else "'' AS account_id"
    sql = f"""
        SELECT date_trunc(%s, hour, 'UTC') AS bucket, {group} AS grp, NULL, sum(count)
        FROM (
            SELECT hour, status, type, {account}, count FROM {table} WHERE {where}
            UNION ALL
            SELECT hour, status, type, account_id, count FROM {EventRollupDelta._meta.db_table}
            WHERE {where}
        ) AS counted
        GROUP BY 1, 2
        HAVING sum(count) <> 0  -- what moved on to another status is not counted here
    """  # noqa: S608 (names are ours; values are parameters)
    rows = _fetch(sql, [query.period.lower(), *params, *params])
    by_status = query.group_by == EVENT_STATUS  # grouped by the status's name
    return [
        (bucket, _STATUS_NAMES[grp] if by_status else grp, None, total, None, None)
        for bucket, grp, _, total in rows
    ]


# -- USAGE and REVENUE ---------------------------------------------------------------------

# Max and Min types keep rows of their own; every adding type's rows are summed together
# in SQL (one row per bucket and group instead of one per meter type too).
_TYPE_APART = "CASE WHEN meter_type_id = ANY(%s::uuid[]) THEN meter_type_id::text END"


def _extreme_types(context: _Context, query: MetricQuery) -> list[str]:
    """The Max and Min types a query must fold apart (none for revenue, which adds)."""
    if query.metric in (REVENUE, REVENUE_FOR_CYCLE):
        return []
    extremes = (MeterType.Aggregation.MAX, MeterType.Aggregation.MIN)
    return [pk for pk, (_, aggregation) in context.types.items() if aggregation in extremes]


_USAGE_GROUPS = {CUSTOMER_ID: "user_id", ACCOUNT_ID: "account_id", USAGE_METER_ID: "meter_type_id"}


def _usage_rows(context, start, end, query, filters) -> list[tuple]:
    invoice = query.metric == REVENUE and query.currency == INVOICE
    per_customer = (
        invoice
        or CUSTOMER_ID in filters
        or ACCOUNT_ID in filters
        or query.group_by in (CUSTOMER_ID, ACCOUNT_ID)
    )
    table = (UsageRollup if per_customer else UsageTypeRollup)._meta.db_table
    column = "revenue" if query.metric == REVENUE else "value"
    where, params = _usage_where(
        context, ("hour", start, end), filters, customer="user_id", account="account_id"
    )
    group = _USAGE_GROUPS[query.group_by] + "::text" if query.group_by else "NULL::text"
    if invoice:
        rows = _fetch(
            f"""
            SELECT date_trunc(%s, hour, 'UTC'), {group}, account_id,
                   (hour AT TIME ZONE 'UTC')::date, sum(revenue)
            FROM {table} WHERE {where} AND revenue <> 0
            GROUP BY 1, 2, 3, 4
            """,  # noqa: S608 (names are ours; values are parameters)
            [query.period.lower(), *params],
        )
        return _invoice_rows(context, rows)
    return _fetch(
        f"""
        SELECT date_trunc(%s, hour, 'UTC'), {group}, {_TYPE_APART},
               sum({column}), max({column}), min({column})
        FROM {table} WHERE {where}
        GROUP BY 1, 2, 3
        """,  # noqa: S608 (names are ours; values are parameters)
        [query.period.lower(), _extreme_types(context, query), *params],
    )


def _usage_where(context, window, filters, *, customer: str, account: str) -> tuple[str, list]:
    """The WHERE of a usage, revenue or cycle read: the operator, `window` as (column,
    from, to) and the customer, account and meter type filters."""
    column, low, high = window
    conditions = ["operator_id = %s", f"{column} >= %s", f"{column} < %s"]
    params: list = [context.operator.pk, low, high]
    for name, field in ((CUSTOMER_ID, customer), (ACCOUNT_ID, account)):
        if name in filters:
            conditions.append(f"{field} = ANY(%s)")
            params.append(list(filters[name]))
    if USAGE_METER_ID in filters:
        conditions.append("meter_type_id = ANY(%s::uuid[])")
        params.append(list(filters[USAGE_METER_ID]))
    return " AND ".join(conditions), params


# -- *_FOR_CYCLE ---------------------------------------------------------------------------

_CYCLE_GROUPS = {CUSTOMER_ID: "user_id", ACCOUNT_ID: "account_key", USAGE_METER_ID: "meter_type_id"}


def _cycle_rows(context, start, end, query, filters) -> list[tuple]:
    """Cycles whose start date (midnight UTC) lies in [start, end)."""
    first = _day_on_or_after(start)
    last = _day_on_or_after(end)  # exclusive
    where, params = _usage_where(
        context, ("cycle_start", first, last), filters, customer="user_id", account="account_key"
    )
    group = _CYCLE_GROUPS[query.group_by] + "::text" if query.group_by else "NULL::text"
    table = CycleRollup._meta.db_table
    if query.metric == REVENUE_FOR_CYCLE and query.currency == INVOICE:
        rows = _fetch(
            f"""
            SELECT cycle_start, {group}, account_key, cycle_start, sum(revenue)
            FROM {table} WHERE {where} GROUP BY 1, 2, 3, 4
            """,  # noqa: S608 (names are ours; values are parameters)
            params,
        )
        rows = _invoice_rows(context, rows)
    else:
        column = "revenue" if query.metric == REVENUE_FOR_CYCLE else "usage"
        rows = _fetch(
            f"""
            SELECT cycle_start, {group}, {_TYPE_APART},
                   sum({column}), max({column}), min({column})
            FROM {table} WHERE {where} AND usage IS NOT NULL
            GROUP BY 1, 2, 3
            """,  # noqa: S608 (names are ours; values are parameters)
            [_extreme_types(context, query), *params],
        )
    return [(_midnight(day), *rest) for day, *rest in rows]


def _day_on_or_after(moment: datetime.datetime) -> datetime.date:
    moment = moment.astimezone(datetime.UTC)
    day = moment.date()
    return day if moment == _midnight(day) else day + datetime.timedelta(days=1)


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)


# -- Invoice currency ----------------------------------------------------------------------


def _invoice_rows(context: _Context, rows: list[tuple]) -> list[tuple]:
    """Rows of (bucket, group, account id, day, base revenue) converted at each
    account's invoice currency's rate of the day (the latest on or before it), as
    (bucket, group, None, revenue, None, None). One series must not add currencies."""
    operator = context.operator
    accounts = dict(
        BillingAccount.objects.filter(
            operator=operator, account_id__in={account for _, _, account, _, _ in rows}
        ).values_list("account_id", "invoice_currency")
    )
    wanted = {currency for currency in accounts.values() if currency != operator.base_currency}
    rates: dict[str, tuple[list[datetime.date], list[Decimal]]] = {}
    for currency, day, rate in (
        ExchangeRate.objects.filter(operator=operator, currency__in=wanted)
        .order_by("currency", "date")
        .values_list("currency", "date", "rate")
    ):
        days, values = rates.setdefault(currency, ([], []))
        days.append(day)
        values.append(rate)
    currencies: dict[object, set[str]] = {}
    converted = []
    for bucket, group, account, day, revenue in rows:
        currency = accounts.get(account, operator.base_currency)
        currencies.setdefault(group, set()).add(currency)
        if len(currencies[group]) > 1:
            raise MetricsInvalid(
                [
                    (
                        "configs.CURRENCY",
                        "INVOICE revenue would add "
                        f"{' and '.join(sorted(currencies[group]))} in one series; filter "
                        "or group by ACCOUNT_ID.",
                    )
                ]
            )
        if currency != operator.base_currency:
            days, values = rates.get(currency, ([], []))
            at = bisect.bisect_right(days, day)
            if at == 0:
                raise MetricsInvalid(
                    [
                        (
                            "configs.CURRENCY",
                            f"No exchange rate from {operator.base_currency} to {currency} "
                            f"on or before {day.isoformat()}.",
                        )
                    ]
                )
            revenue = (revenue * values[at - 1]).quantize(_PLACES)
        converted.append((bucket, group, None, revenue, None, None))
    return converted


def _fetch(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# -- Values of metric definitions (/v1/metrics/{id}/value) ---------------------------------


class MetricBackfilling(Exception):
    """An indexed metric's rollups are still being built; `progress` is 0 to 1."""

    def __init__(self, progress: float) -> None:
        super().__init__(f"{progress:.0%}")
        self.progress = progress


class NoCurrentCycle(ValueError):
    """CURRENT_CYCLE asked of a customer without one (or with several to choose from)."""


def timeframe_window(
    *,
    operator_id,
    customer_id: str,
    timeframe: definitions.Timeframe,
    now: datetime.datetime,
) -> tuple[measures.Window, dict]:
    """The event-time window a timeframe means for the customer, and the timeframe as
    answered (a current cycle with its start and end)."""
    if timeframe.type == definitions.ALL:
        return measures.Window(), {"type": definitions.ALL}
    if timeframe.type == definitions.RANGE:
        window = measures.Window(timeframe.start, timeframe.end)
        return window, {
            "type": definitions.RANGE,
            "start": timeframe.start,
            "end": timeframe.end,
        }
    cycles = customer_cycles_on(
        operator_id=operator_id, customer_id=customer_id, day=now.astimezone(datetime.UTC).date()
    )
    if timeframe.account_id is not None:
        cycles = {key: cycle for key, cycle in cycles.items() if key == timeframe.account_id}
    if not cycles:
        whose = f"account {timeframe.account_id}" if timeframe.account_id else "customer"
        raise NoCurrentCycle(
            f"The {whose} has no current pricing cycle (no plan assigned to a billing "
            "account of the customer covers today)."
        )
    if len(cycles) > 1:
        raise NoCurrentCycle(
            "The customer has several billing accounts with a current cycle ("
            f"{', '.join(sorted(cycles))}): say which in timeframe.accountId."
        )
    ((account_id, cycle),) = cycles.items()
    start = datetime.datetime.combine(cycle.start, datetime.time(), datetime.UTC)
    end = datetime.datetime.combine(cycle.end, datetime.time(), datetime.UTC)
    answer = {
        "type": definitions.CURRENT_CYCLE,
        "accountId": account_id,
        "start": start,
        "end": end,
    }
    return measures.Window(start, end), answer


def metric_value(
    *,
    operator_id,
    spec: definitions.MetricSpec,
    customer_id: str,
    window: measures.Window,
    metric: MetricDefinition | None = None,
):
    """A metric's value for one customer over `window`: an indexed metric from its
    rollups (MetricBackfilling until they are complete), a simple one from the records,
    a complex one by running its SQL in the sandbox. `metric` is None for a preview,
    which computes an indexed definition as a simple one (the same value, by design)."""
    if spec.query_type == definitions.COMPLEX:
        # Imported here: the sandbox pulls in sqlglot, which only complex metrics need.
        from reporting.sandbox import sql_metric_run

        return sql_metric_run(
            operator_id=operator_id,
            customer_id=customer_id,
            start=window.start,
            end=window.end,
            sql=spec.sql,
        )
    rollups_of = None
    if spec.query_type == definitions.INDEXED and metric is not None:
        if metric.index_status != MetricDefinition.IndexStatus.READY:
            raise MetricBackfilling(metric.backfill_progress or 0.0)
        rollups_of = metric.pk
    return measures.metric_compute(
        spec,
        operator_id=operator_id,
        customer_id=customer_id,
        window=window,
        rollups_of=rollups_of,
    )
