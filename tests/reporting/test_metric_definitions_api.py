"""/v1/metrics: metric definitions as an operator's client uses them, over HTTP.

The definitions' rules (reporting.definitions), each with its status and the field it
names; tenancy on every endpoint; soft delete; the value's timeframes (billing cycles
made through the billing API); the backfill of indexed metrics (409 until READY);
previews that store nothing; scopes; the list's paging; and the OpenAPI document against
real answers. Hand-computed values per aggregation are in test_metric_values.py.
"""

from __future__ import annotations

import datetime
import json
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tenants.services import application_access_create
from tests.conftest import assert_error_body, issue_token
from tests.openapi import openapi_document, problems, resolved, strict
from tests.reporting.metric_helpers import (
    METRICS,
    backfill,
    create_metric,
    processed_collector,
    send_and_process,
    value_of,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

BILLING = "/billing/v1"
DEFINITION_KEYS = {
    "id",
    "name",
    "description",
    "queryType",
    "aggregationType",
    "eventName",
    "valueType",
    "valueProperty",
    "filters",
    "sql",
    "indexStatus",
    "backfillProgress",
    "createdAt",
    "updatedAt",
}
VALUE_KEYS = {"id", "name", "customerId", "value", "queryType", "timeframe"}

# Event times of the scenes: whole hours, ten days back (inside the ingestion window).
BASE = (timezone.now() - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)

SUM_SQL = (
    "SELECT coalesce(sum((payload->>'n')::numeric), 0) FROM events "
    "WHERE type = 'api_call' AND jsonb_typeof(payload->'n') = 'number'"
)
COUNT_SQL = "SELECT count(*) FROM events WHERE type = 'api_call'"


def at(hours: float) -> str:
    """An event time `hours` after BASE, as a client writes it."""
    return (BASE + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def answered(hours: float) -> str:
    """The same moment as Tally answers it (milliseconds, Z)."""
    return (BASE + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def simple(**overrides) -> dict:
    return {
        "name": "API calls",
        "queryType": "simple",
        "aggregationType": "COUNT",
        "eventName": "api_call",
        **overrides,
    }


def indexed(**overrides) -> dict:
    return simple(**{"name": "Indexed calls", "queryType": "indexed", **overrides})


def complex_(sql: str = COUNT_SQL, **overrides) -> dict:
    return {"name": "SQL calls", "queryType": "complex", "sql": sql, **overrides}


def without(body: dict, *keys: str) -> dict:
    return {key: value for key, value in body.items() if key not in keys}


def error_fields(response, status: int = 400) -> list[str]:
    return [item["field"] for item in assert_error_body(response, status)["details"]]


def total(client) -> int:
    response = client.get(METRICS)
    assert response.status_code == 200, response.content
    return int(response["X-Total-Count"])


def value_response(client, metric_id: str, query: str):
    return client.get(f"{METRICS}/{metric_id}/value?{query}")


def preview(client, body: dict, customer_id: str = "c1", **extra):
    return client.post(f"{METRICS}/preview", {**body, "customerId": customer_id, **extra})


def token_for(operator, *scopes: str) -> str:
    """A token of another application of `operator`, granted only `scopes`."""
    issued = application_access_create(
        operator=operator, name=f"app {' '.join(scopes) or 'none'}", scopes=list(scopes)
    )
    return issue_token(Client(), issued.client_id, issued.client_secret)["access_token"]


def api_call(record_id: str, hours: float, customer: str = "c1", **fields) -> dict:
    return {
        "id": record_id,
        "timestamp": at(hours),
        "type": "api_call",
        "customerId": customer,
        **fields,
    }


@pytest.fixture
def metric(client) -> dict:
    return create_metric(client, simple())


@pytest.fixture
def collector(client) -> str:
    return processed_collector(client)


# -- Create, read, update, delete -------------------------------------------------------


def test_a_definition_round_trips_through_create_get_list_update_and_delete(client):
    body = simple(
        description="Every call.", filters=[{"property": "$.ok", "op": "eq", "value": True}]
    )
    created = client.post(METRICS, body)
    assert created.status_code == 201, created.content
    metric = created.json()
    assert set(metric) == DEFINITION_KEYS
    assert metric["name"] == "API calls" and metric["description"] == "Every call."
    assert metric["filters"] == [{"property": "$.ok", "op": "eq", "value": True}]
    assert metric["createdAt"] == metric["updatedAt"]
    url = f"{METRICS}/{metric['id']}"

    assert client.get(url).json() == metric
    listed = client.get(METRICS)
    assert listed.json() == [metric] and listed["X-Total-Count"] == "1"

    updated = client.post(f"{url}/update", {"name": "Calls", "description": ""})
    assert updated.status_code == 200, updated.content
    changed = updated.json()
    assert changed == {
        **metric,
        "name": "Calls",
        "description": "",
        "updatedAt": changed["updatedAt"],
    }
    assert changed["updatedAt"] >= metric["updatedAt"]
    assert client.get(url).json() == changed

    deleted = client.post(f"{url}/delete")
    assert deleted.status_code == 200, deleted.content
    assert deleted.json() == {"deletedCount": 1}
    assert client.get(METRICS).json() == []


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            simple(),
            {
                "queryType": "simple",
                "aggregationType": "COUNT",
                "eventName": "api_call",
                "valueType": "NUMERIC",
                "valueProperty": None,
                "filters": [],
                "sql": None,
                "indexStatus": None,
                "backfillProgress": None,
                "description": "",
            },
        ),
        (
            simple(aggregationType="LATEST", valueType="STRING", valueProperty="$.model"),
            {
                "aggregationType": "LATEST",
                "valueType": "STRING",
                "valueProperty": "$.model",
                "sql": None,
                "indexStatus": None,
            },
        ),
        (
            indexed(aggregationType="SUM", valueProperty="$.tokens.output"),
            {
                "queryType": "indexed",
                "aggregationType": "SUM",
                "valueProperty": "$.tokens.output",
                "sql": None,
                "indexStatus": "BACKFILLING",
                "backfillProgress": 0.0,
            },
        ),
        (
            complex_(),
            {
                "queryType": "complex",
                "aggregationType": None,
                "eventName": None,
                "valueType": "NUMERIC",
                "valueProperty": None,
                "filters": [],
                "sql": COUNT_SQL,
                "indexStatus": None,
                "backfillProgress": None,
            },
        ),
    ],
    ids=["simple-count", "simple-latest-string", "indexed", "complex"],
)
def test_created_definitions_answer_camel_case_fields_with_nulls_for_the_absent(
    client, body, expected
):
    metric = create_metric(client, body)
    assert set(metric) == DEFINITION_KEYS
    assert {key: metric[key] for key in expected} == expected
    for key in ("createdAt", "updatedAt"):
        assert len(metric[key]) == 24 and metric[key].endswith("Z")


def test_filter_values_keep_their_exact_numbers(client):
    # Sent as text: the numbers must reach Tally as written, not as floats.
    filters = (
        '[{"property": "$.price", "op": "gte", "value": 0.1},'
        ' {"property": "$[\\"a key\\"][0]", "op": "in", "value": [1, 2.50, "x", false]},'
        ' {"property": "$.n", "op": "eq", "value": 12345678901234567890}]'
    )
    body = json.dumps(simple(filters="FILTERS")).replace('"FILTERS"', filters)
    created = client.post(METRICS, body)
    assert created.status_code == 201, created.content
    text = client.get(f"{METRICS}/{created.json()['id']}").content
    answered_filters = json.loads(text, parse_float=Decimal)["filters"]
    assert [item["value"] for item in answered_filters] == [
        Decimal("0.1"),
        [1, Decimal("2.50"), "x", False],
        12345678901234567890,
    ]
    assert answered_filters[1]["property"] == '$["a key"][0]'


