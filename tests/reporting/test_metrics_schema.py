"""`POST /metrics` keeps the shape the reference product's generated clients read.

Two guards, so the answer cannot drift from what the OpenAPI document promises:

1. A client generated (by openapi-python-client) from Tally's own document calls the
   endpoint over HTTP, on a live server, and its models parse every answer with no key
   left over.
2. The documented response schema, made strict (no undocumented key, every documented
   key present but `groupedBy`, timestamps to the millisecond), validates real answers
   of every metric name, grouped and not. The request's fields and choices are pinned
   to the reference's, so a change to the serializers fails here first.

`Accept: text/csv` answers the same numbers as a table, and errors stay JSON.
"""

from __future__ import annotations

import copy
import csv
import datetime
import importlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from django.utils import timezone

from common.json import format_datetime
from metering.usage import UsageUpdate, usage_apply
from tests.conftest import Tenant, assert_error_body, make_tenant
from tests.factories import CollectorFactory
from tests.openapi import openapi_document, resolved, strict

pytestmark = pytest.mark.django_db

PATH = "/metrics"
START, END = "2024-07-01T00:00:00Z", "2024-07-03T00:00:00Z"
DAY_1, DAY_2 = "2024-07-01T00:00:00.000Z", "2024-07-02T00:00:00.000Z"
# The reference's names and choices, written out (not imported from reporting.metrics):
# the point is to notice when Tally's change.
METRIC_NAMES = ["EVENTS", "USAGE", "METER_USAGE", "REVENUE", "USAGE_FOR_CYCLE", "REVENUE_FOR_CYCLE"]
PERIODS = ["HOUR", "DAY", "WEEK", "MONTH"]
FIELD_NAMES = ["ACCOUNT_ID", "CUSTOMER_ID", "SCHEMA_NAME", "EVENT_STATUS", "USAGE_METER_ID"]
CURRENCIES = ["BASE", "INVOICE"]
CSV_HEADER = ["id", "name", "groupByField", "groupByValue", "timestamp", "value"]
CLIENT_PACKAGE = "tally_metrics_client"


# -- The OpenAPI document --------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict:
    """The document `/api/schema/` serves, built in-process and read back as JSON."""
    return openapi_document()


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value.rsplit("/", 1)[1]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _metrics_only(document: dict) -> dict:
    """The document cut down to `POST /metrics` and the components it reaches. The whole
    document generates too, but about ten times slower (and warns about NDJSON bodies)."""
    schemas = document["components"]["schemas"]
    wanted: set[str] = set()
    todo = list(_refs(document["paths"][PATH]))
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(_refs(schemas[name]))
    components = {**document["components"], "schemas": {n: schemas[n] for n in sorted(wanted)}}
    return {**document, "paths": {PATH: document["paths"][PATH]}, "components": components}


@pytest.fixture(scope="module")
def operation(openapi) -> dict:
    return resolved(openapi["paths"][PATH]["post"], openapi["components"]["schemas"])


@pytest.fixture(scope="module")
def strict_answer(operation) -> jsonschema.Draft7Validator:
    # Only grouped series have `groupedBy`.
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    schema = strict(answer, optional={"groupedBy"})
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def assert_valid(validator: jsonschema.Draft7Validator, body: dict) -> None:
    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(body)
    ]
    assert not problems, "\n".join(problems)


# -- A generated client ------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(openapi, tmp_path_factory) -> Iterator[ModuleType]:
    """A client package generated from the document, imported; removed again after."""
    from openapi_python_client import generate
    from openapi_python_client.config import Config, ConfigFile, MetaType

    folder = tmp_path_factory.mktemp("generated")
    source = folder / "openapi.json"
    source.write_text(json.dumps(_metrics_only(openapi)))
    config = Config.from_sources(
        # No post hooks: they would run ruff over the output, which parsing does not need.
        ConfigFile(post_hooks=[], package_name_override=CLIENT_PACKAGE),
        MetaType.NONE,
        source,
        "utf-8",
        True,
        folder / CLIENT_PACKAGE,
    )
    errors = generate(config=config)
    assert not errors, [f"{error.header}: {error.detail}" for error in errors]
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(CLIENT_PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n.split(".")[0] == CLIENT_PACKAGE]:
            del sys.modules[name]


