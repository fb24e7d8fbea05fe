"""`GET /platform-api/usage/report`: every operator's usage over whole UTC days, in JSON
and CSV, reconciled with what the test did; validation; storage; what it reads."""

from __future__ import annotations

import csv
import datetime
import io
import re
from decimal import Decimal, localcontext

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.json import dumps
from reporting import platform as platform_figures
from tenants.accounting import API_CATEGORIES
from tenants.services import usage_counter_add
from tests.conftest import assert_error_body, make_tenant
from tests.reporting.platform_helpers import REPORT, connect, fold
from tests.streams.runtime.helpers import COLLECTORS, ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

CONNECTOR_SLUGS = ["online-collection", "http", "webhook"]
UTC = datetime.UTC


def at(day: str, hour: int = 12, minute: int = 0) -> datetime.datetime:
    return datetime.datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=UTC)


def report(platform, start: str, end: str, **headers) -> dict:
    response = platform.get(REPORT, {"start": start, "end": end}, **headers)
    assert response.status_code == 200, response.content
    return response.json()


def line(body: dict, tenant) -> dict:
    (found,) = [item for item in body["operators"] if item["id"] == str(tenant.operator.pk)]
    return found


def set_weights(platform, weights: dict) -> None:
    """PUT the platform settings with these billing weights (exact JSON numbers)."""
    body = {"name": "Tally", "contactEmail": "ops@example.com", "billing": weights}
    response = platform.put("/platform-api/settings", dumps(body))
    assert response.status_code == 200, response.content


def today() -> str:
    return timezone.now().astimezone(UTC).date().isoformat()


# -- Validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, fields",
    [
        ({}, ["start", "end"]),
        ({"start": "2026-03-01"}, ["end"]),
        ({"end": "2026-03-31"}, ["start"]),
        ({"start": "", "end": "2026-03-31"}, ["start"]),
        ({"start": "2026-3-1", "end": "2026-03-31"}, ["start"]),
        ({"start": "2026-02-30", "end": "2026-03-31"}, ["start"]),
        ({"start": "20260301", "end": "2026-03-31"}, ["start"]),
        ({"start": "2026-03-01T00:00:00Z", "end": "2026-03-31"}, ["start"]),
        ({"start": "2026-W09-1", "end": "2026-03-31"}, ["start"]),
        ({"start": "２０２６-03-01", "end": "2026-03-31"}, ["start"]),  # noqa: RUF001
        ({"start": "2026-03-01", "end": "yesterday"}, ["end"]),
        ({"start": "2026-03-31", "end": "2026-03-01"}, ["end"]),
        ({"start": "2025-01-01", "end": "2026-01-02"}, ["end"]),
        ({"start": "9999-12-31", "end": "9999-12-31"}, ["end"]),
        ({"start": "9999-01-01", "end": "9999-01-31"}, ["end"]),
    ],
    ids=[
        "nothing",
        "no-end",
        "no-start",
        "empty-start",
        "unpadded",
        "no-such-day",
        "basic-format",
        "a-time",
        "week-date",
        "wide-digits",
        "words",
        "end-before-start",
        "367-days",
        "the-last-day",
        "the-last-year",
    ],
)
def test_a_bad_range_is_400_naming_the_parameter(platform, params, fields):
    body = assert_error_body(platform.get(REPORT, params), 400)
    assert sorted(item["field"] for item in body["details"]) == sorted(fields)


def test_a_range_of_366_days_and_of_one_day_are_answered(platform):
    assert report(platform, "2024-01-01", "2024-12-31")["end"] == "2024-12-31"  # leap year
    body = report(platform, "2026-03-01", "2026-03-01")
    assert (body["start"], body["end"]) == ("2026-03-01", "2026-03-01")


@pytest.mark.parametrize(
    "start, end",
    [
        ("0001-01-01", "0001-01-01"),
        ("0001-01-01", "0001-12-31"),
        ("9998-01-01", "9998-12-31"),
        ("9998-12-02", "9998-12-30"),
        ("9998-12-31", "9998-12-31"),
    ],
)
@pytest.mark.parametrize("accept", ["text/csv", "application/json"])
def test_the_first_and_last_days_a_report_can_cover_are_answered(platform, start, end, accept):
    response = platform.get(REPORT, {"start": start, "end": end}, HTTP_ACCEPT=accept)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("accept", ["text/csv", "application/json"])