def test_indexed_metric_is_backfilling_until_its_backfill_ran_then_ready(client):
    metric = create_metric(client, indexed())
    assert (metric["indexStatus"], metric["backfillProgress"]) == ("BACKFILLING", 0.0)
    backfill(metric["id"])
    ready = client.get(f"{METRICS}/{metric['id']}").json()
    assert (ready["indexStatus"], ready["backfillProgress"]) == ("READY", 1.0)
    listed = client.get(METRICS).json()
    assert listed[0]["indexStatus"] == "READY"


def test_a_name_is_unique_among_the_operators_live_metrics(client, metric):
    error = assert_error_body(client.post(METRICS, simple(queryType="indexed")), 409)
    assert "API calls" in error["message"]
    other = create_metric(client, simple(name="Other"))
    renamed = client.post(f"{METRICS}/{other['id']}/update", {"name": "API calls"})
    assert_error_body(renamed, 409)
    assert client.get(f"{METRICS}/{other['id']}").json()["name"] == "Other"
    assert total(client) == 2


def test_names_are_per_operator(client, metric, globex, api_client):
    assert api_client(globex.token).post(METRICS, simple()).status_code == 201


@pytest.mark.parametrize("metric_id", ["nope", "8a76066d-ff29-417c-a18e-abde22e44310"])
def test_unknown_ids_are_404_on_every_endpoint(client, metric_id):
    url = f"{METRICS}/{metric_id}"
    assert_error_body(client.get(url), 404)
    assert_error_body(client.post(f"{url}/update", {"name": "x"}), 404)
    assert_error_body(client.post(f"{url}/delete"), 404)
    assert_error_body(client.get(f"{url}/value?customerId=c1"), 404)


def test_create_of_a_complex_metric_accepts_and_ignores_aggregation_and_event_name(
    client, collector
):
    send_and_process(
        client,
        collector,
        [api_call("r1", 1, n=5), api_call("r2", 2, n=2), api_call("r3", 3, type="other", n=100)],
    )
    metric = create_metric(
        client, complex_(SUM_SQL, aggregationType="MAX", eventName="other", valueType="NUMERIC")
    )
    # Ignored, so not stored: the SQL alone says what is computed.
    assert metric["aggregationType"] is None and metric["eventName"] is None
    # Neither MAX (5) nor the event name "other" (100) plays a part: the SQL sums api_calls.
    assert value_of(client, metric["id"], "c1")["value"] == 7
    counting = create_metric(client, complex_(name="n", aggregationType="SUM", eventName="x"))
    assert value_of(client, counting["id"], "c1")["value"] == 2


# -- Tenancy ------------------------------------------------------------------------------


def test_another_operator_gets_404_from_every_endpoint(client, metric, globex, api_client):
    intruder = api_client(globex.token)
    url = f"{METRICS}/{metric['id']}"
    assert_error_body(intruder.get(url), 404)
    assert_error_body(intruder.post(f"{url}/update", {"name": "pwned"}), 404)
    assert_error_body(intruder.post(f"{url}/delete"), 404)
    assert_error_body(intruder.get(f"{url}/value?customerId=c1"), 404)
    assert intruder.get(METRICS).json() == []
    assert intruder.get(METRICS)["X-Total-Count"] == "0"
    assert client.get(url).json() == metric


def test_values_never_count_another_operators_records(client, collector, globex, api_client):
    """Both operators send records of the same customer, event name and record ids; some
    before the metrics exist (the backfill counts them), some after (processing does)."""
    theirs = api_client(globex.token)
    their_collector = processed_collector(theirs)
    send_and_process(client, collector, [api_call("r1", 1, n=1)])
    send_and_process(theirs, their_collector, [api_call("r1", 1, n=100), api_call("r2", 2, n=200)])
    bodies = [
        simple(name="s", aggregationType="SUM", valueProperty="$.n"),
        indexed(name="i", aggregationType="SUM", valueProperty="$.n"),
        complex_(SUM_SQL, name="c"),
    ]
    ours = [create_metric(client, body) for body in bodies]
    their_metrics = [create_metric(theirs, body) for body in bodies]
    backfill(ours[1]["id"])
    backfill(their_metrics[1]["id"])
    send_and_process(client, collector, [api_call("r2", 2, n=2)])
    send_and_process(theirs, their_collector, [api_call("r3", 3, n=300)])

    for metric in ours:
        assert value_of(client, metric["id"], "c1")["value"] == 3, metric["queryType"]
    for metric in their_metrics:
        assert value_of(theirs, metric["id"], "c1")["value"] == 600, metric["queryType"]
    for body in bodies:
        answer = preview(client, without(body, "name"))
        assert answer.status_code == 200, answer.content
        assert answer.json()["value"] == 3, body["queryType"]


# -- Update: immutable and unknown fields --------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("queryType", "simple"),
        ("queryType", "indexed"),
        ("aggregationType", "COUNT"),
        ("aggregationType", "SUM"),
        ("valueType", "NUMERIC"),
        ("valueType", "STRING"),
    ],
    ids=[
        "queryType-same",
        "queryType",
        "aggregation-same",
        "aggregation",
        "valueType-same",
        "valueType",
    ],
)
def test_immutable_fields_are_400_even_with_the_same_value(client, metric, field, value):
    url = f"{METRICS}/{metric['id']}"
    response = client.post(f"{url}/update", {"name": "Renamed", field: value})
    assert field in error_fields(response)
    assert client.get(url).json() == metric


