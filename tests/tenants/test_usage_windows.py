"""`usage_windows` reads several ranges of usage counts in one statement; each window's
answer is the one `usage_totals` gives for it alone."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from tenants.models import UsageCounterQuarterly, UsageCounterYearly
from tenants.selectors import UsageWindow, _period_end, _usage_plan, usage_totals, usage_windows
from tenants.services import usage_counter_add, usage_counters_fold
from tests.factories import OperatorFactory

KINDS = [("api_call", "billing"), ("api_call", "oauth"), ("event", "call"), ("event", "sms")]


@pytest.fixture
def counted():
    """Two operators' counts over four months, some folded, some pending deltas."""
    rng = random.Random(16)
    alice, bob = OperatorFactory(), OperatorFactory()
    start = datetime(2026, 1, 25, tzinfo=UTC)
    for _ in range(300):
        kind, key = rng.choice(KINDS)
        usage_counter_add(
            operator_id=rng.choice((alice, bob)).pk,
            kind=kind,
            key=key,
            connection=rng.choice(("", "c1", "c2")),
            count=rng.randrange(1, 9),
            at=start + timedelta(hours=rng.randrange(24 * 120)),
        )
        if rng.random() < 0.1:
            usage_counters_fold()
    return alice, bob


def alone(window: UsageWindow, operator_ids=None) -> Counter:
    """The window read by itself, connections summed."""
    found = Counter()
    rows = usage_totals(
        since=window.since, until=window.until, operator_ids=operator_ids, kinds=window.kinds
    )
    for operator_id, kind, key, _connection, n in rows:
        found[(operator_id, kind, key)] += n
    return +found


def together(windows, **options) -> list[Counter]:
    found = [Counter() for _ in windows]
    for index, *bucket, n in usage_windows(windows, **options):
        found[index][tuple(bucket)] += n
    return found


@pytest.mark.django_db
def test_windows_read_together_equal_each_read_alone(counted):
    windows = [
        UsageWindow(date(2026, 2, 3), date(2026, 4, 17)),
        UsageWindow(None, date(2026, 2, 3), ("event",)),  # what came before, events only
        UsageWindow(date(2026, 3, 1), None, ("api_call", "event")),
        UsageWindow(date(2026, 3, 5), date(2026, 3, 5)),  # empty: nothing, not an error
        UsageWindow(),
    ]
    with CaptureQueriesContext(connection) as queries:
        found = together(windows)
    assert len(queries) == 1
    assert found == [alone(window) for window in windows]
    assert found[3] == Counter()
    assert all(kind == "event" for _operator, kind, _key in found[1])
    assert sum(found[0].values()) > 0 and sum(found[1].values()) > 0


@pytest.mark.django_db
def test_windows_keep_connections_apart_when_asked_and_filter_operators(counted):
    alice, _bob = counted
    window = UsageWindow(date(2026, 2, 10), date(2026, 5, 1))
    [by_connection] = together([window], operator_ids=[alice.pk], by_connection=True)
    expected = Counter()
    for operator_id, kind, key, connection_id, n in usage_totals(
        since=window.since, until=window.until, operator_ids=[alice.pk]
    ):
        expected[(operator_id, kind, key, connection_id)] += n
    assert by_connection == expected
    assert {bucket[0] for bucket in by_connection} == {alice.pk}
    assert {bucket[3] for bucket in by_connection} == {"", "c1", "c2"}


@pytest.mark.django_db
def test_no_window_worth_reading_runs_no_query():
    with CaptureQueriesContext(connection) as queries:
        assert usage_windows([UsageWindow(date(2026, 3, 2), date(2026, 3, 1))]) == []
    assert len(queries) == 0


# --- The plan: which rollup rows add up to a range ----------------------------------------


def days_of(plan) -> Counter:
    """Each day the plan's rows count, with how many times (bounded plans only)."""
    found = Counter()
    for level, low, high, times in plan:
        period = low
        while period < high:
            end = _period_end(level, period)
            for n in range((end - period).days):
                found[period + timedelta(days=n)] += times
            period = end
    return +found - Counter()  # drop zeros, keep negatives visible


def rows_of(plan) -> int:
    """How many rows of one bucket the plan reads."""
    rows = 0
    for level, low, high, times in plan:
        period = low
        while period < high:
            rows += abs(times)
            period = _period_end(level, period)
    return rows


def exactly(since: date, until: date) -> Counter:
    return Counter(since + timedelta(days=n) for n in range((until - since).days))


