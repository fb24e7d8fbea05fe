# ruff: noqa: S608 - the SQL here is metric definitions, run in the sandbox
"""Metric definitions answer hand-computed values, the same whichever query type
computes them: records sent over HTTP and processed by the work queue, metrics created
and asked over /v1/metrics (indexed ones backfilled by their task, and counting the
records processed after them as a worker processes them)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.reporting.metric_helpers import (
    backfill,
    create_metric,
    processed_collector,
    send_and_process,
    value_of,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

BASE = (timezone.now() - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)


def at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


RECORDS = [
    # customer c1, api_call: the metric's records.
    {"id": "r1", "timestamp": at(10 / 60), "type": "api_call", "customerId": "c1",
     "tokens": {"output": 10}, "model": "gpt-4", "ok": True},
    {"id": "r2", "timestamp": at(50 / 60), "type": "api_call", "customerId": "c1",
     "tokens": {"output": 2.5}, "model": "gpt-3", "ok": False},
    {"id": "r3", "timestamp": at(65 / 60), "type": "api_call", "customerId": "c1",
     "tokens": {"output": 7}, "model": "gpt-4", "ok": True},
    # Values of another type: skipped by NUMERIC and BOOLEAN metrics.
    {"id": "r4", "timestamp": at(2), "type": "api_call", "customerId": "c1",
     "tokens": {"output": "many"}, "model": "gpt-4", "ok": "yes"},
    # No property at all: counted by COUNT of records only.
    {"id": "r5", "timestamp": at(3.5), "type": "api_call", "customerId": "c1"},
    # Another customer, and another event name: never counted for c1's api_call.
    {"id": "r6", "timestamp": at(1), "type": "api_call", "customerId": "c2",
     "tokens": {"output": 100}, "model": "gpt-4"},
    {"id": "r7", "timestamp": at(1), "type": "other", "customerId": "c1",
     "tokens": {"output": 1000}},
]  # fmt: skip

TOKENS = "$.tokens.output"
NUMBER_SQL = "(payload->'tokens'->>'output')::numeric"
HAS_NUMBER = "jsonb_typeof(payload->'tokens'->'output') = 'number'"
API_CALLS = "type = 'api_call'"

# (aggregation, valueType, valueProperty, filters, complex SQL, value over all time)
CASES = [
    ("COUNT", "NUMERIC", None, None, f"SELECT count(*) FROM events WHERE {API_CALLS}", 5),
    ("COUNT", "NUMERIC", TOKENS, None,
     f"SELECT count(*) FROM events WHERE {API_CALLS} AND {HAS_NUMBER}", 3),
    ("SUM", "NUMERIC", TOKENS, None,
     f"SELECT coalesce(sum({NUMBER_SQL}), 0) FROM events WHERE {API_CALLS} AND {HAS_NUMBER}",
     Decimal("19.5")),
    ("MIN", "NUMERIC", TOKENS, None,
     f"SELECT min({NUMBER_SQL}) FROM events WHERE {API_CALLS} AND {HAS_NUMBER}", Decimal("2.5")),
    ("MAX", "NUMERIC", TOKENS, None,
     f"SELECT max({NUMBER_SQL}) FROM events WHERE {API_CALLS} AND {HAS_NUMBER}", 10),
    ("AVG", "NUMERIC", TOKENS, None,
     f"SELECT avg({NUMBER_SQL}) FROM events WHERE {API_CALLS} AND {HAS_NUMBER}", Decimal("6.5")),
    ("UNIQUE_COUNT", "NUMERIC", TOKENS, None,
     f"SELECT count(DISTINCT {NUMBER_SQL}) FROM events WHERE {API_CALLS} AND {HAS_NUMBER}", 3),
    ("LATEST", "NUMERIC", TOKENS, None,
     f"SELECT {NUMBER_SQL} FROM events WHERE {API_CALLS} AND {HAS_NUMBER} "
     "ORDER BY event_time DESC, id DESC LIMIT 1", 7),
    ("COUNT", "STRING", "$.model", None,
     f"SELECT count(*) FROM events WHERE {API_CALLS} AND jsonb_typeof(payload->'model') = 'string'",
     4),
    ("UNIQUE_COUNT", "STRING", "$.model", None,
     f"SELECT count(DISTINCT payload->>'model') FROM events WHERE {API_CALLS}", 2),
    ("LATEST", "STRING", "$.model", None, None, "gpt-4"),
    ("COUNT", "BOOLEAN", "$.ok", None,
     f"SELECT count(*) FROM events WHERE {API_CALLS} AND jsonb_typeof(payload->'ok') = 'boolean'",
     3),
    ("UNIQUE_COUNT", "BOOLEAN", "$.ok", None,
     f"SELECT count(DISTINCT payload->'ok') FROM events WHERE {API_CALLS} "
     "AND jsonb_typeof(payload->'ok') = 'boolean'", 2),
    ("LATEST", "BOOLEAN", "$.ok", None, None, True),
    ("SUM", "NUMERIC", TOKENS, [{"property": "$.model", "op": "eq", "value": "gpt-4"}],
     f"SELECT coalesce(sum({NUMBER_SQL}), 0) FROM events WHERE {API_CALLS} AND {HAS_NUMBER} "
     "AND payload->>'model' = 'gpt-4'", 17),
    ("COUNT", "NUMERIC", None, [{"property": TOKENS, "op": "gt", "value": 5}],
     f"SELECT count(*) FROM events WHERE {API_CALLS} AND {HAS_NUMBER} AND {NUMBER_SQL} > 5", 2),
    ("COUNT", "NUMERIC", None, [{"property": "$.ok", "op": "exists", "value": False}],
     f"SELECT count(*) FROM events WHERE {API_CALLS} AND payload->'ok' IS NULL", 1),
    ("COUNT", "NUMERIC", None,
     [{"property": "$.model", "op": "in", "value": ["gpt-3", "claude"]}],
     f"SELECT count(*) FROM events WHERE {API_CALLS} AND payload->>'model' IN ('gpt-3', 'claude')",
     1),
]  # fmt: skip


def _case_id(case) -> str:
    aggregation, value_type, _, filters, _, _ = case
    return f"{aggregation}-{value_type}" + ("-filtered" if filters else "")


def _metrics_for(client, case, *, suffix: str) -> dict[str, dict]:
    aggregation, value_type, prop, filters, sql, _ = case
    made = {}
    for query_type in ("simple", "indexed"):
        body = {
            "name": f"{query_type} {suffix}",
            "queryType": query_type,
            "aggregationType": aggregation,
            "eventName": "api_call",
            "valueType": value_type,
        }
        if prop:
            body["valueProperty"] = prop
        if filters:
            body["filters"] = filters
        made[query_type] = create_metric(client, body)
    if sql is not None:
        made["complex"] = create_metric(
            client, {"name": f"complex {suffix}", "queryType": "complex", "sql": sql}
        )
    return made


@pytest.fixture
def collector(client):
    return processed_collector(client)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_each_aggregation_gives_the_hand_computed_value_in_every_query_type(
    client, collector, case
):
    # Half the records are stored before the metrics (the backfill counts them), half
    # after (the work queue counts them as it processes them).
    send_and_process(client, collector, RECORDS[:3])
    made = _metrics_for(client, case, suffix="all")
    backfill(made["indexed"]["id"])
    send_and_process(client, collector, RECORDS[3:])
    expected = case[5]
    for query_type, metric in made.items():
        answer = value_of(client, metric["id"], "c1")
        assert answer["value"] == expected, (query_type, answer)
        assert answer["queryType"] == query_type
        assert answer["timeframe"] == {"type": "ALL"}
        assert answer["customerId"] == "c1"


RANGES = [
    # Partial hours at both edges: r2 and r3.
    ((0.5, 1.5), {"COUNT": 2, "SUM": Decimal("9.5"), "AVG": Decimal("4.75"), "LATEST": 7}),
    # Whole hours only: r3, r4, r5.
    ((1, 4), {"COUNT": 3, "SUM": 7, "AVG": 7, "LATEST": 7}),
    # Within one hour: r1 only.
    ((0, 0.5), {"COUNT": 1, "SUM": 10, "AVG": 10, "LATEST": 10}),
    # Nothing there.
    ((5, 6), {"COUNT": 0, "SUM": 0, "AVG": None, "LATEST": None}),
]


@pytest.mark.parametrize(("bounds", "expected"), RANGES)
def test_ranges_with_partial_hours_agree_across_query_types(client, collector, bounds, expected):
    send_and_process(client, collector, RECORDS)
    timeframe = {"type": "RANGE", "start": at(bounds[0]), "end": at(bounds[1])}
    for aggregation, wanted in expected.items():
        case = next(case for case in CASES if case[0] == aggregation and case[1] == "NUMERIC"
                    and (case[2] or aggregation == "COUNT") and not case[3])  # fmt: skip
        made = _metrics_for(client, case, suffix=f"{aggregation} {bounds}")
        backfill(made["indexed"]["id"])
        for query_type, metric in made.items():
            answer = value_of(client, metric["id"], "c1", timeframe)
            assert answer["value"] == wanted, (aggregation, query_type, answer)
            assert answer["timeframe"]["type"] == "RANGE"
            assert answer["timeframe"]["start"].startswith(at(bounds[0])[:16])