@pytest.mark.parametrize(
    "body, field",
    [
        ({"colour": "red"}, "colour"),
        ({"id": "8a76066d-ff29-417c-a18e-abde22e44310"}, "id"),
        ({"indexStatus": "READY"}, "indexStatus"),
        ({"createdAt": "2024-01-01T00:00:00Z"}, "createdAt"),
        ({"event_name": "snake"}, "event_name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"description": 5}, "description"),
        ({"eventName": None}, "eventName"),
        ({"eventName": ""}, "eventName"),
        ({"valueProperty": "$."}, "valueProperty"),
        ({"filters": {"property": "$.a"}}, "filters"),
        ({"filters": [{"property": "$.a", "op": "like", "value": "x"}]}, "filters[0].op"),
        ({"sql": COUNT_SQL}, "sql"),
        ({"customerId": "c1"}, "customerId"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_updates_are_400_naming_the_field_and_change_nothing(client, metric, body, field):
    url = f"{METRICS}/{metric['id']}"
    assert field in error_fields(client.post(f"{url}/update", body))
    assert client.get(url).json() == metric


def test_update_rechecks_the_whole_definition(client):
    summed = create_metric(client, simple(aggregationType="SUM", valueProperty="$.n"))
    url = f"{METRICS}/{summed['id']}"
    assert "valueProperty" in error_fields(client.post(f"{url}/update", {"valueProperty": None}))
    sql = create_metric(client, complex_())
    sql_url = f"{METRICS}/{sql['id']}"
    for body, field in (
        ({"sql": "DELETE FROM events"}, "sql"),
        ({"sql": None}, "sql"),
        ({"valueProperty": "$.n"}, "valueProperty"),
        ({"filters": [{"property": "$.a", "op": "eq", "value": 1}]}, "filters"),
    ):
        assert field in error_fields(client.post(f"{sql_url}/update", body)), body
    changed = client.post(f"{sql_url}/update", {"sql": SUM_SQL})
    assert changed.status_code == 200, changed.content
    assert changed.json()["sql"] == SUM_SQL


def test_an_empty_update_is_400(client, metric):
    assert_error_body(client.post(f"{METRICS}/{metric['id']}/update", {}), 400)
    assert client.get(f"{METRICS}/{metric['id']}").json() == metric


def test_unknown_and_read_only_fields_at_create_are_400(client):
    for extra in ({"colour": "red"}, {"id": "x"}, {"indexStatus": "READY"}, {"customerId": "c"}):
        field = next(iter(extra))
        assert field in error_fields(client.post(METRICS, simple(**extra))), extra
    assert total(client) == 0


# -- Soft delete ------------------------------------------------------------------------


def test_a_deleted_metric_is_404_everywhere_and_frees_its_name(client, metric):
    kept = create_metric(client, simple(name="Kept"))
    assert total(client) == 2
    url = f"{METRICS}/{metric['id']}"
    response = client.post(f"{url}/delete")
    assert response.status_code == 200 and response.json() == {"deletedCount": 1}

    assert_error_body(client.get(url), 404)
    assert_error_body(client.post(f"{url}/update", {"name": "Back"}), 404)
    assert_error_body(client.post(f"{url}/delete"), 404)
    assert_error_body(client.get(f"{url}/value?customerId=c1"), 404)
    listed = client.get(METRICS)
    assert [item["id"] for item in listed.json()] == [kept["id"]]
    assert listed["X-Total-Count"] == "1"

    again = create_metric(client, simple())
    assert again["id"] != metric["id"]
    assert total(client) == 2


def test_deleting_an_indexed_metric_while_it_backfills(client):
    metric = create_metric(client, indexed())
    assert client.post(f"{METRICS}/{metric['id']}/delete").json() == {"deletedCount": 1}
    backfill(metric["id"])  # a queued backfill finds it gone and does nothing
    assert_error_body(client.get(f"{METRICS}/{metric['id']}/value?customerId=c1"), 404)
    assert create_metric(client, indexed())["indexStatus"] == "BACKFILLING"


def test_the_http_delete_method_is_405_on_every_metric_route(client, metric):
    url = f"{METRICS}/{metric['id']}"
    for path in (url, f"{url}/value", f"{url}/update", f"{url}/delete", METRICS):
        response = client.delete(path)
        assert_error_body(response, 405)
    assert client.get(url).status_code == 200


# -- The rules of a definition ------------------------------------------------------------

STRING_VALUES = dict(valueType="STRING", valueProperty="$.model")
BOOLEAN_VALUES = dict(valueType="BOOLEAN", valueProperty="$.ok")

INVALID = [
    # What simple and indexed metrics need.
    (without(simple(), "aggregationType"), "aggregationType"),
    (without(indexed(), "aggregationType"), "aggregationType"),
    (simple(aggregationType=None), "aggregationType"),
    (without(simple(), "eventName"), "eventName"),
    (without(indexed(), "eventName"), "eventName"),
    (simple(eventName="   "), "eventName"),
    (simple(eventName="e" * 201), "eventName"),
    (simple(eventName=7), "eventName"),
    (without(simple(), "queryType"), "queryType"),
    (simple(queryType="SIMPLE"), "queryType"),
    (simple(aggregationType="MEDIAN"), "aggregationType"),
    (simple(valueType="INTEGER"), "valueType"),
    # Arithmetic and ordering are for numbers.
    *[
        (simple(aggregationType=aggregation, **values), "aggregationType")
        for aggregation in ("SUM", "MIN", "MAX", "AVG")
        for values in (STRING_VALUES, BOOLEAN_VALUES)
    ],
    (indexed(aggregationType="SUM", **STRING_VALUES), "aggregationType"),
    # Aggregations that read a value need its property.
    *[
        (simple(aggregationType=aggregation), "valueProperty")
        for aggregation in ("SUM", "MIN", "MAX", "AVG", "UNIQUE_COUNT", "LATEST")
    ],
    (indexed(aggregationType="SUM", valueProperty=""), "valueProperty"),
    # Property paths.
    *[
        (simple(valueProperty=path), "valueProperty")
        for path in (
            "$.",
            "$..a",
            "$[x]",
            "$",
            "$.a[",
            "$.1abc",
            "$.a b",
            "$.a[-1]",
            "$.a[*]",
            "   ",
            "$." + "a" * 499,  # 501 characters
            "$" + ".a" * 17,  # 17 levels
        )
    ],
    (simple(valueProperty=5), "valueProperty"),
    # Filters.
    (simple(filters=[{"property": "$.a", "op": "like", "value": "x"}]), "filters[0].op"),
    (simple(filters=[{"property": "$.a", "op": "GT", "value": 1}]), "filters[0].op"),
    (simple(filters=[{"property": "$.a", "value": 1}]), "filters[0].op"),
    (simple(filters=[{"property": "$.a", "op": "gt", "value": "5"}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "lte", "value": True}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "in", "value": []}]), "filters[0].value"),
    (
        simple(filters=[{"property": "$.a", "op": "in", "value": list(range(101))}]),
        "filters[0].value",
    ),
    (simple(filters=[{"property": "$.a", "op": "in", "value": [{"b": 1}]}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "in", "value": [[1]]}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "in", "value": "x"}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "exists", "value": "true"}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "exists", "value": 1}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "eq", "value": {"b": 1}}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "eq", "value": None}]), "filters[0].value"),
    (simple(filters=[{"property": "$.a", "op": "eq"}]), "filters[0].value"),
    (
        simple(filters=[{"property": "$.a", "op": "eq", "value": 1, "colour": "red"}]),
        "filters[0].colour",
    ),
    (simple(filters=[{"property": "$..a", "op": "eq", "value": 1}]), "filters[0].property"),
    (simple(filters=[{"op": "eq", "value": 1}]), "filters[0].property"),
    (
        simple(filters=[{"property": "$.a", "op": "eq", "value": 1}, "x"]),
        "filters[1]",
    ),
    (simple(filters={"property": "$.a", "op": "eq", "value": 1}), "filters"),
    (simple(filters="$.a = 1"), "filters"),
    (simple(filters=[{"property": "$.a", "op": "exists", "value": True}] * 11), "filters"),
    # SQL is for complex metrics only.
    (simple(sql=COUNT_SQL), "sql"),
    (indexed(sql=COUNT_SQL), "sql"),
    (without(complex_(), "sql"), "sql"),
    (complex_(""), "sql"),
    (complex_(None), "sql"),
    (complex_(valueProperty="$.n"), "valueProperty"),
    (complex_(filters=[{"property": "$.a", "op": "eq", "value": 1}]), "filters"),
    (complex_(valueType="STRING"), "valueType"),
    (complex_(valueType="BOOLEAN"), "valueType"),
    # The sandbox refuses what is not one SELECT over events.
    (complex_("DELETE FROM events"), "sql"),
    (complex_("SELECT 1; SELECT 2"), "sql"),
    (complex_("SELECT pg_sleep(1)"), "sql"),
    (complex_("DROP TABLE events"), "sql"),
    (complex_("SELECT count(*) FROM collection_record"), "sql"),
    (complex_("SELECT count(*) FROM pg_catalog.pg_user"), "sql"),
    (complex_("SELECT count(*) FROM events FOR UPDATE"), "sql"),
    (complex_("SELECT count(*) FROM events; DELETE FROM events"), "sql"),
    (complex_("SELECT " * 2), "sql"),
    (complex_("SELECT 1 " + " " * 20_000), "sql"),
]


