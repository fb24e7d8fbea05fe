"""`POST /metrics`: which metric takes which filters, groupBy fields and configs (the
reference's "Allowed field combinations" tables, written out below from the seed, not
taken from `reporting.metrics`), the request's shape, its defaults and its scope.

Every refusal is a 400 in the shared error body whose `details[].field` is the path of
what is wrong (`metricQueries[0].groupBy`) and whose message names the offending value.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from collection.services import claim_finish, records_claim, rollups_fold
from tenants.scopes import ALL_SCOPES
from tests.conftest import assert_error_body, make_tenant
from tests.streams.runtime.helpers import create_collector, create_meter_type, ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

METRICS_URL = "/metrics"

# -- The reference's tables (seed 002, "MetricQuery: Allowed field combinations") ------------

SEED_FILTERS = {
    "EVENTS": {"ACCOUNT_ID", "CUSTOMER_ID", "SCHEMA_NAME", "EVENT_STATUS"},
    "USAGE": {"ACCOUNT_ID", "CUSTOMER_ID", "USAGE_METER_ID"},
    "REVENUE": {"ACCOUNT_ID", "CUSTOMER_ID", "USAGE_METER_ID"},
    "USAGE_FOR_CYCLE": {"ACCOUNT_ID", "CUSTOMER_ID", "USAGE_METER_ID"},
    "REVENUE_FOR_CYCLE": {"ACCOUNT_ID", "CUSTOMER_ID", "USAGE_METER_ID"},
}
SEED_GROUP_BY = {
    "EVENTS": {"ACCOUNT_ID", "EVENT_STATUS", "SCHEMA_NAME"},
    "USAGE": {"ACCOUNT_ID", "USAGE_METER_ID", "CUSTOMER_ID"},
    "REVENUE": {"ACCOUNT_ID", "USAGE_METER_ID", "CUSTOMER_ID"},
    "USAGE_FOR_CYCLE": {"ACCOUNT_ID", "USAGE_METER_ID", "CUSTOMER_ID"},
    "REVENUE_FOR_CYCLE": {"ACCOUNT_ID", "USAGE_METER_ID", "CUSTOMER_ID"},
}
SEED_CURRENCY_METRICS = {"REVENUE", "REVENUE_FOR_CYCLE"}
# METER_USAGE is the name some of the reference's clients send for USAGE: same rules.
ALIASES = {"METER_USAGE": "USAGE"}
METRICS = [*SEED_FILTERS, *ALIASES]
FIELDS = ["ACCOUNT_ID", "CUSTOMER_ID", "SCHEMA_NAME", "EVENT_STATUS", "USAGE_METER_ID"]
# A value each field accepts (a meter type is named by name or id; "Prints" exists).
VALID_VALUES = {
    "ACCOUNT_ID": ["acc-1"],
    "CUSTOMER_ID": ["cust-1"],
    "SCHEMA_NAME": ["print"],
    "EVENT_STATUS": ["PROCESSED", "IN_PROGRESS"],
    "USAGE_METER_ID": ["Prints"],
}

WINDOW = {"startTime": "2024-01-01T00:00:00Z", "endTime": "2024-01-03T00:00:00Z"}

PRINTS = {
    "name": "Prints",
    "unit": "sheets",
    "category": "P",
    "aggregation": {"type": "sum"},
    "resetSchedule": {"day": "1", "hour": "0", "minute": "0", "month": "*", "weekday": "*"},
    "timezone": "Etc/UTC",
    "activeFrom": None,  # active always: usage of any date counts
}


def _rules(metric: str) -> tuple[set[str], set[str]]:
    seed_name = ALIASES.get(metric, metric)
    return SEED_FILTERS[seed_name], SEED_GROUP_BY[seed_name]


def metrics(client, *queries: dict, **window):
    return client.post(METRICS_URL, {**WINDOW, **window, "metricQueries": list(queries)})


def query(**fields) -> dict:
    return {"id": "q", **fields}


def flt(field: str, *values: str) -> dict:
    return {"fieldName": field, "fieldValues": list(values)}


def assert_refused(response, field: str, *named: str) -> dict:
    """A 400 naming exactly `field`, whose message names each of `named`."""
    body = assert_error_body(response, 400)
    assert [detail["field"] for detail in body["details"]] == [field], body
    for name in named:
        assert name in body["details"][0]["message"], body
    return body


@pytest.fixture
def prints(client) -> dict:
    return create_meter_type(client, PRINTS)


# -- Allowed field combinations ----------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("metric", METRICS)
def test_filters_follow_the_reference_table(client, prints, metric, field):
    response = metrics(client, query(name=metric, filters=[flt(field, *VALID_VALUES[field])]))
    if field in _rules(metric)[0]:
        assert response.status_code == 200, response.content
        (result,) = response.json()["results"]
        assert result["name"] == metric
    else:
        assert_refused(response, "metricQueries[0].filters[0].fieldName", metric, field)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("metric", METRICS)
def test_group_by_follows_the_reference_table(client, metric, field):
    response = metrics(client, query(name=metric, groupBy=field))
    if field in _rules(metric)[1]:
        assert response.status_code == 200, response.content
        (result,) = response.json()["results"]
        assert result["name"] == metric
        assert all(data["groupedBy"]["fieldName"] == field for data in result["data"])
    else:
        assert_refused(response, "metricQueries[0].groupBy", metric, field)


def test_a_later_query_is_refused_at_its_own_index(client):
    response = metrics(
        client,
        query(id="fine", name="USAGE", groupBy="CUSTOMER_ID"),
        query(id="bad", name="USAGE", groupBy="SCHEMA_NAME"),
    )
    assert_refused(response, "metricQueries[1].groupBy", "USAGE", "SCHEMA_NAME")


def test_every_problem_of_a_request_is_reported(client):
    response = metrics(
        client,
        query(id="a", name="EVENTS", groupBy="CUSTOMER_ID"),
        query(id="b", name="USAGE", filters=[flt("EVENT_STATUS", "PROCESSED")]),
    )
    body = assert_error_body(response, 400)
    assert {detail["field"] for detail in body["details"]} == {
        "metricQueries[0].groupBy",
        "metricQueries[1].filters[0].fieldName",
    }


# -- Configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["BASE", "INVOICE"])
@pytest.mark.parametrize("metric", METRICS)
def test_currency_is_a_config_of_revenue_metrics_only(client, metric, currency):
    response = metrics(client, query(name=metric, configs={"CURRENCY": currency}))
    if ALIASES.get(metric, metric) in SEED_CURRENCY_METRICS:
        assert response.status_code == 200, response.content
    else:
        assert_refused(response, "metricQueries[0].configs.CURRENCY", "CURRENCY", metric)


def test_an_unknown_config_is_refused(client):
    response = metrics(client, query(name="REVENUE", configs={"TIMEZONE": "Europe/Paris"}))
    assert_refused(response, "metricQueries[0].configs.TIMEZONE")


@pytest.mark.parametrize("value", ["EUR", "base", "", 1, None])
def test_a_currency_other_than_base_or_invoice_is_refused(client, value):
    response = metrics(client, query(name="REVENUE", configs={"CURRENCY": value}))
    body = assert_refused(response, "metricQueries[0].configs.CURRENCY")
    if isinstance(value, str) and value:
        assert value in body["details"][0]["message"]


def test_configs_must_be_an_object(client):
    response = metrics(client, query(name="REVENUE", configs="INVOICE"))
    assert_refused(response, "metricQueries[0].configs")


# -- Filters ------------------------------------------------------------------------------


def test_schema_name_takes_at_most_one_value(client):
    response = metrics(client, query(filters=[flt("SCHEMA_NAME", "print", "scan")]))
    assert_refused(response, "metricQueries[0].filters[0].fieldValues", "SCHEMA_NAME")


@pytest.mark.parametrize("status", ["DONE", "processed", "Failed"])
def test_an_unknown_event_status_is_refused(client, status):
    response = metrics(client, query(filters=[flt("EVENT_STATUS", "PROCESSED", status)]))
    assert_refused(response, "metricQueries[0].filters[0].fieldValues", status)


def test_a_field_filtered_twice_is_refused(client):
    filters = [flt("ACCOUNT_ID", "acc-1"), flt("CUSTOMER_ID", "c"), flt("ACCOUNT_ID", "acc-2")]
    response = metrics(client, query(name="USAGE", filters=filters))
    assert_refused(response, "metricQueries[0].filters[2].fieldName", "ACCOUNT_ID")


@pytest.mark.parametrize("count", [0, 6])
def test_a_query_takes_one_to_five_filters(client, count):
    filters = [flt("CUSTOMER_ID", f"c{index}") for index in range(count)]
    assert_refused(metrics(client, query(filters=filters)), "metricQueries[0].filters")


def test_five_filters_are_fine(client):
    filters = [
        flt("ACCOUNT_ID", "acc-1"),
        flt("CUSTOMER_ID", "cust-1"),
        flt("SCHEMA_NAME", "print"),
        flt("EVENT_STATUS", "FAILED"),
    ]
    assert metrics(client, query(filters=filters)).status_code == 200
    # Only four fields apply to EVENTS, so a fifth filter repeats one: refused as such.
    response = metrics(client, query(filters=[*filters, flt("CUSTOMER_ID", "cust-2")]))
    assert_refused(response, "metricQueries[0].filters[4].fieldName", "CUSTOMER_ID")


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"fieldName": "CUSTOMER_ID", "fieldValues": []}, "filters[0].fieldValues"),
        ({"fieldName": "CUSTOMER_ID"}, "filters[0].fieldValues"),
        ({"fieldName": "CUSTOMER_ID", "fieldValues": "cust-1"}, "filters[0].fieldValues"),
        ({"fieldName": "CUSTOMER_ID", "fieldValues": [7]}, "filters[0].fieldValues[0]"),
        ({"fieldValues": ["cust-1"]}, "filters[0].fieldName"),
        ({"fieldName": "CUSTOMER_ID", "fieldValues": ["c"], "op": "in"}, "filters[0].op"),
    ],
)
def test_a_malformed_filter_is_refused(client, entry, field):
    assert_refused(metrics(client, query(filters=[entry])), f"metricQueries[0].{field}")


def test_an_unknown_meter_type_is_refused(client, prints):
    response = metrics(client, query(name="USAGE", filters=[flt("USAGE_METER_ID", "Scans")]))
    assert_refused(response, "metricQueries[0].filters[0].fieldValues", "Scans")


def test_a_meter_type_id_is_found_in_any_spelling(client, prints):
    spelled = prints["id"].upper().replace("-", "")
    response = metrics(client, query(name="USAGE", filters=[flt("USAGE_METER_ID", spelled)]))
    assert response.status_code == 200, response.content


# -- Names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, field, named",
    [
        ({"name": "COST"}, "name", "COST"),
        ({"name": "usage"}, "name", "usage"),
        ({"aggregationPeriod": "YEAR"}, "aggregationPeriod", "YEAR"),
        ({"aggregationPeriod": "day"}, "aggregationPeriod", "day"),
        ({"filters": [flt("PRODUCT_ID", "p")]}, "filters[0].fieldName", "PRODUCT_ID"),
        ({"groupBy": "PRODUCT_ID"}, "groupBy", "PRODUCT_ID"),
    ],
)
def test_unknown_names_are_refused(client, fields, field, named):
    assert_refused(metrics(client, query(**fields)), f"metricQueries[0].{field}", named)


# -- Queries ------------------------------------------------------------------------------


def test_query_ids_are_unique(client):
    response = metrics(client, query(id="m1"), query(id="m2"), query(id="m1"))
    body = assert_error_body(response, 400)
    (detail,) = body["details"]
    assert detail["field"] == "metricQueries[2].id", body
    assert "m1" in detail["message"]


@pytest.mark.parametrize("value", [..., "", None, 1])
def test_a_query_needs_an_id(client, value):
    entry = {"name": "EVENTS"} if value is ... else {"id": value, "name": "EVENTS"}
    assert_refused(metrics(client, entry), "metricQueries[0].id")


def test_unknown_fields_are_refused(client):
    response = client.post(METRICS_URL, {**WINDOW, "metricQueries": [query()], "timezone": "x"})
    assert_refused(response, "timezone")
    assert_refused(metrics(client, query(limit=5)), "metricQueries[0].limit")


@pytest.mark.parametrize("value", [..., [], None, {}])
def test_metric_queries_are_required(client, value):
    body = dict(WINDOW) if value is ... else {**WINDOW, "metricQueries": value}
    assert_refused(client.post(METRICS_URL, body), "metricQueries")


def test_at_most_ten_queries(client):
    ten = [query(id=f"m{index}") for index in range(10)]
    response = metrics(client, *ten)
    assert response.status_code == 200, response.content
    assert [result["id"] for result in response.json()["results"]] == [q["id"] for q in ten]
    assert_refused(metrics(client, *ten, query(id="m10")), "metricQueries")


@pytest.mark.parametrize(
    "body",
    ["{not json", "", "[]", '"EVENTS"', "null"],
    ids=["malformed", "empty", "array", "string", "null"],
)
def test_a_body_that_is_not_a_json_object_is_refused(client, body):
    response = client.post(METRICS_URL, body, content_type="application/json")
    assert_error_body(response, 400)


# -- Time window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window, field",
    [
        ({"startTime": "2024-01-01T00:30:00Z"}, "startTime"),
        ({"startTime": "2024-01-01T00:00:01Z"}, "startTime"),
        ({"startTime": "2024-01-01T00:00:00.001Z"}, "startTime"),
        # 00:00 at +05:30 is 18:30 UTC: not a whole hour where usage is kept.
        ({"startTime": "2024-01-01T00:00:00+05:30"}, "startTime"),
        ({"endTime": "2024-01-02T23:59:00Z"}, "endTime"),
        ({"endTime": "2024-01-01T00:00:00Z"}, "endTime"),
        ({"endTime": "2023-12-31T00:00:00Z"}, "endTime"),
    ],
    ids=["half-hour", "second", "millisecond", "offset", "end", "empty", "reversed"],
)
def test_the_window_runs_forward_between_whole_hours(client, window, field):
    response = metrics(client, query(), **window)
    body = assert_refused(response, field)
    assert field in body["message"]


def test_a_whole_hour_in_another_offset_is_fine(client):
    response = metrics(
        client, query(aggregationPeriod="HOUR"), startTime="2024-01-01T05:00:00+05:00"
    )
    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["data"][0]["timestamps"][0] == "2024-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2024-02-30T00:00:00Z", "2024-01-01T25:00:00Z", 1704067200, None, ""],
)
@pytest.mark.parametrize("field", ["startTime", "endTime"])
def test_malformed_times_are_refused(client, field, value):
    assert_refused(metrics(client, query(), **{field: value}), field)


@pytest.mark.parametrize("field", ["startTime", "endTime"])
def test_times_are_required(client, field):
    body = {**WINDOW, "metricQueries": [query()]}
    del body[field]
    assert_refused(client.post(METRICS_URL, body), field)


@pytest.mark.parametrize("value", ["2024-01-01T00:00:00", "2024-01-01"])
def test_times_without_an_offset_are_refused(client, value):
    assert_refused(metrics(client, query(), startTime=value), "startTime")


@pytest.mark.parametrize("metric", ["EVENTS", "USAGE"])
def test_too_many_buckets_are_refused(client, metric):
    years = {"startTime": "2024-01-01T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"}
    hourly = query(name=metric, aggregationPeriod="HOUR")
    assert_refused(metrics(client, hourly, **years), "metricQueries[0].aggregationPeriod", "HOUR")
    daily = metrics(client, query(name=metric, aggregationPeriod="DAY"), **years)
    assert daily.status_code == 200, daily.content
    assert len(daily.json()["results"][0]["data"][0]["timestamps"]) == 731


# -- Defaults -------------------------------------------------------------------------------

# Records in each status, in counts whose sums tell every subset apart.
COUNTS = {"PROCESSED": 1, "UNPROCESSED": 2, "IN_PROGRESS": 4, "FAILED": 8}


def _records(prefix: str, count: int, moment: datetime.datetime) -> list[dict]:
    return [
        {
            "id": f"{prefix}-{index}",
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "type": "print",
            "customerId": "cust-1",
            "accountId": "acc-1",
            "sheets": 1,
        }
        for index in range(count)
    ]


def _statuses(client, *, fold_midway: bool) -> datetime.datetime:
    """Records of one hour in all four statuses, each reached the way a worker reaches
    it: ingested (UNPROCESSED), claimed (IN_PROGRESS), finished (PROCESSED or FAILED).
    `fold_midway` folds the rollup deltas (as Beat does) half way, so that the counts
    come from buckets and pending deltas together. Returns the records' event time."""
    moment = (timezone.now() - datetime.timedelta(hours=3)).replace(
        minute=15, second=0, microsecond=0
    )
    collector = create_collector(client)["id"]
    ingest(client, collector, _records("a", COUNTS["PROCESSED"] + COUNTS["FAILED"], moment))
    ingest(client, collector, _records("b", COUNTS["IN_PROGRESS"], moment))
    finished = records_claim(collector_id=collector, limit=COUNTS["PROCESSED"] + COUNTS["FAILED"])
    assert {record.record_id[0] for record in finished.records} == {"a"}
    failures = {record.id: "rejected" for record in finished.records[: COUNTS["FAILED"]]}
    claim_finish(claim=finished, failures=failures)
    if fold_midway:
        rollups_fold()
    held = records_claim(collector_id=collector, limit=COUNTS["IN_PROGRESS"])
    assert {record.record_id[0] for record in held.records} == {"b"}
    ingest(client, collector, _records("c", COUNTS["UNPROCESSED"], moment))
    return moment