def test_errors_are_json_whatever_is_accepted(platform, api_client, acme, accept):
    bad = platform.get(REPORT, {"start": "2026-03-02", "end": "2026-03-01"}, HTTP_ACCEPT=accept)
    assert_error_body(bad, 400)
    refused = api_client(acme.token).get(
        REPORT, {"start": "2026-03-01", "end": "2026-03-02"}, HTTP_ACCEPT=accept
    )
    assert_error_body(refused, 401)


# -- Figures --------------------------------------------------------------------------------


def test_the_report_counts_what_each_operator_did_today(platform, api_client, acme, globex):
    acme_client, globex_client = api_client(acme.token), api_client(globex.token)
    acme_collector = connect(acme_client, collectors=1)["collectors"][0]["id"]
    fold()
    before = report(platform, today(), today())

    ingest(acme_client, acme_collector, [{"id": "1", "type": "print"}, {"id": "2"}])
    ingest(acme_client, acme_collector, [{"id": "3", "type": "print"}, {"id": "1"}])  # a dup
    acme_client.get(COLLECTORS)
    acme_client.get("/usage-metering/v1/meter-types")
    globex_client.get("/stream-management/v1/streams")
    fold()

    after = report(platform, today(), today())
    acme_before, acme_after = line(before, acme), line(after, acme)
    calls = {
        key: acme_after["apiCallsByCategory"][key] - acme_before["apiCallsByCategory"][key]
        for key in API_CATEGORIES
    }
    assert calls == {
        **dict.fromkeys(API_CATEGORIES, 0),
        "online-collection": 3,
        "usage-metering": 1,
    }
    gateway = acme_after["gatewayRequestsByConnector"]
    assert (
        gateway["online-collection"]
        - acme_before["gatewayRequestsByConnector"]["online-collection"]
        == 2
    )
    assert acme_after["eventsByType"] == {"": 1, "print": 2}  # stored records only
    globex_calls = line(after, globex)["apiCallsByCategory"]
    assert (
        globex_calls["stream-management"]
        - line(before, globex)["apiCallsByCategory"]["stream-management"]
        == 1
    )
    assert line(after, globex)["eventsByType"] == {}


@pytest.fixture
def history(acme, globex):
    """Counts on chosen days (as the fold writes them for past hours), folded: acme
    around March 2026's edges, globex in February only."""
    counts = [
        (acme, "api_call", "metrics", at("2026-02-28", 23, 59), 100),  # the day before
        (acme, "api_call", "metrics", at("2026-03-01", 0, 0), 1),
        (acme, "api_call", "billing", at("2026-03-15"), 2),
        (acme, "api_call", "metrics", at("2026-03-31", 23, 59), 4),
        (acme, "api_call", "metrics", at("2026-04-01", 0, 0), 1000),  # the day after
        (acme, "gateway_request", "online-collection", at("2026-03-02"), 8),
        (acme, "gateway_request", "webhook", at("2026-03-03"), 16),
        (acme, "gateway_request", "http", at("2026-03-04"), 32),
        (acme, "event", "print", at("2026-02-10"), 64),  # stored, not in the range
        (acme, "event", "print", at("2026-03-05"), 128),
        (acme, "event", "scan", at("2026-03-06"), 256),
        (acme, "event", "print", at("2026-04-02"), 512),  # after: neither
        (globex, "event", "print", at("2026-02-01"), 5),
        (globex, "api_call", "oauth", at("2026-02-01"), 3),
    ]
    for tenant, kind, key, moment, count in counts:
        usage_counter_add(
            operator_id=tenant.operator.pk, kind=kind, key=key, count=count, at=moment
        )
    fold()