def assert_nothing_left_over(parsed: Any) -> None:
    """Generated models keep keys they do not know in `additional_properties`: an answer
    with an undocumented key would parse, and lose it, without this check."""
    extra = getattr(parsed, "additional_properties", {})
    assert extra == {}, f"{type(parsed).__name__} got undocumented keys {sorted(extra)}"
    for name in getattr(type(parsed), "__attrs_attrs__", ()):
        value = getattr(parsed, name.name)
        for item in value if isinstance(value, list) else [value]:
            assert_nothing_left_over(item)


# -- The scene: two meter types, a billed customer and an unbilled one, some records ---------


@dataclass(frozen=True)
class Scene:
    meter_types: dict[str, str]  # name -> id
    records_day: datetime.datetime  # midnight (UTC) of the first day with records


@pytest.fixture
def scene(acme: Tenant, api_client, generous_limits) -> Scene:
    """Usage of Prints and Scans on 1 and 2 July 2024 by customer#1 (account acc-1,
    invoiced in EUR at 0.9, priced 0.5 a print and 2 a scan) and customer#2 (no account,
    so no revenue); four records of two types the day before yesterday and yesterday
    (ingestion refuses records older than 35 days)."""
    client = api_client(acme.token)
    types = {}
    for name, unit in (("Prints", "sheets"), ("Scans", "pages")):
        response = client.post(
            "/usage-metering/v1/meter-types",
            {
                "name": name,
                "unit": unit,
                "category": "P",
                "aggregation": {"type": "sum"},
                "resetSchedule": {
                    "day": "1",
                    "hour": "0",
                    "minute": "0",
                    "month": "*",
                    "weekday": "*",
                },
                "timezone": "Etc/UTC",
                # Active for all time: the API refuses a start in the past, and these
                # meters count usage of July 2024.
                "activeFrom": None,
            },
        )
        assert response.status_code == 201, response.content
        types[name] = response.json()["id"]

    account = {"accountId": "acc-1", "customerId": "customer#1", "invoiceCurrency": "EUR"}
    for response in (
        client.post("/billing/v1/accounts", account),
        client.put("/billing/v1/exchange-rates/EUR/2024-06-01", {"rate": 0.9}),
    ):
        assert response.status_code == 201, response.content
    plan = client.post(
        "/billing/v1/price-plans",
        {
            "name": "Standard",
            "rates": [
                {"meterTypeId": types["Prints"], "model": "PER_UNIT", "unitPrice": 0.5},
                {"meterTypeId": types["Scans"], "model": "PER_UNIT", "unitPrice": 2},
            ],
        },
    )
    assert plan.status_code == 201, plan.content
    assigned = client.post(
        "/billing/v1/plan-assignments",
        {
            "accountId": "acc-1",
            "pricePlanId": plan.json()["id"],
            "effectiveFrom": "2024-06-01",
            "cycle": "MONTHLY",
            "anchorDay": 1,
        },
    )
    assert assigned.status_code == 201, assigned.content

    def july(day: int, hour: int) -> datetime.datetime:
        return datetime.datetime(2024, 7, day, hour, 30, tzinfo=datetime.UTC)

    usage = [
        ("Prints", "customer#1", "10", july(1, 10)),
        ("Prints", "customer#2", "7", july(1, 11)),
        ("Prints", "customer#1", "5", july(2, 9)),
        ("Scans", "customer#1", "3", july(2, 12)),
    ]
    usage_apply(
        operator=acme.operator,
        now=datetime.datetime(2024, 7, 3, tzinfo=datetime.UTC),
        updates=[
            UsageUpdate(types[name], None, "key", user, Decimal(value), moment)
            for name, user, value, moment in usage
        ],
    )

    today = timezone.now().astimezone(datetime.UTC)
    first = today.replace(hour=0, minute=0, second=0, microsecond=0) - datetime.timedelta(days=2)
    collector = CollectorFactory(operator=acme.operator)
    records = [
        ("print_job", "customer#1", first + datetime.timedelta(hours=10)),
        ("print_job", "customer#1", first + datetime.timedelta(hours=10, minutes=5)),
        ("print_job", "customer#2", first + datetime.timedelta(hours=11)),
        ("scan_job", "customer#1", first + datetime.timedelta(days=1, hours=12)),
    ]
    response = client.post(
        f"/online-collection/v1/collectors/{collector.pk}/data",
        {
            "data": [
                {"type": kind, "customerId": customer, "timestamp": format_datetime(moment)}
                for kind, customer, moment in records
            ]
        },
    )
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 4, response.json()
    return Scene(types, first)


def query(id: str, name: str | None = None, **fields) -> dict:
    return {"id": id, **({"name": name} if name else {}), **fields}


