"""`transforms/data_aggregate` as a user reaches it: records ingested into a collector,
run through a realtime stream, the aggregates read from the stream's log."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from collection.models import Record
from streams.models import AggregationFlush, AggregationSession, AggregationStore, StreamLogLine
from streams.runtime import runner
from tests.streams.runtime.helpers import (
    STREAMS,
    create_collector,
    import_stream,
    ingest,
    logged,
    process_all,
    set_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


@pytest.fixture
def collector(client):
    return create_collector(client, "Usage")


def aggregate_stream(collector_id: str, params: dict, name: str = "Aggregating") -> dict:
    return {
        "name": name,
        "nodes": [
            {
                "id": "source",
                "name": "Collector",
                "type": "readers/online_collection",
                "params": {"collectorId": collector_id},
            },
            {
                "id": "aggregate",
                "name": "Aggregate",
                "type": "transforms/data_aggregate",
                "params": params,
            },
            {"id": "out", "name": "Out", "type": "writers/log", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "aggregate"},
            {"id": "e2", "from": "aggregate", "to": "out"},
        ],
    }


def run(client, collector, params, records, *, name="Aggregating") -> dict:
    stream = import_stream(client, aggregate_stream(collector["id"], params, name))
    set_stream(client, stream["id"], enabled=True)
    ingest(client, collector["id"], records)
    process_all(collector["id"])
    return stream


def without_times(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k not in ("createdAt", "timeoutAt")}


USAGE = [
    {"user": "a", "bytes": 10, "price": "1.10", "at": "2024-09-30T23:59:59Z", "plan": "x"},
    {"user": "a", "bytes": 5, "price": "2.20", "at": "2024-10-01T00:00:00Z", "plan": "y"},
    {"user": "b", "bytes": 7, "price": "0.05", "at": "2024-10-01T10:30:00+02:00"},
    {"user": "a", "bytes": 1, "price": "3.30", "at": "2024-10-15T12:00:00Z", "plan": "z"},
]


def test_every_operation_on_known_data(client, collector):
    params = {
        "flushType": "EACH_FILE",
        "groupKeys": [{"field": "user", "operationType": "NONE"}],
        "operations": [
            {"field": "bytes", "type": "NUMERIC_SUM"},
            {"field": "price", "type": "NUMERIC_SUM", "alias": "revenue"},
            {"field": "price", "type": "NUMERIC_AVERAGE"},
            {"field": "bytes", "type": "NUMERIC_MIN"},
            {"field": "bytes", "type": "NUMERIC_MAX"},
            {"field": "plan", "type": "GENERAL_COUNT"},
            {"field": "plan", "type": "GENERAL_CARRY_FIRST"},
            {"field": "plan", "type": "GENERAL_CARRY_LAST"},
        ],
    }
    stream = run(client, collector, params, USAGE)
    by_user = {row["user"]: without_times(row) for row in logged(stream["id"])}
    # Hand-computed: a has 10+5+1 bytes, 1.10+2.20+3.30 = 6.60, average 2.20.
    assert by_user["a"] == {
        "user": "a",
        "sum_bytes": 16,
        "revenue": Decimal("6.60"),
        "avg_price": Decimal("2.2"),
        "min_bytes": 1,
        "max_bytes": 10,
        "count_plan": 3,
        "carry_first_plan": "x",
        "carry_last_plan": "z",
    }
    # b has no plan: counted 0, carried null.
    assert by_user["b"] == {
        "user": "b",
        "sum_bytes": 7,
        "revenue": Decimal("0.05"),
        "avg_price": Decimal("0.05"),
        "min_bytes": 7,
        "max_bytes": 7,
        "count_plan": 0,
        "carry_first_plan": None,
        "carry_last_plan": None,
    }


def test_sums_and_averages_are_exact(client, collector):
    params = {
        "flushType": "EACH_FILE",
        "groupKeys": [{"field": "k", "operationType": "NONE"}],
        "operations": [
            {"field": "v", "type": "NUMERIC_SUM"},
            {"field": "v", "type": "NUMERIC_AVERAGE"},
        ],
    }
    records = [{"k": 1, "v": "0.1"}, {"k": 1, "v": "0.2"}, {"k": 1, "v": 0.3}]
    stream = run(client, collector, params, records)
    (row,) = logged(stream["id"])
    assert row["sum_v"] == Decimal("0.6")
    assert row["avg_v"] == Decimal("0.2")


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        ("YEAR", {"2024": 3, "2025": 1}),
        ("MONTH", {"2024-09": 1, "2024-10": 2, "2025-01": 1}),
        ("DAY", {"2024-09-30": 1, "2024-10-01": 2, "2025-01-01": 1}),
        ("HOUR", {"2024-09-30T23": 1, "2024-10-01T08": 2, "2025-01-01T00": 1}),
    ],
)
def test_time_truncation_in_utc(client, collector, period, expected):
    params = {
        "flushType": "EACH_FILE",
        "groupKeys": [{"field": "at", "operationType": period}],
        "operations": [{"field": "n", "type": "NUMERIC_SUM"}],
    }
    records = [
        {"at": "2024-09-30T23:10:00Z", "n": 1},
        # 10:30 at +02:00 is 08:30 UTC, same hour as the next one.
        {"at": "2024-10-01T10:30:00+02:00", "n": 1},
        {"at": "2024-10-01T08:59:59.999Z", "n": 1},
        # A date without a time is midnight UTC.
        {"at": "2025-01-01", "n": 1},
    ]
    stream = run(client, collector, params, records)
    name = f"{period.lower()}_at"
    assert {row[name]: row["sum_n"] for row in logged(stream["id"])} == expected


def test_group_keys_combine_and_take_aliases(client, collector):
    params = {
        "flushType": "EACH_FILE",
        "groupKeys": [
            {"field": "user", "operationType": "NONE", "alias": "customer"},
            {"field": "at", "operationType": "MONTH", "alias": "month"},
        ],
        "operations": [{"field": "bytes", "type": "NUMERIC_SUM", "alias": "total"}],
    }
    stream = run(client, collector, params, USAGE)
    rows = sorted((row["customer"], row["month"], row["total"]) for row in logged(stream["id"]))
    assert rows == [("a", "2024-09", 10), ("a", "2024-10", 6), ("b", "2024-10", 7)]


def test_a_bad_value_fails_its_record_alone(client, collector):
    params = {
        "flushType": "EACH_FILE",
        "groupKeys": [{"field": "at", "operationType": "DAY"}],
        "operations": [{"field": "n", "type": "NUMERIC_SUM"}],
    }
    records = [
        {"at": "2024-10-01T00:00:00Z", "n": 2},
        {"at": "yesterday", "n": 1},
        {"at": "2024-10-01T05:00:00Z", "n": "many"},
        {"at": "2024-10-01T06:00:00Z", "n": 3},
    ]
    stream = run(client, collector, params, records)
    assert [without_times(row) for row in logged(stream["id"])] == [
        {"day_at": "2024-10-01", "sum_n": 5}
    ]
    reasons = sorted(
        Record.objects.filter(status=Record.Status.FAILED).values_list("failure_reason", flat=True)
    )
    assert reasons == [
        "Aggregate (aggregate): group field 'at': 'yesterday' is not an ISO 8601 timestamp",
        "Aggregate (aggregate): sum_n: 'n' is not a number ('many')",
    ]


def test_each_file_keeps_nothing_between_batches(client, collector):
    params = {
        "flushType": "EACH_FILE",
        "groupKeys": [{"field": "user", "operationType": "NONE"}],
        "operations": [{"field": "bytes", "type": "NUMERIC_SUM"}],
    }
    stream = run(client, collector, params, USAGE[:1])
    ingest(client, collector["id"], USAGE[1:2])
    process_all(collector["id"])
    assert [row["sum_bytes"] for row in logged(stream["id"])] == [10, 5]
    assert not AggregationSession.objects.exists()


def test_condition_flush_persists_sessions_until_the_condition_holds(client, collector):
    params = {
        "flushType": "CONDITION",
        "groupKeys": [{"field": "user", "operationType": "NONE"}],
        "operations": [{"field": "bytes", "type": "NUMERIC_SUM"}],
        "conditionalFlushConfig": {
            "conditions": [{"field": "sum_bytes", "op": "ge", "value": 12}],
        },
    }
    stream = run(client, collector, params, USAGE[:1])
    assert logged(stream["id"]) == []
    session = AggregationSession.objects.get()
    assert session.data["sum_bytes"] == 10
    assert session.meta["count"] == 1
    ingest(client, collector["id"], USAGE[1:2])
    process_all(collector["id"])
    (row,) = logged(stream["id"])
    assert without_times(row) == {"user": "a", "sum_bytes": 15}
    assert not AggregationSession.objects.exists()
    assert AggregationFlush.objects.get().flush_type == "CONDITION"


def test_timeout_flush_goes_downstream_once(client, collector):
    params = {
        "flushType": "TIMEOUT",
        "timeout": {"value": 1, "unit": "HOURS"},
        "groupKeys": [{"field": "user", "operationType": "NONE"}],
        "operations": [{"field": "bytes", "type": "NUMERIC_SUM"}],
    }
    stream = run(client, collector, params, USAGE)
    assert logged(stream["id"]) == []
    store = AggregationStore.objects.get(stream_id=stream["id"])
    assert store.kind == "data"
    assert store.sessions.count() == 2
    assert runner.sessions_flush_due() == 0  # nothing is due yet
    later = timezone.now() + timedelta(hours=1, seconds=1)
    assert runner.sessions_flush_due(now=later) == 2
    assert runner.sessions_flush_due(now=later) == 0
    rows = {row["user"]: row for row in logged(stream["id"])}
    assert {user: row["sum_bytes"] for user, row in rows.items()} == {"a": 16, "b": 7}
    assert rows["a"]["createdAt"] and rows["a"]["timeoutAt"]
    assert not AggregationSession.objects.exists()


def test_all_files_cannot_be_enabled_in_a_realtime_stream(client, collector):
    params = {
        "flushType": "ALL_FILES",
        "groupKeys": [{"field": "user", "operationType": "NONE"}],
        "operations": [{"field": "bytes", "type": "NUMERIC_SUM"}],
    }
    stream = import_stream(client, aggregate_stream(collector["id"], params))
    response = client.patch(f"{STREAMS}/{stream['id']}", {"enabled": True})
    assert response.status_code == 409
    assert "ALL_FILES" in response.json()["message"]


def test_an_unknown_operation_is_refused_at_import(client, collector):
    params = {
        "flushType": "EACH_FILE",
        "groupKeys": [{"field": "user", "operationType": "NONE"}],
        "operations": [{"field": "bytes", "type": "NUMERIC_MEDIAN"}],
    }
    from tests.streams.runtime.helpers import solution_id

    response = client.post(
        f"{STREAMS}/import",
        {
            "solutionId": solution_id(client),
            "streamConfig": aggregate_stream(collector["id"], params),
        },
    )
    assert response.status_code == 400
    assert "operations" in str(response.json())


def test_a_batch_streams_preview_shows_its_all_files_groups(client):
    config = {
        "name": "Counting",
        "nodes": [
            {"id": "count", "name": "Count", "type": "readers/counter", "params": {"max": 4}},
            {
                "id": "aggregate",
                "name": "Aggregate",
                "type": "transforms/data_aggregate",
                "params": {
                    "flushType": "ALL_FILES",
                    # The counter's records have no "kind": all fall in one group.
                    "groupKeys": [{"field": "kind", "operationType": "NONE"}],
                    "operations": [{"field": "value", "type": "NUMERIC_SUM"}],
                },
            },
            {"id": "out", "name": "Out", "type": "writers/log", "params": {}},
        ],
        "edges": [
            {"id": "e0", "from": "count", "to": "aggregate"},
            {"id": "e2", "from": "aggregate", "to": "out"},
        ],
    }
    stream = import_stream(client, config)
    set_stream(client, stream["id"], processingType="batch")
    response = client.post(f"{STREAMS}/{stream['id']}/preview", {})
    assert response.status_code == 200, response.content
    nodes = {node["nodeId"]: node for node in response.json()["nodes"]}
    (output,) = nodes["aggregate"]["outputs"]
    assert without_times(output["payload"]) == {"kind": None, "sum_value": 10}
    assert not StreamLogLine.objects.exists()