def test_only_the_days_of_the_range_count(platform, acme, globex, history):
    body = report(platform, "2026-03-01", "2026-03-31")
    acme_line = line(body, acme)

    assert acme_line["apiCallsByCategory"] == {
        **dict.fromkeys(API_CATEGORIES, 0),
        "metrics": 5,
        "billing": 2,
    }
    assert list(acme_line["apiCallsByCategory"]) == list(API_CATEGORIES)
    assert acme_line["gatewayRequestsByConnector"] == {
        "online-collection": 8,
        "http": 32,
        "webhook": 16,
    }
    assert acme_line["eventsByType"] == {"print": 128, "scan": 256}
    globex_line = line(body, globex)
    assert globex_line["apiCallsByCategory"] == dict.fromkeys(API_CATEGORIES, 0)
    assert globex_line["eventsByType"] == {}
    # One day, and a range across the month's start.
    assert (
        line(report(platform, "2026-03-31", "2026-03-31"), acme)["apiCallsByCategory"]["metrics"]
        == 4
    )
    assert (
        line(report(platform, "2026-02-28", "2026-03-01"), acme)["apiCallsByCategory"]["metrics"]
        == 101
    )


def test_storage_counts_every_record_stored_by_the_end(platform, acme, globex, history):
    per_record = platform_figures.storage_bytes_per_record()

    body = report(platform, "2026-03-01", "2026-03-31")

    assert line(body, acme)["storageBytes"] == (64 + 128 + 256) * per_record
    # globex ingested nothing in March, but its February records are still stored.
    assert line(body, globex)["storageBytes"] == 5 * per_record
    # Before the first record: nothing stored (and nothing else: not listed).
    assert report(platform, "2026-01-01", "2026-01-31")["operators"] == []


def test_totals_are_the_sums_of_the_operators(platform, acme, globex, history):
    body = report(platform, "2026-02-01", "2026-03-31")

    assert set(body) == {"start", "end", "operators", "totals"}
    assert [item["name"] for item in body["operators"]] == ["Acme", "Globex"]
    totals = body["totals"]
    for field in ("apiCallsByCategory", "gatewayRequestsByConnector", "eventsByType"):
        keys = set().union(*(item[field] for item in body["operators"]))
        assert set(totals[field]) == keys
        for key in keys:
            assert totals[field][key] == sum(item[field].get(key, 0) for item in body["operators"])
    assert totals["storageBytes"] == sum(item["storageBytes"] for item in body["operators"])
    assert Decimal(str(totals["billableUnits"])) == sum(
        Decimal(str(item["billableUnits"])) for item in body["operators"]
    )
    assert totals["eventsByType"] == {"print": 64 + 128 + 5, "scan": 256}


def test_billable_units_come_from_the_weights(platform, acme, globex, history):
    weights = {
        "apiCallWeight": Decimal("0.5"),
        "gatewayRequestWeight": Decimal("0.002"),
        "eventWeight": Decimal("0.0001"),
        "storageGbWeight": Decimal("3.25"),
    }
    set_weights(platform, weights)

    response = platform.get(REPORT, {"start": "2026-03-01", "end": "2026-03-31"})
    body = response.json(parse_float=Decimal)
    acme_line = line(body, acme)
    expected = (
        7 * weights["apiCallWeight"]
        + 56 * weights["gatewayRequestWeight"]
        + 384 * weights["eventWeight"]
        + Decimal(acme_line["storageBytes"]) / Decimal(10**9) * weights["storageGbWeight"]
    )
    assert acme_line["billableUnits"] == expected
    # Exact: the JSON number has every digit (no float rounding on the way).
    assert f'"billableUnits":{expected.normalize():f}'.encode() in response.content
    globex_line = line(body, globex)
    assert globex_line["billableUnits"] == (
        Decimal(globex_line["storageBytes"]) / Decimal(10**9) * weights["storageGbWeight"]
    )