def _day(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _values(result: dict) -> dict[str | None, list[Decimal]]:
    """Series by group value (None ungrouped); each group must appear once."""
    series = [
        (
            (data.get("groupedBy") or {}).get("fieldValue"),
            [Decimal(str(value)) for value in data["metricValues"]],
        )
        for data in result["data"]
    ]
    labels = [label for label, _ in series]
    assert len(labels) == len(set(labels)), f"a group appears twice: {series}"
    return dict(series)


@pytest.mark.parametrize("fold", ["never", "midway", "at-the-end"])
def test_defaults_events_by_day_of_processed_and_unprocessed_records(client, fold):
    moment = _statuses(client, fold_midway=fold == "midway")
    if fold == "at-the-end":
        assert rollups_fold() > 0
    day = _day(moment)
    window = {
        "startTime": _stamp(day - datetime.timedelta(days=1)),
        "endTime": _stamp(day + datetime.timedelta(days=2)),
    }
    every = list(COUNTS)
    queries = [
        {"id": "defaults"},
        *({"id": status, "filters": [flt("EVENT_STATUS", status)]} for status in COUNTS),
        {"id": "every", "name": "EVENTS", "filters": [flt("EVENT_STATUS", *every)]},
        {"id": "by-status", "groupBy": "EVENT_STATUS"},
        {
            "id": "by-status-every",
            "groupBy": "EVENT_STATUS",
            "filters": [flt("EVENT_STATUS", *every)],
        },
        {"id": "customer", "filters": [flt("CUSTOMER_ID", "cust-1")]},
    ]
    response = client.post(METRICS_URL, {**window, "metricQueries": queries})
    assert response.status_code == 200, response.content
    results = {result["id"]: result for result in response.json()["results"]}
    days = [_stamp(day + datetime.timedelta(days=offset)) for offset in (-1, 0, 1)]

    def on_day(n: int) -> list[Decimal]:
        return [Decimal(0), Decimal(n), Decimal(0)]

    defaults = results["defaults"]
    assert defaults["name"] == "EVENTS"
    assert [data["timestamps"] for data in defaults["data"]] == [days]
    default_count = COUNTS["PROCESSED"] + COUNTS["UNPROCESSED"]
    assert _values(defaults) == {None: on_day(default_count)}
    for status, count in COUNTS.items():
        assert _values(results[status]) == {None: on_day(count)}, status
    assert _values(results["every"]) == {None: on_day(sum(COUNTS.values()))}
    assert _values(results["by-status"]) == {
        "PROCESSED": on_day(COUNTS["PROCESSED"]),
        "UNPROCESSED": on_day(COUNTS["UNPROCESSED"]),
    }
    assert _values(results["by-status-every"]) == {s: on_day(n) for s, n in COUNTS.items()}
    assert _values(results["customer"]) == {None: on_day(default_count)}


# -- Scope ----------------------------------------------------------------------------------


def test_metrics_need_the_metrics_read_scope(db, api_client):
    body = {**WINDOW, "metricQueries": [query()]}
    everything_else = [scope for scope in ALL_SCOPES if scope != "metrics:read"]
    without = make_tenant("Initech", scopes=everything_else)
    assert_error_body(api_client(without.token).post(METRICS_URL, body), 403)
    only = make_tenant("Umbrella", scopes=["metrics:read"])
    assert api_client(only.token).post(METRICS_URL, body).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer not-a-token"])
def test_metrics_need_a_token(api_client, header):
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = api_client().post(METRICS_URL, {**WINDOW, "metricQueries": [query()]}, **extra)
    assert_error_body(response, 401)


def test_errors_are_json_even_when_csv_is_asked_for(client):
    body = {**WINDOW, "metricQueries": [query(groupBy="USAGE_METER_ID")]}
    response = client.post(METRICS_URL, body, HTTP_ACCEPT="text/csv")
    assert_refused(response, "metricQueries[0].groupBy", "USAGE_METER_ID")


@pytest.mark.parametrize("period", ["HOUR", "DAY", "WEEK", "MONTH"])
def test_a_window_past_the_year_9998_is_refused_not_a_crash(client, period):
    late = {"startTime": "9998-12-01T00:00:00Z", "endTime": "9999-12-31T00:00:00Z"}
    response = metrics(client, query(name="EVENTS", aggregationPeriod=period), **late)
    assert_refused(response, "endTime", "9999-01-01")


def test_a_window_ending_on_the_last_moment_allowed_is_answered(client):
    last = {"startTime": "9998-12-01T00:00:00Z", "endTime": "9999-01-01T00:00:00Z"}
    response = metrics(client, query(name="EVENTS", aggregationPeriod="MONTH"), **last)
    assert response.status_code == 200, response.content