def _invalid_id(case) -> str:
    body, field = case
    shown = {key: value for key, value in body.items() if key != "name"}
    text = json.dumps(shown, default=str)
    return f"{field}:{text[:70]}"


@pytest.mark.parametrize("case", INVALID, ids=[_invalid_id(case) for case in INVALID])
def test_invalid_definitions_are_400_at_create_and_preview_naming_the_field(client, case):
    body, field = case
    assert field in error_fields(client.post(METRICS, body)), "create"
    assert field in error_fields(preview(client, without(body, "name"))), "preview"
    assert total(client) == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"description": ["x"]}, "description"),
        ({"description": "d" * 2001}, "description"),
    ],
)
def test_invalid_names_and_descriptions_are_400(client, body, field):
    assert field in error_fields(client.post(METRICS, {**simple(), **body}))
    assert total(client) == 0


def test_name_is_required_at_create_but_not_in_a_preview(client):
    assert "name" in error_fields(client.post(METRICS, without(simple(), "name")))
    assert preview(client, without(simple(), "name")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        simple(),
        simple(aggregationType="UNIQUE_COUNT", **STRING_VALUES),
        simple(aggregationType="LATEST", **BOOLEAN_VALUES),
        simple(aggregationType="COUNT", valueType="BOOLEAN"),
        simple(valueProperty='$["a key"].items[0]'),
        simple(valueProperty="tokens.output"),
        simple(valueProperty="$." + "a" * 498),  # 500 characters
        simple(valueProperty="$" + ".a" * 16),  # 16 levels
        simple(
            filters=[
                {"property": "$.a", "op": "in", "value": list(range(100))},
                {"property": "$.b", "op": "exists", "value": False},
                {"property": "$.c", "op": "neq", "value": "x"},
                {"property": "$.d", "op": "lt", "value": -1.5},
            ]
        ),
        simple(filters=[{"property": "$.a", "op": "exists", "value": True}] * 10),
        simple(filters=None, valueProperty=None, sql=None),
        simple(filters=[]),
        indexed(aggregationType="AVG", valueProperty="$.n"),
        complex_("WITH e AS (SELECT * FROM events) SELECT count(*) FROM e"),
        complex_(f"  {COUNT_SQL}\n  -- a comment\n"),
        complex_(valueType="NUMERIC", filters=[], valueProperty=None),
    ],
    ids=lambda body: json.dumps(without(body, "name"))[:60],
)
def test_valid_definitions_are_accepted(client, body):
    created = client.post(METRICS, body)
    assert created.status_code == 201, created.content
    answer = preview(client, without(body, "name"))
    assert answer.status_code == 200, answer.content


# -- Timeframes ---------------------------------------------------------------------------


@pytest.fixture
def three_calls(client, collector) -> dict:
    """c1's api calls at hours 1, 2 and 3; the metric counting them."""
    send_and_process(client, collector, [api_call(f"r{h}", h) for h in (1, 2, 3)])
    return create_metric(client, simple())


def _range_json(kind: str = "RANGE", start: str | None = None, end: str | None = None) -> str:
    return json.dumps({"type": kind, "start": start or at(1), "end": end or at(3)})


def _shifted(hours: float, offset: str) -> str:
    sign = 1 if offset[0] == "+" else -1
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    moment = (BASE + timedelta(hours=hours)).astimezone(datetime.timezone(shift))
    return moment.isoformat()


RANGE_FORMS = {
    "json": urlencode({"timeframe": _range_json()}),
    "json-absolute": urlencode({"timeframe": _range_json("ABSOLUTE")}),
    "brackets": urlencode(
        {"timeframe[type]": "RANGE", "timeframe[start]": at(1), "timeframe[end]": at(3)}
    ),
    "brackets-absolute": urlencode(
        {"timeframe[type]": "ABSOLUTE", "timeframe[start]": at(1), "timeframe[end]": at(3)}
    ),
    "offsets": urlencode(
        {"timeframe": _range_json(start=_shifted(1, "+02:00"), end=_shifted(3, "-05:30"))}
    ),
    "milliseconds": urlencode(
        {"timeframe": _range_json(start=answered(1), end=answered(3).replace("Z", "+00:00"))}
    ),
}
ALL_FORMS = {
    "absent": "",
    "bare": "timeframe=ALL",
    "bare-lower": "timeframe=all",
    "empty": "timeframe=",
    "json": urlencode({"timeframe": '{"type": "ALL"}'}),
    "json-null": "timeframe=null",
    "brackets": urlencode({"timeframe[type]": "ALL"}),
}


def test_every_form_of_a_timeframe_gives_the_same_answer(client, three_calls):
    metric_id = three_calls["id"]
    for name, query in RANGE_FORMS.items():
        response = value_response(client, metric_id, f"customerId=c1&{query}")
        assert response.status_code == 200, (name, response.content)
        assert response.json() == {
            "id": metric_id,
            "name": "API calls",
            "customerId": "c1",
            "value": 2,  # start included, end excluded
            "queryType": "simple",
            "timeframe": {"type": "RANGE", "start": answered(1), "end": answered(3)},
        }, name
    for name, query in ALL_FORMS.items():
        response = value_response(client, metric_id, f"customerId=c1&{query}")
        assert response.status_code == 200, (name, response.content)
        answer = response.json()
        assert (answer["value"], answer["timeframe"]) == (3, {"type": "ALL"}), name


def test_a_preview_takes_the_timeframe_as_an_object(client, three_calls):
    body = without(simple(), "name")
    ranged = {"type": "ABSOLUTE", "start": at(2), "end": at(4)}
    answer = preview(client, body, timeframe=ranged).json()
    assert answer["value"] == 2
    assert answer["timeframe"] == {"type": "RANGE", "start": answered(2), "end": answered(4)}
    assert preview(client, body, timeframe=None).json()["timeframe"] == {"type": "ALL"}
    assert preview(client, body, timeframe={"type": "ALL"}).json()["value"] == 3


START, END = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
BAD_TIMEFRAMES = [
    ({"timeframe": "{not json"}, "timeframe"),
    ({"timeframe": "WEEK"}, "timeframe.type"),
    ({"timeframe": "5"}, "timeframe"),
    ({"timeframe": "[]"}, "timeframe"),
    ({"timeframe": '"ALL"'}, "timeframe"),
    ({"timeframe": json.dumps({"type": "WEEK"})}, "timeframe.type"),
    ({"timeframe": json.dumps({"start": START, "end": END})}, "timeframe.type"),
    ({"timeframe": json.dumps({"type": "RANGE"})}, "timeframe.start"),
    ({"timeframe": json.dumps({"type": "RANGE", "start": START})}, "timeframe.end"),
    ({"timeframe": json.dumps({"type": "RANGE", "end": END})}, "timeframe.start"),
    ({"timeframe": json.dumps({"type": "RANGE", "start": START, "end": START})}, "timeframe.end"),
    ({"timeframe": json.dumps({"type": "RANGE", "start": END, "end": START})}, "timeframe.end"),
    (
        {"timeframe": json.dumps({"type": "RANGE", "start": "2024-01-01T00:00:00", "end": END})},
        "timeframe.start",
    ),
    (
        {"timeframe": json.dumps({"type": "RANGE", "start": START, "end": "2024-02-01"})},
        "timeframe.end",
    ),
    (
        {"timeframe": json.dumps({"type": "RANGE", "start": 1704067200, "end": END})},
        "timeframe.start",
    ),
    (
        {"timeframe": json.dumps({"type": "RANGE", "start": "yesterday", "end": END})},
        "timeframe.start",
    ),
    ({"timeframe": json.dumps({"type": "ALL", "start": START})}, "timeframe.start"),
    ({"timeframe": json.dumps({"type": "ALL", "colour": "red"})}, "timeframe.colour"),
    (
        {"timeframe": json.dumps({"type": "RANGE", "start": START, "end": END, "accountId": "a"})},
        "timeframe.accountId",
    ),
    ({"timeframe": json.dumps({"type": "CURRENT_CYCLE", "accountId": 5})}, "timeframe.accountId"),
    ({"timeframe": json.dumps({"type": "CURRENT_CYCLE", "accountId": ""})}, "timeframe.accountId"),
    ({"timeframe": "ALL", "timeframe[type]": "ALL"}, "timeframe"),
    ({"timeframe": _range_json(), "timeframe[type]": "RANGE"}, "timeframe"),
    ({"timeframe[type]": "ALL", "timeframe[colour]": "red"}, "timeframe.colour"),
    ({"timeframe[start]": START, "timeframe[end]": END}, "timeframe.type"),
    ({"timeframe[type]": "RANGE", "timeframe[start]": START}, "timeframe.end"),
    (
        {"timeframe[type]": "RANGE", "timeframe[start]": END, "timeframe[end]": START},
        "timeframe.end",
    ),
]