def test_units_of_more_than_28_digits_keep_every_digit_in_json_and_csv(platform, acme):
    set_weights(
        platform,
        {
            "apiCallWeight": Decimal("1.0000000001"),
            "gatewayRequestWeight": 0,
            "eventWeight": 0,
            "storageGbWeight": Decimal("0.0000000001"),
        },
    )
    moment = at("2026-03-02")
    usage_counter_add(
        operator_id=acme.operator.pk, kind="api_call", key="metrics", count=10**9, at=moment
    )
    usage_counter_add(operator_id=acme.operator.pk, kind="event", key="print", at=moment)
    fold()
    params = {"start": "2026-03-01", "end": "2026-03-31"}

    body = platform.get(REPORT, params).json(parse_float=Decimal)
    (row, _totals) = csv_rows(platform.get(REPORT, params, HTTP_ACCEPT="text/csv"))

    with localcontext(prec=100):  # the default context would round to 28 digits
        exact = 10**9 * Decimal("1.0000000001") + Decimal(
            platform_figures.storage_bytes_per_record()
        ).scaleb(-9) * Decimal("0.0000000001")
    assert len(exact.as_tuple().digits) > 28
    assert line(body, acme)["billableUnits"] == exact
    assert Decimal(row["billableUnits"]) == exact


def test_with_the_default_weights_units_are_calls_requests_and_events(
    platform, acme, globex, history
):
    body = report(platform, "2026-03-01", "2026-03-31")
    assert line(body, acme)["billableUnits"] == 7 + 56 + 384  # storage free by default
    assert line(body, globex)["billableUnits"] == 0


def test_operators_are_listed_when_they_existed_used_or_stored(platform, acme, globex, history):
    # Created today, with counts in the past: listed where they used or stored anything.
    march = report(platform, "2026-03-01", "2026-03-31")
    assert [item["name"] for item in march["operators"]] == ["Acme", "Globex"]
    assert line(march, globex)["storageBytes"] > 0  # February's records
    january = report(platform, "2026-01-01", "2026-01-31")
    assert january["operators"] == []
    assert january["totals"]["billableUnits"] == 0


def test_an_operator_without_usage_is_listed_with_zeros(platform, acme):
    body = report(platform, today(), today())
    (only,) = body["operators"]
    assert only == {
        "id": str(acme.operator.pk),
        "name": "Acme",
        "apiCallsByCategory": dict.fromkeys(API_CATEGORIES, 0),
        "gatewayRequestsByConnector": dict.fromkeys(CONNECTOR_SLUGS, 0),
        "eventsByType": {},
        "storageBytes": 0,
        "billableUnits": 0,
    }
    assert body["totals"] == {
        key: value for key, value in only.items() if key not in ("id", "name")
    }


# -- CSV ------------------------------------------------------------------------------------


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_csv_is_the_same_report(platform, acme, globex, history):
    params = {"start": "2026-02-01", "end": "2026-03-31"}
    body = platform.get(REPORT, params).json(parse_float=Decimal)
    response = platform.get(REPORT, params, HTTP_ACCEPT="text/csv")
    rows = csv_rows(response)

    assert response["Content-Disposition"] == (
        'attachment; filename="usage-report-2026-02-01-2026-03-31.csv"'
    )
    header = list(rows[0])
    assert header[:4] == ["start", "end", "operatorId", "operatorName"]
    assert header[-2:] == ["storageBytes", "billableUnits"]
    assert [h for h in header if h.startswith("apiCalls:")] == [
        f"apiCalls:{key}" for key in API_CATEGORIES
    ]
    assert [h for h in header if h.startswith("gatewayRequests:")] == [
        f"gatewayRequests:{key}" for key in CONNECTOR_SLUGS
    ]
    assert [h for h in header if h.startswith("events:")] == ["events:print", "events:scan"]

    assert len(rows) == len(body["operators"]) + 1
    for row, item in zip(rows, [*body["operators"], body["totals"]], strict=True):
        assert (row["start"], row["end"]) == ("2026-02-01", "2026-03-31")
        assert row["operatorId"] == item.get("id", "")
        assert row["operatorName"] == item.get("name", "")
        for key, value in item["apiCallsByCategory"].items():
            assert int(row[f"apiCalls:{key}"]) == value
        for key, value in item["gatewayRequestsByConnector"].items():
            assert int(row[f"gatewayRequests:{key}"]) == value
        for key in ("print", "scan"):
            assert int(row[f"events:{key}"]) == item["eventsByType"].get(key, 0)
        assert int(row["storageBytes"]) == item["storageBytes"]
        assert Decimal(row["billableUnits"]) == item["billableUnits"]
    assert rows[-1]["operatorId"] == ""