def by(field_name: str, *values: str) -> list[dict]:
    return [{"fieldName": field_name, "fieldValues": list(values)}]


def group(field_name: str, value: str) -> dict:
    return {"fieldName": field_name, "fieldValue": value}


def body(queries: list[dict], start: str = START, end: str = END) -> dict:
    return {"startTime": start, "endTime": end, "metricQueries": queries}


# July 2024: every metric name, grouped and not, each period, both currencies.
QUERIES = [
    query("events"),  # EVENTS by default; no records in 2024, so zeros
    query("usage", "USAGE"),
    query("usage-by-type", "USAGE", groupBy="USAGE_METER_ID"),
    query("meter-usage-by-customer", "METER_USAGE", groupBy="CUSTOMER_ID"),
    query("usage-hourly", "USAGE", aggregationPeriod="HOUR", filters=by("USAGE_METER_ID", "Scans")),
    query("usage-weekly", "USAGE", aggregationPeriod="WEEK"),
    query("revenue", "REVENUE"),
    query("revenue-eur", "REVENUE", groupBy="ACCOUNT_ID", configs={"CURRENCY": "INVOICE"}),
    query("usage-cycle", "USAGE_FOR_CYCLE", aggregationPeriod="MONTH"),
    query("revenue-cycle", "REVENUE_FOR_CYCLE", groupBy="USAGE_METER_ID"),
]
MORE_QUERIES = [
    query("revenue-cycle-eur", "REVENUE_FOR_CYCLE", configs={"CURRENCY": "INVOICE"}),
    query("usage-cycle-by-account", "USAGE_FOR_CYCLE", groupBy="ACCOUNT_ID"),
    query("usage-c2", "USAGE", filters=by("CUSTOMER_ID", "customer#2")),
]
SCANS_HOURLY = [3 if hour == 36 else 0 for hour in range(48)]  # 2 July, 12:00
# id -> [(groupedBy or None, timestamps, values)], one tuple a series.
EXPECTED = {
    "events": [(None, [DAY_1, DAY_2], [0, 0])],
    "usage": [(None, [DAY_1, DAY_2], [17, 8])],
    "usage-by-type": [
        (group("USAGE_METER_ID", "Prints"), [DAY_1, DAY_2], [17, 5]),
        (group("USAGE_METER_ID", "Scans"), [DAY_1, DAY_2], [0, 3]),
    ],
    "meter-usage-by-customer": [
        (group("CUSTOMER_ID", "customer#1"), [DAY_1, DAY_2], [10, 8]),
        (group("CUSTOMER_ID", "customer#2"), [DAY_1, DAY_2], [7, 0]),
    ],
    "usage-hourly": [
        (
            None,
            [f"2024-07-{1 + h // 24:02}T{h % 24:02}:00:00.000Z" for h in range(48)],
            SCANS_HOURLY,
        )
    ],
    "usage-weekly": [(None, [DAY_1], [25])],  # 1 July 2024 is a Monday
    "revenue": [(None, [DAY_1, DAY_2], [5, 8.5])],
    "revenue-eur": [(group("ACCOUNT_ID", "acc-1"), [DAY_1, DAY_2], [4.5, 7.65])],
    "usage-cycle": [(None, [DAY_1], [18])],
    "revenue-cycle": [
        (group("USAGE_METER_ID", "Prints"), [DAY_1], [7.5]),
        (group("USAGE_METER_ID", "Scans"), [DAY_1], [6]),
    ],
    "revenue-cycle-eur": [(None, [DAY_1], [12.15])],
    "usage-cycle-by-account": [(group("ACCOUNT_ID", "acc-1"), [DAY_1], [18])],
    "usage-c2": [(None, [DAY_1, DAY_2], [7, 0])],
}
# The two days of the records: EVENTS grouped, filtered and by status.
EVENT_QUERIES = [
    query("events-by-type", groupBy="SCHEMA_NAME"),
    query("events-c1", "EVENTS", filters=by("CUSTOMER_ID", "customer#1")),
    query("events-by-status", "EVENTS", groupBy="EVENT_STATUS", aggregationPeriod="DAY"),
]


def event_window(scene: Scene) -> tuple[str, str]:
    return format_datetime(scene.records_day), format_datetime(
        scene.records_day + datetime.timedelta(days=2)
    )