@pytest.mark.parametrize(
    "params, field", BAD_TIMEFRAMES, ids=[json.dumps(p)[:70] for p, _ in BAD_TIMEFRAMES]
)
def test_bad_timeframes_are_400_naming_the_timeframe(client, metric, params, field):
    response = value_response(client, metric["id"], urlencode({"customerId": "c1", **params}))
    fields = error_fields(response)
    assert field in fields
    assert all(name.startswith("timeframe") for name in fields)


@pytest.mark.parametrize(
    "timeframe, field",
    [
        ("WEEK", "timeframe.type"),
        ([], "timeframe"),
        ({"type": "RANGE", "start": START}, "timeframe.end"),
        ({"type": "RANGE", "start": END, "end": START}, "timeframe.end"),
        ({"type": "ALL", "colour": "red"}, "timeframe.colour"),
        ({"type": "CURRENT_CYCLE"}, "timeframe"),
    ],
)
def test_bad_timeframes_of_a_preview_are_400(client, timeframe, field):
    assert field in error_fields(preview(client, without(simple(), "name"), timeframe=timeframe))


@pytest.mark.parametrize(
    "query, field",
    [
        ("", "customerId"),
        ("customerId=", "customerId"),
        ("timeframe=ALL", "customerId"),
        (urlencode({"customerId": "c" * 321}), "customerId"),
    ],
    ids=["absent", "empty", "only-timeframe", "too-long"],
)
def test_a_value_needs_a_customer(client, metric, query, field):
    assert field in error_fields(value_response(client, metric["id"], query))


@pytest.mark.parametrize(
    "extra, field",
    [({}, "customerId"), ({"customerId": ""}, "customerId"), ({"customerId": 5}, "customerId")],
)
def test_a_preview_needs_a_customer(client, extra, field):
    body = {**without(simple(), "name"), **extra}
    assert field in error_fields(client.post(f"{METRICS}/preview", body))


def test_a_customer_without_records_has_zero(client, metric):
    answer = value_of(client, metric["id"], "nobody")
    assert (answer["value"], answer["customerId"]) == (0, "nobody")


def test_a_timeframe_type_that_is_not_a_string_is_400(client, metric):
    client.raise_request_exception = False
    query = urlencode({"customerId": "c1", "timeframe": json.dumps({"type": ["RANGE"]})})
    assert "timeframe.type" in error_fields(value_response(client, metric["id"], query))
    body = without(simple(), "name")
    assert "timeframe.type" in error_fields(preview(client, body, timeframe={"type": {}}))


@pytest.mark.parametrize(
    "start, end",
    [
        ("0001-01-01T00:00:00+01:00", END),
        (START, "9999-12-31T23:59:59-01:00"),
    ],
)
def test_moments_outside_the_calendar_in_utc_are_400(client, metric, start, end):
    client.raise_request_exception = False
    timeframe = json.dumps({"type": "RANGE", "start": start, "end": end})
    query = urlencode({"customerId": "c1", "timeframe": timeframe})
    fields = error_fields(value_response(client, metric["id"], query))
    assert fields and all(field.startswith("timeframe.") for field in fields)


def test_the_first_and_last_moments_of_the_calendar_are_a_range(client, metric):
    timeframe = {
        "type": "RANGE",
        "start": "0001-01-01T00:00:00Z",
        "end": "9999-12-31T23:59:59.999Z",
    }
    answer = value_of(client, metric["id"], "c1", timeframe)
    assert answer["timeframe"] == {**timeframe, "start": "0001-01-01T00:00:00.000Z"}


# -- CURRENT_CYCLE: the customer's billing cycle, set up through the billing API ---------


