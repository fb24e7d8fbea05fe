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

    Each window reads the monthly rollup for the months it covers whole, the fewest
    dekad, daily (and monthly) rows that make up the months it covers in part
    (`_usage_plan`), and the deltas not folded yet (by their hour's day): exact at any
    moment for everything in the database (counts still in Redis arrive with the next
    fold, within a minute). A year is twelve monthly rows per bucket plus at most about a
    dozen dekad and daily ones. Without `by_connection` the connections of a key are
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
        months, parts = _usage_plan(since, until)
        if months is not None:
            add(index, filters, _LEVELS["month"]._meta.db_table, "month", *months)
        for level, low, high, times in parts:
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
_LEVELS = {"month": UsageCounterMonthly, "dekad": UsageCounterDekad, "day": UsageCounterDaily}
# A rollup row of one period: (level, the period's first day).
_Unit = tuple[str, date]


def _usage_plan(
    since: date | None, until: date | None
) -> tuple[tuple[date | None, date | None] | None, list[tuple[str, date, date, int]]]:
    """The rows that add up to the days [since, until): (the range of months read whole,
    or None; ranges of rollup rows (level, first period, end, times to count them, -1
    to subtract)).

    1. The months between the range's first and last month start are read whole.
    2. A month the range covers in part is read as its few rows that add up to the part
       (`_cover`): days, dekads, the month itself, some subtracted.
    """
    if since is None and until is None:
        return (None, None), []
    low = since if since is None or since.day == 1 else _next_month(since)
    high = until if until is None or until.day == 1 else _month_start(until)
    units: dict[_Unit, int] = {}
    if low is not None and high is not None and low > high:  # inside one month
        _add(units, _cover(since, until))
        return None, _ranges(units)
    if since is not None and since != low:
        _add(units, _cover(since, low))
    if until is not None and until != high:
        _add(units, _cover(high, until))
    whole = None if low is not None and low == high else (low, high)
    return whole, _ranges(units)


def _cover(start: date, end: date) -> dict[_Unit, int]:
    """The fewest rollup rows adding up to [start, end), days of one month: the
    difference of the month's prefixes up to `end` and up to `start`, each written the
    cheapest way (`_prefixes`)."""
    best: dict[_Unit, int] | None = None
    month = _month_start(start)
    for upper in _prefixes(month, end):
        for lower in _prefixes(month, start):
            units = dict(upper)
            _add(units, lower, times=-1)
            if best is None or _cost(units) < _cost(best):
                best = units
    return best or {}


def _prefixes(month: date, day: date) -> list[dict[_Unit, int]]:
    """Ways to write the days of `month` before `day` (its 1st to the end of the month
    included) as rollup rows: whole dekads then days; dekads past `day` less the days
    after it; or the month less what follows `day`, written either way."""
    end = _next_month(month)
    if day == month:
        return [{}]
    dekads = [month, month + timedelta(days=10), month + timedelta(days=20)]
    if day == end:
        return [{("month", month): 1}, {("dekad", start): 1 for start in dekads}]
    k = min((day - month).days // 10, 2)
    start, stop = dekads[k], (dekads[k + 1] if k < 2 else end)
    before = {("dekad", d): 1 for d in dekads[:k]}
    after = {("dekad", d): 1 for d in dekads[k + 1 :]}
    head = _days(start, day)  # the days of day's dekad before it
    tail = _days(day, stop)  # and from it on
    options = [
        _sum(before, head),
        _sum(before, {("dekad", start): 1}, tail, times=(1, 1, -1)),
        _sum({("month", month): 1}, after, tail, times=(1, -1, -1)),
        _sum({("month", month): 1}, after, {("dekad", start): 1}, head, times=(1, -1, -1, 1)),
    ]
    return options


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
    if level == "day":
        return first + timedelta(days=1)
    if level == "month" or first.day == 21:
        return _next_month(first)
    return first + timedelta(days=10)


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)