def events_expected(scene: Scene) -> dict[str, list[tuple]]:
    days = [format_datetime(scene.records_day + datetime.timedelta(days=n)) for n in (0, 1)]
    return {
        "events-by-type": [
            (group("SCHEMA_NAME", "print_job"), days, [3, 0]),
            (group("SCHEMA_NAME", "scan_job"), days, [0, 1]),
        ],
        "events-c1": [(None, days, [2, 1])],
        # Both statuses counted by default, each a series even when empty.
        "events-by-status": [
            (group("EVENT_STATUS", "PROCESSED"), days, [0, 0]),
            (group("EVENT_STATUS", "UNPROCESSED"), days, [3, 1]),
        ],
    }


def every_request(scene: Scene) -> list[tuple[dict, dict[str, list[tuple]]]]:
    """(request body, what each of its queries answers)."""
    return [
        (body(QUERIES), EXPECTED),
        (body(MORE_QUERIES), EXPECTED),
        (body(EVENT_QUERIES, *event_window(scene)), events_expected(scene)),
    ]


def series_of(result: dict) -> list[tuple]:
    return [(s.get("groupedBy"), s["timestamps"], s["metricValues"]) for s in result["data"]]


# -- 1. Through a generated client ----------------------------------------------------------


def client_series(result) -> list[tuple]:
    """A parsed result's series in the shape of EXPECTED (timestamps as datetimes)."""
    return [
        (
            series.grouped_by.to_dict() if series.grouped_by else None,
            series.timestamps,
            series.metric_values,
        )
        for series in result.data
    ]


def with_datetimes(expected: list[tuple]) -> list[tuple]:
    return [
        (grouped, [datetime.datetime.fromisoformat(s) for s in stamps], values)
        for grouped, stamps, values in expected
    ]


@pytest.mark.django_db(transaction=True)
def test_a_generated_client_sends_queries_and_reads_every_answer(
    live_server, scene, acme, generated
):
    from tally_metrics_client.api.metrics import get_metrics
    from tally_metrics_client.models import (
        AggregationPeriodEnum,
        CURRENCYEnum,
        GetMetricsResponse400,
        MetricConfigsRequest,
        MetricFieldNameEnum,
        MetricFilterRequest,
        MetricNameEnum,
        MetricQueryRequest,
        MetricsAnswer,
        MetricsRequest,
    )

    client = generated.AuthenticatedClient(
        base_url=live_server.url,
        token=acme.token,
        raise_on_unexpected_status=True,
        httpx_args={"trust_env": False},  # straight to the live server, no proxy
    )
    july = MetricsRequest(
        start_time=datetime.datetime(2024, 7, 1, tzinfo=datetime.UTC),
        end_time=datetime.datetime(2024, 7, 3, tzinfo=datetime.UTC),
        metric_queries=[
            MetricQueryRequest(id="usage", name=MetricNameEnum.USAGE),
            MetricQueryRequest(
                id="meter-usage-by-customer",
                name=MetricNameEnum.METER_USAGE,
                aggregation_period=AggregationPeriodEnum.DAY,
                group_by=MetricFieldNameEnum.CUSTOMER_ID,
            ),
            MetricQueryRequest(
                id="revenue-eur",
                name=MetricNameEnum.REVENUE,
                group_by=MetricFieldNameEnum.ACCOUNT_ID,
                filters=[
                    MetricFilterRequest(
                        field_name=MetricFieldNameEnum.CUSTOMER_ID, field_values=["customer#1"]
                    )
                ],
                configs=MetricConfigsRequest(currency=CURRENCYEnum.INVOICE),
            ),
            MetricQueryRequest(id="usage-cycle", name=MetricNameEnum.USAGE_FOR_CYCLE),
            MetricQueryRequest(
                id="revenue-cycle",
                name=MetricNameEnum.REVENUE_FOR_CYCLE,
                group_by=MetricFieldNameEnum.USAGE_METER_ID,
            ),
        ],
    )
    start, end = (datetime.datetime.fromisoformat(moment) for moment in event_window(scene))
    recent = MetricsRequest(
        start_time=start,
        end_time=end,
        metric_queries=[
            MetricQueryRequest(id="events-by-type", group_by=MetricFieldNameEnum.SCHEMA_NAME),
            MetricQueryRequest(
                id="events-c1",
                name=MetricNameEnum.EVENTS,
                filters=[
                    MetricFilterRequest(
                        field_name=MetricFieldNameEnum.CUSTOMER_ID, field_values=["customer#1"]
                    )
                ],
            ),
        ],
    )
    expected = {**EXPECTED, **events_expected(scene)}

    with client:
        for request in (july, recent):
            response = get_metrics.sync_detailed(client=client, body=request)
            assert response.status_code == 200, response.content
            answer = response.parsed
            assert isinstance(answer, MetricsAnswer)
            assert_nothing_left_over(answer)
            asked = {q.id: q.name or MetricNameEnum.EVENTS for q in request.metric_queries}
            assert [(r.id, r.name) for r in answer.results] == list(asked.items())
            for result in answer.results:
                assert client_series(result) == with_datetimes(expected[result.id]), result.id
                for series in result.data:
                    assert all(type(value) in (int, float) for value in series.metric_values)

        # Errors parse too, into the documented error shape.
        wrong = MetricsRequest(
            start_time=july.start_time,
            end_time=july.end_time,
            metric_queries=[MetricQueryRequest(id="x", group_by=MetricFieldNameEnum.CUSTOMER_ID)],
        )
        refused = get_metrics.sync_detailed(client=client, body=wrong)
        assert refused.status_code == 400
        assert isinstance(refused.parsed, GetMetricsResponse400)
        assert_nothing_left_over(refused.parsed)
        assert refused.parsed.status == 400
        assert [item.field for item in refused.parsed.details] == ["metricQueries[0].groupBy"]


