"""Reads that resolve credentials to the principal behind them, and usage counts."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection
from django.utils import timezone
from oauth2_provider.models import AccessToken

from tenants.models import (
    PlatformApiKey,
    UsageCounterDaily,
    UsageCounterDekad,
    UsageCounterDelta,
    UsageCounterMonthly,
    UsageCounterQuarterly,
    UsageCounterYearly,
)
from tenants.services import platform_key_digest


def access_token_lookup(raw_token: str) -> AccessToken | None:
    """The live access token for `raw_token`, with its application, access and operator.

    Tokens are stored only as a SHA-256 checksum (RFC 9700 storage), so this is one
    indexed lookup.
    """
    checksum = hashlib.sha256(raw_token.encode("utf-8")).hexdigest()
    token = (
        AccessToken.objects.select_related("application__access__operator")
        .filter(token_checksum=checksum)
        .first()
    )
    if token is None or token.expires <= timezone.now():
        return None
    return token


def platform_key_lookup(raw_key: str) -> PlatformApiKey | None:
    if not raw_key.startswith(PlatformApiKey.PREFIX):
        return None
    return PlatformApiKey.objects.filter(
        key_digest=platform_key_digest(raw_key), revoked_at__isnull=True
    ).first()


def usage_counts(*, operator_id, kind: str, since=None, until=None) -> dict:
    """The operator's counts of `kind` per (hour, key, connection): folded counters plus
    deltas not folded yet, so the answer is exact at any moment."""
    from django.db.models import Sum

    from tenants.models import UsageCounter, UsageCounterDelta

    totals: dict = {}
    for model in (UsageCounter, UsageCounterDelta):
        rows = model.objects.filter(operator_id=operator_id, kind=kind)
        if since is not None:
            rows = rows.filter(hour__gte=since)
        if until is not None:
            rows = rows.filter(hour__lt=until)
        for row in rows.values("hour", "key", "connection").annotate(total=Sum("count")):
            bucket = (row["hour"], row["key"], row["connection"])
            totals[bucket] = totals.get(bucket, 0) + row["total"]
    return totals


# A usage total: (operator id, kind, key, connection, count).
UsageTotal = tuple[uuid.UUID, str, str, str, int]


@dataclass(frozen=True)
class UsageWindow:
    """Whole UTC days from `since` (inclusive) to `until` (exclusive), either open (None),
    of the given kinds (all when None)."""

    since: date | None = None
    until: date | None = None
    kinds: tuple[str, ...] | None = None


def usage_totals(
    *,
    since: date | None = None,
    until: date | None = None,
    operator_ids: Iterable | None = None,
    kinds: Iterable[str] | None = None,
) -> list[UsageTotal]:
    """Usage counts summed per (operator, kind, key, connection) over the UTC days from
    `since` (inclusive) to `until` (exclusive); either bound may be None (open). Buckets
    with nothing in the range are left out. `usage_windows` says how it is read."""
    window = UsageWindow(since, until, None if kinds is None else tuple(kinds))
    rows = usage_windows([window], operator_ids=operator_ids, by_connection=True)
    return [row[1:] for row in rows]


def usage_windows(
    windows: Sequence[UsageWindow],
    *,
    operator_ids: Iterable | None = None,
    by_connection: bool = False,
) -> list[tuple]:
    """Usage counts of several windows in one statement: rows (window index, operator,
    kind, key[, connection], count), summed per window and bucket, zero sums left out.

    Each window reads the fewest rows of the yearly, monthly, dekad and daily rollups
    that add up to its days (`_usage_plan`), and the deltas not folded yet (by their
    hour's day): exact at any moment for everything in the database (counts still in
    Redis arrive with the next fold, within a minute). The last twelve months are about
    five rows per bucket. Without `by_connection` the connections of a key are
    summed together, which halves what is grouped.
    """
    params: dict = {}
    shared = []
    if operator_ids is not None:
        shared.append("operator_id = ANY(%(operators)s)")
        params["operators"] = [uuid.UUID(str(operator_id)) for operator_id in operator_ids]
    columns = "operator_id, kind, key" + (", connection" if by_connection else "")
    selects = []

    def add(index: int, filters: list[str], table: str, column: str, low, high, times=1):
        where = list(filters)
        for comparison, value in ((">=", low), ("<", high)):
            if value is not None:
                name = f"p{len(params)}"
                params[name] = value
                where.append(f"{column} {comparison} %({name})s")
        count = "count" if times == 1 else f"count * {int(times)}"
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        selects.append(f"SELECT {index} AS w, {columns}, {count} AS count FROM {table}{clause}")  # noqa: S608

    for index, window in enumerate(windows):
        since, until = window.since, window.until
        if since is not None and until is not None and since >= until:
            continue
        filters = list(shared)
        if window.kinds is not None:
            params[f"k{index}"] = list(window.kinds)
            filters.append(f"kind = ANY(%(k{index})s)")
        for level, low, high, times in _usage_plan(since, until):
            add(index, filters, _LEVELS[level]._meta.db_table, level, low, high, times)
        delta_table = UsageCounterDelta._meta.db_table
        add(index, filters, delta_table, "hour", _midnight(since), _midnight(until))
    if not selects:
        return []
    union = " UNION ALL ".join(selects)
    # Table and column names are ours; values travel as parameters.
    query = f"SELECT w, {columns}, sum(count)::bigint FROM ({union}) counts "  # noqa: S608
    query += f"GROUP BY w, {columns} HAVING sum(count) <> 0"
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


# The rollups by the name of their period column.
_LEVELS = {
    "year": UsageCounterYearly,
    "quarter": UsageCounterQuarterly,
    "month": UsageCounterMonthly,
    "dekad": UsageCounterDekad,
    "day": UsageCounterDaily,
}
# A rollup row of one period: (level, the period's first day).
_Unit = tuple[str, date]
# Ranges of rollup rows: (level, first period or None, end or None, times to count them;
# -1 subtracts). Only years are ever open-ended.
_Plan = list[tuple[str, date | None, date | None, int]]


@dataclass(frozen=True)
class _Tier:
    """A period (`outer`) split into a few middle periods, each into small ones: a
    month into dekads and days, a year into quarters and months."""

    outer: str
    middle: str
    small: str

    def start(self, day: date) -> date:
        return _month_start(day) if self.outer == "month" else _year_start(day)

    def end(self, start: date) -> date:
        return _next_month(start) if self.outer == "month" else _next_year(start)

    def middles(self, start: date) -> list[date]:
        if self.outer == "month":
            return [start, start + timedelta(days=10), start + timedelta(days=20)]
        return [start.replace(month=month) for month in (1, 4, 7, 10)]

    def smalls(self, start: date, end: date) -> dict[_Unit, int]:
        units, period = {}, start
        while period < end:
            units[(self.small, period)] = 1
            period = _period_end(self.small, period)
        return units


_MONTH = _Tier("month", "dekad", "day")
_YEAR = _Tier("year", "quarter", "month")


def _usage_plan(since: date | None, until: date | None) -> _Plan:
    """The rows that add up to the days [since, until), either bound open (None).

    1. The years between the range's first and last year start are read whole.
    2. The whole months of a year the range covers in part are read as the fewest rows
       that add up to them (`_cover`): months, quarters, the year itself, some
       subtracted.
    3. So are the days of a month it covers in part: days, dekads, the month.
    Rows counted once and subtracted once cancel out. A year-long range reads at most
    fifteen rows per bucket (the twelve months up to today: this year's row less the
    rest of this month and of the year, rows that do not exist yet, and a few of last
    year's).
    """
    units: dict[_Unit, int] = {}
    low = since if since is None or since.day == 1 else _next_month(since)
    high = until if until is None or until.day == 1 else _month_start(until)
    if low is not None and high is not None and low > high:  # inside one month
        return _ranges(_cover(_MONTH, since, until))
    if since is not None and since != low:
        _add(units, _cover(_MONTH, since, low))
    if until is not None and until != high:
        _add(units, _cover(_MONTH, high, until))
    whole: _Plan = []
    if low is None or high is None or low < high:
        first = low if low is None or low.month == 1 else _next_year(low)
        last = high if high is None or high.month == 1 else _year_start(high)
        if first is not None and last is not None and first > last:  # inside one year
            _add(units, _cover(_YEAR, low, high))
        else:
            if low is not None and low != first:
                _add(units, _cover(_YEAR, low, first))
            if high is not None and high != last:
                _add(units, _cover(_YEAR, last, high))
            if first is None or last is None or first < last:
                whole.append(("year", first, last, 1))
    return whole + _ranges(units)


def _cover(tier: _Tier, start: date, end: date) -> dict[_Unit, int]:
    """The fewest rollup rows adding up to [start, end), inside one of the tier's outer
    periods: the difference of the period's prefixes up to `end` and up to `start`,
    each written the cheapest way (`_prefixes`)."""
    best: dict[_Unit, int] | None = None
    outer = tier.start(start)
    for upper in _prefixes(tier, outer, end):
        for lower in _prefixes(tier, outer, start):
            units = dict(upper)
            _add(units, lower, times=-1)
            if best is None or _cost(units) < _cost(best):
                best = units
    return best or {}


def _prefixes(tier: _Tier, outer: date, point: date) -> list[dict[_Unit, int]]:
    """Ways to write the part of the outer period before `point` (its start to its end
    included) as rollup rows: whole middle periods then small ones; middle periods past
    `point` less the small ones after it; or the outer period less what follows
    `point`, written either way."""
    end = tier.end(outer)
    if point == outer:
        return [{}]
    middles = tier.middles(outer)
    if point == end:
        return [{(tier.outer, outer): 1}, {(tier.middle, start): 1 for start in middles}]
    k = max(index for index, start in enumerate(middles) if start <= point)
    start, stop = middles[k], (middles[k + 1] if k + 1 < len(middles) else end)
    before = {(tier.middle, d): 1 for d in middles[:k]}
    after = {(tier.middle, d): 1 for d in middles[k + 1 :]}
    head = tier.smalls(start, point)  # the small periods of point's middle one before it
    tail = tier.smalls(point, stop)  # and from it on
    whole, middle = {(tier.outer, outer): 1}, {(tier.middle, start): 1}
    return [
        _sum(before, head),
        _sum(before, middle, tail, times=(1, 1, -1)),
        _sum(whole, after, tail, times=(1, -1, -1)),
        _sum(whole, after, middle, head, times=(1, -1, -1, 1)),
    ]


def _days(start: date, end: date) -> dict[_Unit, int]:
    return {("day", start + timedelta(days=n)): 1 for n in range((end - start).days)}


def _sum(*parts: dict[_Unit, int], times: tuple[int, ...] | None = None) -> dict[_Unit, int]:
    total: dict[_Unit, int] = {}
    for part, factor in zip(parts, times or (1,) * len(parts), strict=True):
        _add(total, part, times=factor)
    return total


def _add(total: dict[_Unit, int], part: dict[_Unit, int], times: int = 1) -> None:
    for unit, n in part.items():
        total[unit] = total.get(unit, 0) + n * times
        if not total[unit]:
            del total[unit]


def _cost(units: dict[_Unit, int]) -> int:
    return sum(abs(n) for n in units.values())


def _ranges(units: dict[_Unit, int]) -> list[tuple[str, date, date, int]]:
    """Consecutive rows of one level counted alike, as (level, first, end, times)."""
    ranges: list[tuple[str, date, date, int]] = []
    for (level, first), times in sorted(units.items()):
        end = _period_end(level, first)
        if ranges and ranges[-1][0] == level and ranges[-1][2] == first and ranges[-1][3] == times:
            ranges[-1] = (level, ranges[-1][1], end, times)
        else:
            ranges.append((level, first, end, times))
    return ranges


def _period_end(level: str, first: date) -> date:
    if level == "year":
        return _next_year(first)
    if level == "quarter":
        return _next_month(_next_month(_next_month(first)))
    if level == "day":
        return first + timedelta(days=1)
    if level == "month" or first.day == 21:
        return _next_month(first)
    return first + timedelta(days=10)


def _year_start(day: date) -> date:
    return day.replace(month=1, day=1)


def _next_year(day: date) -> date:
    return day.replace(year=day.year + 1, month=1, day=1)


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)