def _month_start(day: datetime.date, months: int = 0) -> datetime.date:
    month = day.month - 1 + months
    return datetime.date(day.year + month // 12, month % 12 + 1, 1)


def _anchored(day: datetime.date, anchor: int) -> tuple[datetime.date, datetime.date]:
    """The monthly cycle with anchor day `anchor` (at most 28 here) holding `day`."""
    start = _month_start(day).replace(day=anchor)
    if start > day:
        start = _month_start(day, -1).replace(day=anchor)
    return start, _month_start(start, 1).replace(day=anchor)


def _midnight(day: datetime.date) -> str:
    return f"{day.isoformat()}T00:00:00.000Z"


def bill(client, customer: str, account: str, anchor: int | None = 1) -> None:
    """A billing account of `customer`; with `anchor`, on a monthly plan since long ago."""
    response = client.post(
        f"{BILLING}/accounts",
        {"accountId": account, "customerId": customer, "invoiceCurrency": "USD"},
    )
    assert response.status_code == 201, response.content
    if anchor is None:
        return
    plans = client.get(f"{BILLING}/price-plans").json()
    existing = plans.get("pricePlans") or plans.get("items") or []
    plan = existing[0]["id"] if existing else None
    if plan is None:
        created = client.post(f"{BILLING}/price-plans", {"name": "Plan"})
        assert created.status_code == 201, created.content
        plan = created.json()["id"]
    response = client.post(
        f"{BILLING}/plan-assignments",
        {
            "accountId": account,
            "pricePlanId": plan,
            "effectiveFrom": (timezone.now().date() - timedelta(days=70)).isoformat(),
            "cycle": "MONTHLY",
            "anchorDay": anchor,
        },
    )
    assert response.status_code == 201, response.content


def cycle_value(client, metric_id: str, customer: str = "c1", **fields):
    query = urlencode(
        {"customerId": customer, "timeframe": json.dumps({"type": "CURRENT_CYCLE", **fields})}
    )
    return value_response(client, metric_id, query)


def test_current_cycle_counts_the_records_of_the_customers_current_pricing_cycle(
    client, collector, metric
):
    bill(client, "c1", "acc-1", anchor=1)
    today = timezone.now().astimezone(UTC).date()
    start, end = _month_start(today), _month_start(today, 1)
    first = cycle_value(client, metric["id"])
    assert first.status_code == 200, first.content
    assert first.json()["timeframe"] == {
        "type": "CURRENT_CYCLE",
        "accountId": "acc-1",
        "start": _midnight(start),
        "end": _midnight(end),
    }
    assert first.json()["value"] == 0

    cycle_start = datetime.datetime.combine(start, datetime.time(), UTC)
    stamp = lambda moment: moment.isoformat().replace("+00:00", "Z")  # noqa: E731
    send_and_process(
        client,
        collector,
        [
            {"id": "before", "type": "api_call", "customerId": "c1",
             "timestamp": stamp(cycle_start - timedelta(seconds=1))},
            {"id": "first", "type": "api_call", "customerId": "c1",
             "timestamp": stamp(cycle_start)},
            {"id": "now", "type": "api_call", "customerId": "c1"},
            {"id": "other", "type": "api_call", "customerId": "c2"},
        ],
    )  # fmt: skip
    assert cycle_value(client, metric["id"]).json()["value"] == 2
    brackets = urlencode({"customerId": "c1", "timeframe[type]": "CURRENT_CYCLE"})
    assert value_response(client, metric["id"], brackets).json()["value"] == 2
    bare = value_response(client, metric["id"], "customerId=c1&timeframe=CURRENT_CYCLE")
    assert bare.json() == cycle_value(client, metric["id"]).json()
    assert value_of(client, metric["id"], "c1")["value"] == 3

    # The same cycle for the SQL and the indexed definitions of the same metric.
    sql = create_metric(client, complex_())
    assert cycle_value(client, sql["id"]).json()["value"] == 2
    ready = create_metric(client, indexed())
    backfill(ready["id"])
    assert cycle_value(client, ready["id"]).json()["value"] == 2
    previewed = preview(client, without(simple(), "name"), timeframe={"type": "CURRENT_CYCLE"})
    assert previewed.json()["value"] == 2


def test_current_cycle_of_a_customer_without_one_is_400(client, metric, globex, api_client):
    # c1 has a cycle at globex only; c2 has an account at acme but no plan.
    bill(api_client(globex.token), "c1", "acc-1")
    bill(client, "c2", "acc-2", anchor=None)
    for customer in ("c1", "c2", "c3"):
        error = assert_error_body(cycle_value(client, metric["id"], customer), 400)
        assert [item["field"] for item in error["details"]] == ["timeframe"]
        assert "no current pricing cycle" in error["message"]


def test_current_cycle_with_several_accounts_needs_the_account_id(client, metric):
    bill(client, "c1", "acc-1", anchor=1)
    bill(client, "c1", "acc-2", anchor=15)
    bill(client, "c1", "acc-3", anchor=None)
    bill(client, "c2", "acc-4", anchor=1)
    error = assert_error_body(cycle_value(client, metric["id"]), 400)
    assert "acc-1" in error["message"] and "acc-2" in error["message"]
    assert "accountId" in error["message"]

    today = timezone.now().astimezone(UTC).date()
    start, end = _anchored(today, 15)
    chosen = cycle_value(client, metric["id"], accountId="acc-2")
    assert chosen.status_code == 200, chosen.content
    assert chosen.json()["timeframe"] == {
        "type": "CURRENT_CYCLE",
        "accountId": "acc-2",
        "start": _midnight(start),
        "end": _midnight(end),
    }
    brackets = urlencode(
        {"customerId": "c1", "timeframe[type]": "CURRENT_CYCLE", "timeframe[accountId]": "acc-1"}
    )
    assert (
        value_response(client, metric["id"], brackets).json()["timeframe"]["accountId"] == "acc-1"
    )
    # An account without a cycle, another customer's account, no account at all.
    for account in ("acc-3", "acc-4", "acc-9"):
        assert error_fields(cycle_value(client, metric["id"], accountId=account)) == ["timeframe"]


# -- Indexed metrics: 409 while backfilling ---------------------------------------------


def test_an_indexed_metric_answers_409_until_backfilled(client, collector):
    send_and_process(client, collector, [api_call("r1", 1, n=4), api_call("r2", 2, n=5)])
    metric = create_metric(client, indexed(aggregationType="SUM", valueProperty="$.n"))
    response = value_response(client, metric["id"], "customerId=c1")
    error = assert_error_body(response, 409)
    assert "backfilling" in error["message"]
    assert response["Retry-After"] == "5"
    # A preview of the same definition is computed from the records at once.
    assert (
        preview(
            client, without(indexed(aggregationType="SUM", valueProperty="$.n"), "name")
        ).json()["value"]
        == 9
    )
    backfill(metric["id"])
    assert value_of(client, metric["id"], "c1")["value"] == 9


def test_changing_what_an_indexed_metric_reads_backfills_it_again(client, collector):
    send_and_process(
        client,
        collector,
        [api_call("r1", 1), api_call("r2", 2), {**api_call("r3", 3), "type": "login"}],
    )
    metric = create_metric(client, indexed())
    backfill(metric["id"])
    url = f"{METRICS}/{metric['id']}"
    assert value_of(client, metric["id"], "c1")["value"] == 2

    # Name, description, and an eventName that does not change: still READY.
    same = client.post(
        f"{url}/update", {"name": "Renamed", "description": "d", "eventName": "api_call"}
    )
    assert same.json()["indexStatus"] == "READY"
    assert value_of(client, metric["id"], "c1")["value"] == 2

    changed = client.post(f"{url}/update", {"eventName": "login"})
    assert changed.status_code == 200, changed.content
    assert (changed.json()["indexStatus"], changed.json()["backfillProgress"]) == (
        "BACKFILLING",
        0.0,
    )
    assert client.get(url).json()["indexStatus"] == "BACKFILLING"
    error = assert_error_body(value_response(client, metric["id"], "customerId=c1"), 409)
    assert "backfilling" in error["message"]
    backfill(metric["id"])
    assert client.get(url).json()["indexStatus"] == "READY"
    assert value_of(client, metric["id"], "c1")["value"] == 1
    # Records processed after the new backfill count under the new event name.
    send_and_process(client, collector, [{**api_call("r4", 4), "type": "login"}, api_call("r5", 5)])
    assert value_of(client, metric["id"], "c1")["value"] == 2


@pytest.mark.parametrize(
    "change",
    [
        {"valueProperty": "$.n"},
        {"filters": [{"property": "$.n", "op": "gt", "value": 1}]},
    ],
    ids=["valueProperty", "filters"],
)
def test_changing_value_property_or_filters_of_an_indexed_metric_backfills_again(
    client, collector, change
):
    send_and_process(
        client, collector, [api_call("r1", 1, n=1), api_call("r2", 2, n=2), api_call("r3", 3)]
    )
    metric = create_metric(client, indexed())
    backfill(metric["id"])
    url = f"{METRICS}/{metric['id']}"
    assert client.post(f"{url}/update", change).json()["indexStatus"] == "BACKFILLING"
    assert_error_body(value_response(client, metric["id"], "customerId=c1"), 409)
    backfill(metric["id"])
    expected = 2 if "valueProperty" in change else 1
    assert value_of(client, metric["id"], "c1")["value"] == expected


def test_a_simple_metric_reads_a_changed_event_name_at_once(client, collector):
    send_and_process(client, collector, [api_call("r1", 1), {**api_call("r2", 2), "type": "login"}])
    metric = create_metric(client, simple())
    changed = client.post(f"{METRICS}/{metric['id']}/update", {"eventName": "login"}).json()
    assert changed["indexStatus"] is None and changed["eventName"] == "login"
    assert value_of(client, metric["id"], "c1")["value"] == 1


# -- Preview ----------------------------------------------------------------------------


def test_previews_answer_values_without_storing_anything(client, collector, metric):
    send_and_process(client, collector, [api_call("r1", 1, n=2), api_call("r2", 2, n=3)])
    summed = {"aggregationType": "SUM", "valueProperty": "$.n"}
    for body, expected in (
        (without(simple(**summed), "name"), 5),
        (indexed(**summed), 5),  # computed as the simple one would be: no 409
        (without(complex_(SUM_SQL), "name"), 5),
        (without(complex_(COUNT_SQL), "name"), 2),
    ):
        response = preview(client, body)
        assert response.status_code == 200, response.content
        answer = response.json()
        assert answer == {
            "id": None,
            "name": body.get("name"),
            "customerId": "c1",
            "value": expected,
            "queryType": body["queryType"],
            "timeframe": {"type": "ALL"},
        }
    listed = client.get(METRICS)
    assert [item["id"] for item in listed.json()] == [metric["id"]]
    assert listed["X-Total-Count"] == "1"


@pytest.mark.parametrize(
    "sql, says",
    [
        ("SELECT 'many'", "number"),
        ("SELECT count(*), 1 FROM events", "one column"),
        ("SELECT count(*) FROM events GROUP BY type", "one row"),
        ("SELECT 1/0", "division by zero"),
    ],
)
def test_sql_that_fails_when_run_is_400_naming_sql(client, collector, sql, says):
    send_and_process(client, collector, [api_call("r1", 1), {**api_call("r2", 2), "type": "x"}])
    error = assert_error_body(preview(client, complex_(sql)), 400)
    assert [item["field"] for item in error["details"]] == ["sql"]
    assert says in error["message"]
    # Stored, it fails the same way when its value is asked.
    metric = create_metric(client, complex_(sql))
    assert error_fields(value_response(client, metric["id"], "customerId=c1")) == ["sql"]


def test_complex_metrics_read_only_the_customers_records_in_the_timeframe(client, collector):
    send_and_process(
        client, collector, [api_call("r1", 1), api_call("r2", 2), api_call("r3", 3, "c2")]
    )
    metric = create_metric(client, complex_("SELECT count(*) FROM events"))
    assert value_of(client, metric["id"], "c1")["value"] == 2
    assert value_of(client, metric["id"], "c2")["value"] == 1
    ranged = {"type": "RANGE", "start": at(2), "end": at(5)}
    assert value_of(client, metric["id"], "c1", ranged)["value"] == 1
    assert value_of(client, metric["id"], "c1'; --")["value"] == 0


def test_a_stored_metric_the_rules_now_refuse_is_not_a_500(client):
    from reporting.models import MetricDefinition

    metric = create_metric(client, complex_())
    # The scene: a definition stored under older rules (no API call can store one).
    MetricDefinition.objects.filter(pk=metric["id"]).update(sql="SELECT pg_sleep(1)")
    client.raise_request_exception = False
    response = value_response(client, metric["id"], "customerId=c1")
    assert response.status_code in (400, 409, 422), response.content
    assert "sql" in error_fields(response, response.status_code)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
filter_items = st.fixed_dictionaries(
    {},
    optional={
        "property": st.sampled_from(["$.a", "$..a", "a[0]"]) | json_values,
        "op": st.sampled_from(["eq", "neq", "gt", "in", "exists", "like"]) | json_values,
        "value": json_values,
    },
)
timeframes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["ALL", "RANGE", "ABSOLUTE", "CURRENT_CYCLE", "WEEK"])
        | json_values,
        "start": st.sampled_from([START, "2024-01-01T00:00:00", "x"]) | json_values,
        "end": st.sampled_from([END, START]) | json_values,
        "accountId": json_values,
    },
)


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    aggregation=st.sampled_from(["COUNT", "SUM", "LATEST", "UNIQUE_COUNT", None]),
    value_type=st.sampled_from(["NUMERIC", "STRING", "BOOLEAN", None]),
    value_property=st.sampled_from(["$.a", "$.", "b[0]", None]) | json_values,
    filters=st.lists(filter_items, max_size=2) | json_values,
    timeframe=timeframes | json_values.filter(lambda value: not isinstance(value, dict)),
)
def test_any_preview_is_answered_or_refused_never_a_server_error(
    client, aggregation, value_type, value_property, filters, timeframe
):
    body = {
        "queryType": "simple",
        "aggregationType": aggregation,
        "eventName": "api_call",
        "valueType": value_type,
        "valueProperty": value_property,
        "filters": filters,
        "timeframe": timeframe,
    }
    response = preview(client, body)
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert_error_body(response, 400)