# -- 2. Against the documented schema, made strict --------------------------------------


def test_every_answer_fits_the_documented_response_schema_made_strict(
    acme, api_client, scene, strict_answer
):
    client = api_client(acme.token)
    asked_names = set()
    for request, expected in every_request(scene):
        response = client.post(PATH, request)
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("application/json")
        answer = response.json()
        assert_valid(strict_answer, answer)
        queries = request["metricQueries"]
        assert [result["id"] for result in answer["results"]] == [q["id"] for q in queries]
        for result, asked in zip(answer["results"], queries, strict=True):
            assert result["name"] == asked.get("name", "EVENTS")
            asked_names.add(result["name"])
            # `groupedBy` exactly on the series of grouped queries.
            grouped = [("groupedBy" in series) for series in result["data"]]
            assert grouped == [("groupBy" in asked)] * len(result["data"])
            assert series_of(result) == expected[result["id"]], result["id"]
    assert asked_names == set(METRIC_NAMES)


def test_the_strict_schema_refuses_a_drifted_answer(strict_answer):
    """The check itself: a renamed, an extra, a missing key, a string number, a
    timestamp without milliseconds and a half group all fail."""
    good = {
        "results": [
            {
                "id": "m1",
                "name": "USAGE",
                "data": [{"timestamps": [DAY_1], "metricValues": [1.5]}],
            }
        ]
    }
    assert_valid(strict_answer, good)
    drifts = []
    for change in (
        lambda series: series.update(values=series.pop("metricValues")),
        lambda series: series.update(unit="sheets"),
        lambda series: series.pop("timestamps"),
        lambda series: series.update(metricValues=["1.5"]),
        lambda series: series.update(timestamps=["2024-07-01T00:00:00Z"]),
        lambda series: series.update(groupedBy={"fieldName": "CUSTOMER_ID"}),
    ):
        drifted = copy.deepcopy(good)
        change(drifted["results"][0]["data"][0])
        drifts.append(strict_answer.is_valid(drifted))
    assert drifts == [False] * 6


def _enum(schema: dict) -> list[str]:
    """The choices of a property, whether it is the enum or wraps one in allOf."""
    if "allOf" in schema:
        [schema] = schema["allOf"]
    return schema["enum"]


def test_the_schema_documents_the_request_fields_and_their_choices(operation):
    assert operation["operationId"] == "getMetrics"
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert operation["requestBody"]["required"] is True
    assert set(request["properties"]) == {"startTime", "endTime", "metricQueries"}
    assert set(request["required"]) == {"startTime", "endTime", "metricQueries"}
    for name in ("startTime", "endTime"):
        assert request["properties"][name]["format"] == "date-time"

    queries = request["properties"]["metricQueries"]
    assert (queries["type"], queries["minItems"], queries["maxItems"]) == ("array", 1, 10)
    fields = queries["items"]["properties"]
    assert set(fields) == {"id", "name", "aggregationPeriod", "groupBy", "filters", "configs"}
    assert queries["items"]["required"] == ["id"]
    assert fields["id"]["type"] == "string"
    assert sorted(_enum(fields["name"])) == sorted(METRIC_NAMES)
    assert sorted(_enum(fields["aggregationPeriod"])) == sorted(PERIODS)
    assert sorted(_enum(fields["groupBy"])) == sorted(FIELD_NAMES)

    filters = fields["filters"]
    assert (filters["type"], filters["minItems"], filters["maxItems"]) == ("array", 1, 5)
    one_filter = filters["items"]
    assert set(one_filter["properties"]) == {"fieldName", "fieldValues"}
    assert set(one_filter["required"]) == {"fieldName", "fieldValues"}
    assert sorted(_enum(one_filter["properties"]["fieldName"])) == sorted(FIELD_NAMES)
    values = one_filter["properties"]["fieldValues"]
    assert (values["type"], values["items"]["type"], values["minItems"]) == ("array", "string", 1)

    configs = fields["configs"]
    assert set(configs["properties"]) == {"CURRENCY"}
    assert sorted(_enum(configs["properties"]["CURRENCY"])) == sorted(CURRENCIES)


