"""common.db.deltas_fold: append-only deltas move into their buckets exactly once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from django.db import connection

from common.db import deltas_fold
from tenants.models import UsageCounter, UsageCounterDelta
from tests.factories import OperatorFactory

HOUR = datetime(2026, 5, 1, 10, tzinfo=UTC)
KEYS = ["operator_id", "hour", "kind", "key", "connection"]


def fold() -> int:
    return deltas_fold(
        deltas_table=UsageCounterDelta._meta.db_table,
        buckets_table=UsageCounter._meta.db_table,
        keys=KEYS,
    )


def add(operator, count: int, key: str = "api") -> None:
    UsageCounterDelta.objects.create(
        operator=operator, hour=HOUR, kind="api_call", key=key, connection="", count=count
    )


@pytest.mark.django_db
def test_deltas_are_summed_into_buckets_and_removed():
    operator = OperatorFactory()
    for count in (1, 2, 3):
        add(operator, count)
    add(operator, 5, key="other")

    assert fold() == 4
    assert fold() == 0  # nothing left to move
    buckets = dict(UsageCounter.objects.values_list("key", "count"))
    assert buckets == {"api": 6, "other": 5}

    add(operator, 4)
    assert fold() == 1
    assert UsageCounter.objects.get(key="api").count == 10


@pytest.mark.django_db(transaction=True)
def test_two_folds_at_once_move_each_delta_once():
    operator = OperatorFactory()
    for _ in range(200):
        add(operator, 1)
    moved = []

    def run():
        moved.append(fold())
        connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(moved) == 200
    assert UsageCounter.objects.get().count == 200
    assert not UsageCounterDelta.objects.exists()
