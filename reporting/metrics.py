"""The metrics query's rules: which metrics exist, which filters, groupBy fields and
configs each takes, their defaults, and the time buckets answers are given in.

One place for the rules, so the API (`POST /metrics`) and the dashboards' usage
explorer reject the same combinations with the same words. A query that breaks one
raises `MetricsInvalid` with (field path, message) pairs; the path is relative to the
query (`filters[1].fieldName`), the API prefixes it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

EVENTS = "EVENTS"
USAGE = "USAGE"
REVENUE = "REVENUE"
USAGE_FOR_CYCLE = "USAGE_FOR_CYCLE"
REVENUE_FOR_CYCLE = "REVENUE_FOR_CYCLE"
# Names a request may use, and the metric each means (METER_USAGE: the same as USAGE).
METRIC_NAMES = {
    EVENTS: EVENTS,
    USAGE: USAGE,
    "METER_USAGE": USAGE,
    REVENUE: REVENUE,
    USAGE_FOR_CYCLE: USAGE_FOR_CYCLE,
    REVENUE_FOR_CYCLE: REVENUE_FOR_CYCLE,
}
CYCLE_METRICS = (USAGE_FOR_CYCLE, REVENUE_FOR_CYCLE)
MONEY_METRICS = (REVENUE, REVENUE_FOR_CYCLE)

ACCOUNT_ID = "ACCOUNT_ID"
CUSTOMER_ID = "CUSTOMER_ID"
SCHEMA_NAME = "SCHEMA_NAME"
EVENT_STATUS = "EVENT_STATUS"
USAGE_METER_ID = "USAGE_METER_ID"
FIELD_NAMES = (ACCOUNT_ID, CUSTOMER_ID, SCHEMA_NAME, EVENT_STATUS, USAGE_METER_ID)

_EVENT_FILTERS = (ACCOUNT_ID, CUSTOMER_ID, SCHEMA_NAME, EVENT_STATUS)
_USAGE_FIELDS = (ACCOUNT_ID, CUSTOMER_ID, USAGE_METER_ID)
# metric -> (filters it takes, fields it may be grouped by), as the reference's tables.
ALLOWED = {
    EVENTS: (_EVENT_FILTERS, (ACCOUNT_ID, EVENT_STATUS, SCHEMA_NAME)),
    USAGE: (_USAGE_FIELDS, _USAGE_FIELDS),
    REVENUE: (_USAGE_FIELDS, _USAGE_FIELDS),
    USAGE_FOR_CYCLE: (_USAGE_FIELDS, _USAGE_FIELDS),
    REVENUE_FOR_CYCLE: (_USAGE_FIELDS, _USAGE_FIELDS),
}

# Record statuses the EVENTS metric counts. FAILED is Tally's own (records that failed
# processing); the reference knows the other three.
EVENT_STATUSES = ("PROCESSED", "UNPROCESSED", "IN_PROGRESS", "FAILED")
DEFAULT_EVENT_STATUSES = ("PROCESSED", "UNPROCESSED")

CURRENCY = "CURRENCY"
BASE, INVOICE = "BASE", "INVOICE"
CURRENCIES = (BASE, INVOICE)

HOUR, DAY, WEEK, MONTH = "HOUR", "DAY", "WEEK", "MONTH"
PERIODS = (HOUR, DAY, WEEK, MONTH)
DEFAULT_PERIOD = DAY

MAX_QUERIES = 10
MAX_FILTERS = 5
MAX_FILTER_VALUES = 100
MAX_BUCKETS = 10_000


class MetricsInvalid(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {message}" for where, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class MetricQuery:
    """One checked query. `filters` maps field names to their values, defaults
    included; `name` is as the caller wrote it, `metric` what it means."""

    id: str
    name: str
    metric: str
    period: str = DEFAULT_PERIOD
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    group_by: str | None = None
    currency: str = BASE


def metric_query_check(raw: dict[str, Any]) -> MetricQuery:
    """A query with its shape already checked (strings where strings belong), keyed as
    the API's serializer gives it (`group_by`, `filters[].field_name`, …), checked
    against the metric's rules."""
    problems: list[tuple[str, str]] = []
    name = raw.get("name") or EVENTS
    metric = METRIC_NAMES[name]
    allowed_filters, allowed_groups = ALLOWED[metric]
    filters: dict[str, tuple[str, ...]] = {}
    for index, entry in enumerate(raw.get("filters") or ()):
        field_name, values = entry["field_name"], tuple(entry["field_values"])
        where = f"filters[{index}]"
        if field_name not in allowed_filters:
            problems.append(
                (
                    f"{where}.fieldName",
                    f"{name} cannot be filtered by {field_name} "
                    f"(it takes {', '.join(allowed_filters)}).",
                )
            )
        elif field_name in filters:
            problems.append((f"{where}.fieldName", f"{field_name} is filtered twice."))
        elif field_name == SCHEMA_NAME and len(values) > 1:
            problems.append((f"{where}.fieldValues", "SCHEMA_NAME takes at most one value."))
        elif field_name == EVENT_STATUS and (
            unknown := [value for value in values if value not in EVENT_STATUSES]
        ):
            problems.append(
                (
                    f"{where}.fieldValues",
                    f"Unknown event status {unknown[0]!r} "
                    f"(one or more of {', '.join(EVENT_STATUSES)}).",
                )
            )
        else:
            filters[field_name] = tuple(dict.fromkeys(values))
    if metric == EVENTS:
        filters.setdefault(EVENT_STATUS, DEFAULT_EVENT_STATUSES)
    group_by = raw.get("group_by") or None
    if group_by is not None and group_by not in allowed_groups:
        problems.append(
            (
                "groupBy",
                f"{name} cannot be grouped by {group_by} "
                f"(it may be grouped by {', '.join(allowed_groups)}).",
            )
        )
    currency = BASE
    for key, value in (raw.get("configs") or {}).items():
        if key != CURRENCY:
            problems.append((f"configs.{key}", f"Unknown config (known: {CURRENCY})."))
        elif metric not in MONEY_METRICS:
            problems.append(
                (
                    f"configs.{key}",
                    f"{CURRENCY} applies to {' and '.join(MONEY_METRICS)} only, not {name}.",
                )
            )
        elif value not in CURRENCIES:
            problems.append((f"configs.{key}", f"Must be {' or '.join(CURRENCIES)}."))
        else:
            currency = value
    if problems:
        raise MetricsInvalid(problems)
    return MetricQuery(
        id=raw["id"],
        name=name,
        metric=metric,
        period=raw.get("aggregation_period") or DEFAULT_PERIOD,
        filters=filters,
        group_by=group_by,
        currency=currency,
    )