def test_the_schema_documents_the_response_fields(operation):
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(answer["properties"]) == {"results"}
    result = answer["properties"]["results"]["items"]
    assert set(result["properties"]) == {"id", "name", "data"}
    assert sorted(_enum(result["properties"]["name"])) == sorted(METRIC_NAMES)
    series = result["properties"]["data"]["items"]
    assert set(series["properties"]) == {"timestamps", "metricValues", "groupedBy"}
    assert set(series["required"]) == {"timestamps", "metricValues"}
    assert series["properties"]["timestamps"]["items"]["format"] == "date-time"
    assert series["properties"]["metricValues"]["items"]["type"] == "number"
    group = series["properties"]["groupedBy"]
    assert set(group["properties"]) == {"fieldName", "fieldValue"}
    assert sorted(_enum(group["properties"]["fieldName"])) == sorted(FIELD_NAMES)


# -- CSV ------------------------------------------------------------------------------------


def test_csv_answers_the_same_numbers_as_json(acme, api_client, scene):
    client = api_client(acme.token)
    for request, _ in every_request(scene):
        as_json = client.post(PATH, request)
        as_csv = client.post(PATH, request, HTTP_ACCEPT="text/csv")
        assert as_csv.status_code == 200, as_csv.content
        assert as_csv["Content-Type"].startswith("text/csv")

        [header, *rows] = csv.reader(io.StringIO(as_csv.content.decode(), newline=""))
        assert header == CSV_HEADER
        answer = json.loads(as_json.content, parse_float=Decimal, parse_int=Decimal)
        expected = [
            [
                result["id"],
                result["name"],
                series.get("groupedBy", {}).get("fieldName", ""),
                series.get("groupedBy", {}).get("fieldValue", ""),
                stamp,
                number,
            ]
            for result in answer["results"]
            for series in result["data"]
            for stamp, number in zip(series["timestamps"], series["metricValues"], strict=True)
        ]
        assert [[*row[:5], Decimal(row[5])] for row in rows] == expected
        # Plain decimals as in the JSON answer (never 1E+1).
        assert all(row[5].replace(".", "").isdigit() for row in rows), rows

    # The documented `format=csv` parameter asks for the same table.
    request, _ = every_request(scene)[0]
    by_parameter = client.post(f"{PATH}?format=csv", request)
    assert by_parameter["Content-Type"].startswith("text/csv")
    assert by_parameter.content == client.post(PATH, request, HTTP_ACCEPT="text/csv").content


def test_errors_under_accept_csv_are_json(acme, api_client, generous_limits):
    client = api_client(acme.token)
    for queries, field in (
        ([query("q", "EVENTS", groupBy="CUSTOMER_ID")], "metricQueries[0].groupBy"),
        (
            [query("q", "USAGE", filters=by("USAGE_METER_ID", "Nope"))],
            "metricQueries[0].filters[0].fieldValues",
        ),
    ):
        refused = client.post(PATH, body(queries), HTTP_ACCEPT="text/csv")
        error = assert_error_body(refused, 400)
        assert set(error) == {"status", "error", "message", "details"}
        assert [item["field"] for item in error["details"]] == [field]

    anonymous = api_client()
    assert_error_body(anonymous.post(PATH, body(QUERIES), HTTP_ACCEPT="text/csv"), 401)
    no_scope = api_client(make_tenant("Meters only", scopes=["usage-metering:read:meters"]).token)
    forbidden = assert_error_body(no_scope.post(PATH, body(QUERIES), HTTP_ACCEPT="text/csv"), 403)
    assert "metrics:read" in forbidden["message"]


def test_the_csv_answer_is_documented_as_text(operation):
    content = operation["responses"]["200"]["content"]
    assert content["text/csv"]["schema"] == {"type": "string"}