# -- Scopes and rate limits -------------------------------------------------------------


def _every_call(api, metric_id: str) -> dict[str, Any]:
    url = f"{METRICS}/{metric_id}"
    return {
        "list": lambda: api.get(METRICS),
        "get": lambda: api.get(url),
        "value": lambda: api.get(f"{url}/value?customerId=c1"),
        "preview": lambda: preview(api, without(simple(), "name")),
        "create": lambda: api.post(METRICS, simple(name="Another")),
        "update": lambda: api.post(f"{url}/update", {"name": "Changed"}),
        "delete": lambda: api.post(f"{url}/delete"),
    }


def test_metrics_read_reads_and_metrics_write_writes(acme, client, metric, api_client):
    reader = api_client(token_for(acme.operator, "metrics:read"))
    calls = _every_call(reader, metric["id"])
    for name in ("list", "get", "value", "preview"):
        assert calls[name]().status_code == 200, name
    for name in ("create", "update", "delete"):
        error = assert_error_body(calls[name](), 403)
        assert "metrics:write" in error["message"], name
    assert client.get(f"{METRICS}/{metric['id']}").json() == metric
    assert total(client) == 1

    writer = api_client(token_for(acme.operator, "metrics:write"))
    calls = _every_call(writer, metric["id"])
    for name in ("list", "get", "value", "preview"):
        assert "metrics:read" in assert_error_body(calls[name](), 403)["message"], name
    for name in ("create", "update", "delete"):
        assert calls[name]().status_code in (200, 201), name


def test_a_token_without_metrics_scopes_is_403_everywhere(acme, metric, api_client):
    outsider = api_client(token_for(acme.operator, "usage-metering:read:meters"))
    for name, call in _every_call(outsider, metric["id"]).items():
        assert call().status_code == 403, name
    assert_error_body(api_client().get(METRICS), 401)


def test_every_endpoint_draws_on_the_metrics_rate_limit_group(client, metric, settings):
    settings.TALLY["RATE_LIMITS"]["metrics"] = {"rate": 0.001, "burst": 3}
    calls = _every_call(client, metric["id"])
    for name in ("list", "get", "value"):
        assert calls[name]().status_code == 200, name
    for name in ("preview", "create", "update", "delete"):
        response = calls[name]()
        assert_error_body(response, 429)
        assert response["Retry-After"]


def test_the_http_conventions_hold_on_the_metric_endpoints(acme, client, metric):
    url = f"{METRICS}/{metric['id']}"
    for path in (METRICS, f"{METRICS}/preview", f"{url}/update"):
        assert_error_body(client.post(path, b"{bad json"), 400)
        assert_error_body(client.post(path, "name=a", content_type="text/plain"), 415)
    assert_error_body(client.post(METRICS, b'{"name": "' + b"a" * 2_000_000 + b'"}'), 413)
    for path in (METRICS, url):
        assert_error_body(client.put(path, {}), 405)
        assert_error_body(client.patch(path, {"name": "x"}), 405)
    assert_error_body(client.get(f"{url}/update"), 405)
    assert_error_body(client.get(f"{METRICS}/preview"), 405)
    response = client.options(METRICS)
    assert_error_body(response, 405)
    assert {"GET", "POST"} <= {method.strip() for method in response["Allow"].split(",")}
    from tenants.models import Operator
    from tenants.services import operator_set_status

    operator_set_status(operator=acme.operator, status=Operator.Status.SUSPENDED)
    for call in _every_call(client, metric["id"]).values():
        assert "suspended" in assert_error_body(call(), 403)["message"]