def test_csv_of_exact_units_has_every_digit(platform, acme, history):
    set_weights(
        platform,
        {
            "apiCallWeight": Decimal("0.0000001"),
            "gatewayRequestWeight": Decimal("0.000001"),
            "eventWeight": 0,
        },
    )
    response = platform.get(
        REPORT, {"start": "2026-03-01", "end": "2026-03-31"}, HTTP_ACCEPT="text/csv"
    )
    (acme_row,) = [row for row in csv_rows(response) if row["operatorName"] == "Acme"]
    assert acme_row["billableUnits"] == "0.0000567"  # 7 calls, 56 requests; never 5.67E-5


def test_csv_cells_cannot_be_spreadsheet_formulas(platform, api_client, db):
    tenant = make_tenant("=HYPERLINK(1)")
    client = api_client(tenant.token)
    collector = connect(client, collectors=1)["collectors"][0]["id"]
    ingest(client, collector, [{"id": "1", "type": "@SUM(A1)"}])
    fold()

    response = platform.get(REPORT, {"start": today(), "end": today()}, HTTP_ACCEPT="text/csv")
    (row, _totals) = csv_rows(response)

    assert row["operatorName"] == "'=HYPERLINK(1)"
    assert row["events:@SUM(A1)"] == "1"  # a header cell starts with its kind: no formula
    json_line = report(platform, today(), today())["operators"][0]
    assert json_line["name"] == "=HYPERLINK(1)"  # the JSON is the data as it is
    assert json_line["eventsByType"] == {"@SUM(A1)": 1}


# -- Storage estimate -----------------------------------------------------------------------


def test_bytes_per_record_is_the_default_until_there_are_enough_records(db):
    assert platform_figures.storage_bytes_per_record() == platform_figures.DEFAULT_BYTES_PER_RECORD


def test_bytes_per_record_comes_from_the_catalog(api_client, acme, monkeypatch):
    client = api_client(acme.token)
    collector = connect(client, collectors=1)["collectors"][0]["id"]
    ingest(client, collector, [{"id": str(n), "type": "print", "n": n} for n in range(200)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE collection_record")
        cursor.execute(
            "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('collection_record')"
        )
        (record_bytes,) = cursor.fetchone()
    monkeypatch.setattr(platform_figures, "MIN_RECORDS_FOR_ESTIMATE", 100)

    per_record = platform_figures.storage_bytes_per_record()

    # The record partitions alone, over 200 records; the rollup tables add to it.
    assert per_record >= record_bytes / 200
    assert per_record != platform_figures.DEFAULT_BYTES_PER_RECORD


# -- What the report reads ------------------------------------------------------------------

# Tables a report must never scan: records, hourly rollups and hourly usage counters.
SCANNED = re.compile(
    r"\b(FROM|JOIN)\s+\"?(collection_record|collection_eventrollup|"
    r"collection_customereventrollup|metering_usagerollup|metering_usagetyperollup|"
    r"tenants_usagecounter)\"?(\s|$|,|\))",
    re.IGNORECASE,
)


def test_the_report_reads_rollups_not_records_or_hours(platform, api_client, acme, history):
    client = api_client(acme.token)
    collector = connect(client, collectors=1)["collectors"][0]["id"]
    ingest(client, collector, [{"id": "1", "type": "print"}])
    fold()

    def queries(start: str, end: str) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            report(platform, start, end)
        return [query["sql"] for query in captured.captured_queries]

    report(platform, "2026-03-01", "2026-03-01")  # the key's first use is recorded once
    year = queries("2025-06-01", "2026-05-31")
    for sql in year:
        assert not SCANNED.search(sql), sql
    assert any("tenants_usagecountermonthly" in sql for sql in year)
    # The same statements for a day, a month or a year, however many operators.
    day = queries("2026-03-01", "2026-03-01")
    for index in range(3):
        make_tenant(f"More {index}")
    assert len(queries("2026-03-01", "2026-03-31")) == len(day) == len(year)
