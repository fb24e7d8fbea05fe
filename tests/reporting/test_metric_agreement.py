# ruff: noqa: S608 - the SQL here is metric definitions, run in the sandbox
"""Property: over the same records a metric has one value, whichever query type
computes it (simple, indexed, complex) and whatever the timeframe, and it is the value
the records give by hand; another operator's records with the same customers and event
names never change it.

Records go in over HTTP and through the work queue; some are stored before the indexed
metric (its backfill counts them, in several small steps), the rest after (processing
counts them). Each example uses its own event name and customers, so examples never see
each other's records."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reporting.metric_helpers import (
    backfill,
    create_metric,
    processed_collector,
    send_and_process,
    value_of,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

BASE = (timezone.now() - timedelta(days=20)).replace(second=0, microsecond=0)
SPAN_MINUTES = 4 * 24 * 60
_examples = itertools.count()

NUMBERS = st.one_of(
    st.integers(-1000, 1000),
    st.decimals(-1000, 1000, places=2, allow_nan=False, allow_infinity=False),
)
VALUES = st.one_of(
    st.none(), NUMBERS, NUMBERS, st.sampled_from(["red", "green", "blue"]), st.booleans()
)
RECORD = st.fixed_dictionaries(
    {
        "customer": st.sampled_from(["a", "b"]),
        "other_type": st.booleans(),
        "minute": st.integers(0, SPAN_MINUTES),
        "value": VALUES,
    }
)
CASES = st.sampled_from(
    [("NUMERIC", aggregation) for aggregation in
     ("COUNT", "SUM", "MIN", "MAX", "AVG", "UNIQUE_COUNT", "LATEST")]
    + [(kind, aggregation) for kind in ("STRING", "BOOLEAN")
       for aggregation in ("COUNT", "UNIQUE_COUNT", "LATEST")]
)  # fmt: skip


def _typed(value, value_type):
    if value_type == "NUMERIC":
        is_number = isinstance(value, int | Decimal) and not isinstance(value, bool)
        return Decimal(value) if is_number else None
    if value_type == "STRING":
        return value if isinstance(value, str) else None
    return value if isinstance(value, bool) else None


def _by_hand(records, aggregation, value_type, start_minute, end_minute):
    """The value from the generated records (customer a, the metric's event name)."""
    chosen = [
        record
        for record in records
        if record["customer"] == "a"
        and not record["other_type"]
        and (start_minute is None or record["minute"] >= start_minute)
        and (end_minute is None or record["minute"] < end_minute)
    ]
    values = [
        (record["minute"], _typed(record["value"], value_type))
        for record in chosen
        if _typed(record["value"], value_type) is not None
    ]
    numbers = [value for _, value in values]
    if aggregation == "COUNT":
        return len(values)
    if aggregation == "SUM":
        return sum(numbers, Decimal(0))
    if aggregation == "MIN":
        return min(numbers) if numbers else None
    if aggregation == "MAX":
        return max(numbers) if numbers else None
    if aggregation == "AVG":
        return sum(numbers, Decimal(0)) / len(numbers) if numbers else None
    if aggregation == "UNIQUE_COUNT":
        return len({str(value) if isinstance(value, bool) else value for value in numbers})
    return max(values, key=lambda pair: pair[0])[1] if values else None


_JSON_TYPE = {"NUMERIC": "number", "STRING": "string", "BOOLEAN": "boolean"}


def _complex_sql(aggregation, value_type, event_name) -> str | None:
    has_value = f"jsonb_typeof(payload->'v') = '{_JSON_TYPE[value_type]}'"
    where = f"WHERE type = '{event_name}' AND {has_value}"
    number = "(payload->>'v')::numeric"
    text = "payload->>'v'"
    return {
        "COUNT": f"SELECT count(*) FROM events {where}",
        "SUM": f"SELECT coalesce(sum({number}), 0) FROM events {where}",
        "MIN": f"SELECT min({number}) FROM events {where}",
        "MAX": f"SELECT max({number}) FROM events {where}",
        "AVG": f"SELECT avg({number}) FROM events {where}",
        "UNIQUE_COUNT": "SELECT count(DISTINCT "
        f"{number if value_type == 'NUMERIC' else text}) FROM events {where}",
        "LATEST": f"SELECT {number} FROM events {where} ORDER BY event_time DESC LIMIT 1"
        if value_type == "NUMERIC"
        else None,
    }[aggregation]


def _wire(record, event_name, suffix, value=None):
    body = {
        "type": f"x{event_name}" if record["other_type"] else event_name,
        "customerId": f"{record['customer']}{suffix}",
        "timestamp": (BASE + timedelta(minutes=record["minute"])).isoformat(),
    }
    body["v"] = record["value"] if value is None else value
    if body["v"] is None:
        del body["v"]
    return body


def _close(answer, expected):
    """AVG is a division: PostgreSQL's numeric division and Python's agree to far more
    places than a bill needs; every other value is equal exactly."""
    if isinstance(expected, Decimal) and isinstance(answer, Decimal | int | float):
        return abs(Decimal(str(answer)) - expected) < Decimal("1e-12")
    return answer == expected


@pytest.fixture
def scene(acme, globex, api_client, settings):
    # Small backfill steps: the backfill of every example takes several.
    settings.TALLY["METRICS"]["BACKFILL_CHUNK"] = 3
    ours, theirs = api_client(acme.token), api_client(globex.token)
    return ours, processed_collector(ours), theirs, processed_collector(theirs)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=CASES,
    records=st.lists(RECORD, max_size=14, unique_by=lambda record: record["minute"]),
    split=st.integers(0, 14),
    bounds=st.tuples(st.integers(-60, SPAN_MINUTES + 60), st.integers(1, SPAN_MINUTES)),
    other_values=st.lists(NUMBERS, min_size=14, max_size=14),
)
def test_every_query_type_gives_the_value_of_the_records(
    scene, case, records, split, bounds, other_values
):
    ours, collector, theirs, their_collector = scene
    value_type, aggregation = case
    example = next(_examples)
    event_name, suffix = f"ev{example}", f"-{example}"
    customer = f"a{suffix}"

    # Another operator: the same customers, event names and times, other values.
    send_and_process(
        theirs,
        their_collector,
        [
            _wire(record, event_name, suffix, other)
            for record, other in zip(records, other_values, strict=False)
        ],
    )
    send_and_process(
        ours, collector, [_wire(record, event_name, suffix) for record in records[:split]]
    )
    metrics = {}
    for query_type in ("simple", "indexed"):
        body = {
            "name": f"{query_type} {example}",
            "queryType": query_type,
            "aggregationType": aggregation,
            "eventName": event_name,
            "valueType": value_type,
            "valueProperty": "$.v",
        }
        metrics[query_type] = create_metric(ours, body)["id"]
    sql = _complex_sql(aggregation, value_type, event_name)
    if sql is not None:
        metrics["complex"] = create_metric(
            ours, {"name": f"complex {example}", "queryType": "complex", "sql": sql}
        )["id"]
    backfill(metrics["indexed"])
    send_and_process(
        ours, collector, [_wire(record, event_name, suffix) for record in records[split:]]
    )

    start, length = bounds
    timeframes = [
        (None, None, None),
        (
            start,
            start + length,
            {
                "type": "RANGE",
                "start": (BASE + timedelta(minutes=start)).isoformat(),
                "end": (BASE + timedelta(minutes=start + length)).isoformat(),
            },
        ),
    ]
    for start_minute, end_minute, timeframe in timeframes:
        expected = _by_hand(records, aggregation, value_type, start_minute, end_minute)
        answers = {
            query_type: value_of(ours, metric_id, customer, timeframe)["value"]
            for query_type, metric_id in metrics.items()
        }
        for query_type, answer in answers.items():
            assert _close(answer, expected), (query_type, timeframe, answers, expected)
        # Between query types: exactly the same, AVG included.
        assert len({repr(answer) for answer in answers.values()}) == 1, answers