@pytest.mark.parametrize(
    "since, until, plan",
    [
        (None, None, [("year", None, None, 1)]),
        (date(2025, 1, 1), date(2026, 1, 1), [("year", date(2025, 1, 1), date(2026, 1, 1), 1)]),
        (None, date(2026, 1, 1), [("year", None, date(2026, 1, 1), 1)]),
        (date(2024, 1, 1), None, [("year", date(2024, 1, 1), None, 1)]),
        # The last twelve months on 2026-11-28: this year's row less what is still to
        # come, plus last year's December and its last three days of November.
        (
            date(2025, 11, 28),
            date(2026, 11, 28),
            [
                ("day", date(2025, 11, 28), date(2025, 12, 1), 1),
                ("day", date(2026, 11, 28), date(2026, 12, 1), -1),
                ("month", date(2025, 12, 1), date(2026, 1, 1), 1),
                ("month", date(2026, 12, 1), date(2027, 1, 1), -1),
                ("year", date(2026, 1, 1), date(2027, 1, 1), 1),
            ],
        ),
        # Months inside a year: a month and a quarter.
        (
            date(2025, 3, 1),
            date(2025, 7, 1),
            [
                ("month", date(2025, 3, 1), date(2025, 4, 1), 1),
                ("quarter", date(2025, 4, 1), date(2025, 7, 1), 1),
            ],
        ),
        # Mid-year to mid-year: quarters for the months between.
        (
            date(2025, 7, 1),
            date(2026, 7, 1),
            [
                ("quarter", date(2025, 7, 1), date(2026, 7, 1), 1),
            ],
        ),
        # Inside one month: days, or a dekad.
        (date(2025, 5, 10), date(2025, 5, 12), [("day", date(2025, 5, 10), date(2025, 5, 12), 1)]),
        (
            date(2025, 5, 11),
            date(2025, 5, 21),
            [("dekad", date(2025, 5, 11), date(2025, 5, 21), 1)],
        ),
    ],
    ids=[
        "all",
        "calendar-year",
        "before-a-year",
        "from-a-year",
        "last-twelve-months",
        "four-months",
        "mid-year-to-mid-year",
        "two-days",
        "a-dekad",
    ],
)
def test_a_range_reads_few_rows(since, until, plan):
    assert _usage_plan(since, until) == plan


def test_every_plan_counts_each_day_of_its_range_once_and_no_other_day():
    rng = random.Random(17)
    first = date(2024, 12, 1)
    bounds = [first + timedelta(days=rng.randrange(900)) for _ in range(300)]
    bounds += [date(2025, 1, 1), date(2025, 12, 31), date(2026, 1, 1), date(2026, 2, 28)]
    for _ in range(3000):
        since, until = sorted(rng.sample(bounds, 2))
        if since == until:
            continue
        assert days_of(_usage_plan(since, until)) == exactly(since, until), (since, until)


def test_no_year_long_range_reads_more_than_eighteen_rows_of_a_bucket():
    """Whatever day a year-long range starts on (the days of the two months it cuts are
    most of them); a range of whole months at most six."""
    first = date(2025, 1, 1)
    worst = 0
    for offset in range(366):
        since = first + timedelta(days=offset)
        worst = max(worst, rows_of(_usage_plan(since, since + timedelta(days=365))))
    assert worst == 18
    months = [date(2025, month, 1) for month in range(1, 13)]
    assert max(rows_of(_usage_plan(m, m.replace(year=2026))) for m in months) == 6


# --- The data migration -------------------------------------------------------------------


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_the_quarterly_and_yearly_rollups_start_with_the_monthly_counters():
    apps = migrate([("tenants", "0006_usage_rollups_fill")])
    try:
        operator = apps.get_model("tenants", "Operator").objects.create(name="Old counters")
        Monthly = apps.get_model("tenants", "UsageCounterMonthly")
        for month, key, n in [
            (date(2025, 11, 1), "billing", 2),
            (date(2025, 12, 1), "billing", 3),
            (date(2026, 1, 1), "billing", 4),
            (date(2026, 3, 1), "billing", 5),
            (date(2026, 4, 1), "oauth", 6),
        ]:
            Monthly.objects.create(
                operator=operator, month=month, kind="api_call", key=key, count=n
            )

        apps = migrate([("tenants", "0007_usage_counter_quarterly_yearly")])
        Quarterly = apps.get_model("tenants", "UsageCounterQuarterly")
        Yearly = apps.get_model("tenants", "UsageCounterYearly")
        assert {(r.quarter, r.key): r.count for r in Quarterly.objects.all()} == {
            (date(2025, 10, 1), "billing"): 5,
            (date(2026, 1, 1), "billing"): 9,
            (date(2026, 4, 1), "oauth"): 6,
        }
        assert {(r.year, r.key): r.count for r in Yearly.objects.all()} == {
            (date(2025, 1, 1), "billing"): 5,
            (date(2026, 1, 1), "billing"): 9,
            (date(2026, 1, 1), "oauth"): 6,
        }
    finally:
        executor = MigrationExecutor(connection)
        migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db
def test_a_fold_fills_the_quarterly_and_yearly_rollups():
    operator = OperatorFactory()
    for at, n in [
        (datetime(2026, 3, 31, 23, 30, tzinfo=UTC), 2),
        (datetime(2026, 4, 1, 0, 30, tzinfo=UTC), 3),
        (datetime(2025, 12, 31, 23, 0, tzinfo=UTC), 4),
    ]:
        usage_counter_add(operator_id=operator.pk, kind="api_call", key="billing", count=n, at=at)
    usage_counters_fold()
    assert dict(UsageCounterQuarterly.objects.values_list("quarter", "count")) == {
        date(2026, 1, 1): 2,
        date(2026, 4, 1): 3,
        date(2025, 10, 1): 4,
    }
    assert dict(UsageCounterYearly.objects.values_list("year", "count")) == {
        date(2026, 1, 1): 5,
        date(2025, 1, 1): 4,
    }