# -- The list ---------------------------------------------------------------------------


@pytest.fixture
def twenty_five(client) -> list[str]:
    return [create_metric(client, simple(name=f"m{index:02}"))["id"] for index in range(25)]


def test_the_list_pages_through_every_metric_once_in_creation_order(client, twenty_five):
    default = client.get(METRICS)
    assert [item["id"] for item in default.json()] == twenty_five[:20]
    assert default["X-Total-Count"] == "25"
    seen = []
    for skip in range(0, 25, 7):
        page = client.get(METRICS, {"limit": 7, "skip": skip})
        assert page["X-Total-Count"] == "25"
        seen.extend(item["id"] for item in page.json())
    assert seen == twenty_five
    assert len(client.get(METRICS, {"limit": 100}).json()) == 25
    assert client.get(METRICS, {"skip": 25}).json() == []
    assert client.get(METRICS, {"skip": 10**30}).json() == []
    assert client.get(METRICS, {"limit": 0}).json() == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": 101}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"skip": -1}, "skip"),
        ({"skip": "x"}, "skip"),
    ],
)
def test_bad_list_parameters_are_400(client, params, field):
    assert field in error_fields(client.get(METRICS, params))


def test_the_lists_query_count_does_not_grow_with_its_items(client):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(METRICS).status_code == 200
        return len(captured)

    create_metric(client, simple(name="first"))
    create_metric(client, indexed(name="second"))
    few = queries()
    for index in range(10):
        body = [simple, indexed][index % 2](name=f"more {index}")
        create_metric(client, body)
    create_metric(client, complex_())
    assert queries() == few
    assert few <= 6


# -- The OpenAPI document ---------------------------------------------------------------

OPERATIONS = {
    ("/v1/metrics", "get"): "metric_definitions_list",
    ("/v1/metrics", "post"): "metric_definitions_create",
    ("/v1/metrics/{metric_id}", "get"): "metric_definitions_get",
    ("/v1/metrics/{metric_id}/update", "post"): "metric_definitions_update",
    ("/v1/metrics/{metric_id}/delete", "post"): "metric_definitions_delete",
    ("/v1/metrics/{metric_id}/value", "get"): "metric_definitions_value",
    ("/v1/metrics/preview", "post"): "metric_definitions_preview",
}


@pytest.fixture(scope="module")
def openapi() -> dict:
    """The document /api/schema/ serves, built in-process and read back as JSON."""
    return openapi_document()


def assert_documented(openapi: dict, path: str, method: str, status: str, body: Any) -> None:
    operation = openapi["paths"][path][method]
    content = operation["responses"][status]["content"]["application/json"]["schema"]
    schema = strict(resolved(content, openapi["components"]["schemas"]), required=False)
    found = problems(schema, body)
    assert not found, f"{method.upper()} {path} {status}:\n" + "\n".join(found)


def test_the_document_has_the_six_paths_with_their_operation_ids(openapi):
    found = {
        (path, method): operation["operationId"]
        for path, item in openapi["paths"].items()
        if path.startswith("/v1/metrics")
        for method, operation in item.items()
        if method != "parameters"
    }
    assert found == OPERATIONS
    value = openapi["paths"]["/v1/metrics/{metric_id}/value"]["get"]
    parameters = {item["name"]: item for item in value["parameters"]}
    assert parameters["customerId"]["required"] is True
    assert "timeframe" in parameters
    assert "409" in value["responses"]
    listed = openapi["paths"]["/v1/metrics"]["get"]
    assert {item["name"] for item in listed["parameters"]} >= {"limit", "skip"}
    for (path, method), _ in OPERATIONS.items():
        security = openapi["paths"][path][method]["security"]
        scope = "metrics:write" if method == "post" and "preview" not in path else "metrics:read"
        assert {"oauth2": [scope]} in security, (path, method)


def test_answers_match_the_documented_schemas(client, openapi, collector):
    send_and_process(client, collector, [api_call("r1", 1, n=2)])
    created = client.post(METRICS, indexed(aggregationType="SUM", valueProperty="$.n"))
    assert_documented(openapi, "/v1/metrics", "post", "201", created.json())
    metric_id = created.json()["id"]
    url = f"{METRICS}/{metric_id}"
    item = "/v1/metrics/{metric_id}"
    for body in (simple(), complex_()):
        assert_documented(openapi, "/v1/metrics", "post", "201", create_metric(client, body))
    assert_documented(openapi, item, "get", "200", client.get(url).json())
    conflict = client.get(f"{url}/value?customerId=c1")
    assert_documented(openapi, f"{item}/value", "get", "409", conflict.json())
    backfill(metric_id)
    updated = client.post(f"{url}/update", {"description": "d"})
    assert_documented(openapi, f"{item}/update", "post", "200", updated.json())
    for query in (
        "customerId=c1",
        urlencode({"customerId": "c1", "timeframe": _range_json()}),
    ):
        answer = client.get(f"{url}/value?{query}").json()
        assert set(answer) == VALUE_KEYS
        assert_documented(openapi, f"{item}/value", "get", "200", answer)
    previewed = preview(client, without(simple(), "name"))
    assert_documented(openapi, "/v1/metrics/preview", "post", "200", previewed.json())
    invalid = client.post(METRICS, simple(aggregationType="MEDIAN"))
    assert_documented(openapi, "/v1/metrics", "post", "400", invalid.json())
    deleted = client.post(f"{url}/delete")
    assert_documented(openapi, f"{item}/delete", "post", "200", deleted.json())


def test_the_list_answer_matches_its_documented_schema(client, openapi, metric):
    listed = client.get(METRICS)
    assert_documented(openapi, "/v1/metrics", "get", "200", listed.json())
    headers = openapi["paths"]["/v1/metrics"]["get"]["responses"]["200"].get("headers", {})
    assert "X-Total-Count" in headers


# -- SQL metrics that fail when they run ---------------------------------------------------


def test_a_runaway_sql_metric_is_stopped_by_its_timeout_and_answers_400(
    client, collector, settings
):
    settings.TALLY["METRICS"]["SQL_TIMEOUT_MS"] = 100
    send_and_process(client, collector, [api_call(f"r{n}", n / 100) for n in range(100)])
    body = complex_(
        "SELECT count(*) FROM events a, events b, events c, events d, events e", name="runaway"
    )
    runaway = create_metric(client, body)
    response = value_response(client, runaway["id"], "customerId=c1")
    assert "stopped after 100 ms" in assert_error_body(response, 400)["details"][0]["message"]
    # The connection and the operator's other metrics are fine afterwards.
    counting = create_metric(client, complex_())
    assert value_response(client, counting["id"], "customerId=c1").json()["value"] == 100
    preview_answer = preview(client, body)
    assert "stopped after 100 ms" in assert_error_body(preview_answer, 400)["message"]


def test_a_sql_metric_failing_on_the_data_answers_400_with_postgresqls_reason(client, collector):
    send_and_process(client, collector, [api_call("r1", 1, n=0)])
    failing = create_metric(
        client, complex_("SELECT sum(1 / (payload->>'n')::numeric) FROM events", name="zero")
    )
    error = assert_error_body(value_response(client, failing["id"], "customerId=c1"), 400)
    assert error["details"] == [{"field": "sql", "message": error["details"][0]["message"]}]
    assert "division by zero" in error["message"]
