"""`usage_windows` reads several ranges of usage counts in one statement; each window's
answer is the one `usage_totals` gives for it alone."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tenants.selectors import UsageWindow, usage_totals, usage_windows
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