# -- Time ----------------------------------------------------------------------------------


def metrics_request_check(
    start: datetime.datetime, end: datetime.datetime, raw_queries: list[dict[str, Any]]
) -> list[MetricQuery]:
    """A whole request's window and queries, checked as `POST /metrics` checks them once
    its serializer has read them; raises MetricsInvalid with every problem, each at its
    field path (`endTime`, `metricQueries[1].groupBy`…)."""
    problems = window_check(start, end)
    queries = []
    for index, raw in enumerate(raw_queries):
        try:
            queries.append(metric_query_check(raw))
        except MetricsInvalid as invalid:
            problems += [(f"metricQueries[{index}].{w}", m) for w, m in invalid.problems]
    if problems:
        raise MetricsInvalid(problems)
    return queries


# The last moment a window may reach: its buckets end within the dates Python can hold.
LATEST_MOMENT = datetime.datetime(9999, 1, 1, tzinfo=datetime.UTC)


def window_check(start: datetime.datetime, end: datetime.datetime) -> list[tuple[str, str]]:
    """What is wrong with a query window, as (field, message) pairs."""
    problems = []
    for name, moment in (("startTime", start), ("endTime", end)):
        if moment.tzinfo is None:
            problems.append((name, "Must name its time zone (for example 2024-01-01T00:00:00Z)."))
        elif moment.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0) != moment:
            problems.append((name, "Must fall on a whole hour (UTC): usage is kept by the hour."))
    if not problems and end <= start:
        problems.append(("endTime", "Must be after startTime."))
    for name, moment in (("startTime", start), ("endTime", end)):
        if not problems and moment > LATEST_MOMENT:
            problems.append((name, "Must be no later than 9999-01-01T00:00:00Z."))
    return problems


def bucket_start(moment: datetime.datetime, period: str) -> datetime.datetime:
    """The start of the UTC bucket holding `moment`; weeks start on Monday."""
    moment = moment.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)
    if period == HOUR:
        return moment
    moment = moment.replace(hour=0)
    if period == DAY:
        return moment
    if period == WEEK:
        return moment - datetime.timedelta(days=moment.weekday())
    return moment.replace(day=1)


def bucket_next(moment: datetime.datetime, period: str) -> datetime.datetime:
    if period == HOUR:
        return moment + datetime.timedelta(hours=1)
    if period == DAY:
        return moment + datetime.timedelta(days=1)
    if period == WEEK:
        return moment + datetime.timedelta(days=7)
    year, month = divmod(moment.month, 12)
    return moment.replace(year=moment.year + year, month=month + 1)


def buckets(
    start: datetime.datetime, end: datetime.datetime, period: str
) -> list[datetime.datetime]:
    """Every bucket overlapping [start, end), in order (the first may begin before
    `start`: it holds only what happened from `start` on)."""
    found, moment = [], bucket_start(start, period)
    while moment < end:
        found.append(moment)
        if len(found) > MAX_BUCKETS:
            raise MetricsInvalid(
                [
                    (
                        "aggregationPeriod",
                        f"The window holds more than {MAX_BUCKETS:,} {period} buckets; "
                        "choose a longer period or a shorter window.",
                    )
                ]
            )
        moment = bucket_next(moment, period)
    return found
