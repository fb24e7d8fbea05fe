"""POST /metrics on known data: every metric with its filters, groupings and periods,
against values computed by hand.

The data (July 2024; the 1st is a Monday), applied by the metering service the stream
meter node calls, records sent to a collector over HTTP:

    usage           c1 (account a1)                     c2 (account a2)
    Calls (Sum)     07-01 10:00 3, 10:30 2, 23:00 5     07-01 10:15 4
                    07-02 00:00 7, 07-08 09:00 1        07-31 12:00 6, 08-01 00:00 100
    Seats (Max)     07-01 10:00 5, 11:00 9, 07-02 3     07-01 10:00 7
    Temp (Min)      07-01 10:00 4, 12:00 -2             07-02 10:00 1
    Logins (Incr.)  07-01 10:00 twice

Calls cost 0.50 a unit. a1 is invoiced in USD (the base) monthly on the 1st, a2 in EUR
monthly on the 15th; EUR is 0.9 from 2024-06-30 and 0.8 from 2024-07-20.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from collection.models import CustomerEventRollup, EventRollup
from collection.services import claim_finish, records_claim, rollups_fold
from metering.services import meter_type_create
from metering.usage import UsageUpdate, usage_apply
from tests.conftest import assert_error_body
from tests.streams.runtime.helpers import create_collector, ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

JULY = ("2024-07-01T00:00:00Z", "2024-08-01T00:00:00Z")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def day(n: int, month: int = 7) -> str:
    return f"2024-{month:02d}-{n:02d}T00:00:00.000Z"


def july(values: dict[int, object]) -> list:
    """31 daily values of July, zero where not given."""
    return [values.get(n, 0) for n in range(1, 32)]


def meter_type(operator, name: str, aggregation: str) -> str:
    """A meter type active since before the data (the API starts a type's life at its
    creation, so it would ignore this past usage)."""
    created = meter_type_create(
        operator=operator,
        name=name,
        unit="units",
        category=name,
        aggregation=aggregation,
        timezone="Etc/UTC",
        reset_cron="0 0 1 * *",
        active_from=None,
    )
    return str(created.pk)


@pytest.fixture
def data(client, acme):
    types = {
        name: meter_type(acme.operator, name, aggregation)
        for name, aggregation in (
            ("Calls", "Sum"),
            ("Seats", "Max"),
            ("Temp", "Min"),
            ("Logins", "Increment"),
        )
    }
    for account, customer, currency in (("a1", "c1", "USD"), ("a2", "c2", "EUR")):
        response = client.post(
            "/billing/v1/accounts",
            {"accountId": account, "customerId": customer, "invoiceCurrency": currency},
        )
        assert response.status_code == 201, response.content
    plan = client.post(
        "/billing/v1/price-plans",
        {
            "name": "Standard",
            "rates": [{"meterTypeId": types["Calls"], "model": "PER_UNIT", "unitPrice": 0.5}],
        },
    ).json()["id"]
    for account, anchor in (("a1", 1), ("a2", 15)):
        response = client.post(
            "/billing/v1/plan-assignments",
            {
                "accountId": account,
                "pricePlanId": plan,
                "effectiveFrom": "2024-06-01",
                "cycle": "MONTHLY",
                "anchorDay": anchor,
            },
        )
        assert response.status_code == 201, response.content
    for date, rate in (("2024-06-30", 0.9), ("2024-07-20", 0.8)):
        client.put(f"/billing/v1/exchange-rates/EUR/{date}", {"rate": rate})

    usage = [
        ("Calls", "c1", "2024-07-01T10:00", "3"),
        ("Calls", "c1", "2024-07-01T10:30", "2"),
        ("Calls", "c1", "2024-07-01T23:00", "5"),
        ("Calls", "c1", "2024-07-02T00:00", "7"),
        ("Calls", "c1", "2024-07-08T09:00", "1"),
        ("Calls", "c2", "2024-07-01T10:15", "4"),
        ("Calls", "c2", "2024-07-31T12:00", "6"),
        ("Calls", "c2", "2024-08-01T00:00", "100"),
        ("Seats", "c1", "2024-07-01T10:00", "5"),
        ("Seats", "c1", "2024-07-01T11:00", "9"),
        ("Seats", "c1", "2024-07-02T10:00", "3"),
        ("Seats", "c2", "2024-07-01T10:00", "7"),
        ("Temp", "c1", "2024-07-01T10:00", "4"),
        ("Temp", "c1", "2024-07-01T12:00", "-2"),
        ("Temp", "c2", "2024-07-02T10:00", "1"),
        ("Logins", "c1", "2024-07-01T10:00", "1"),
        ("Logins", "c1", "2024-07-01T10:00", "1"),
    ]
    # In two batches, as two stream batches would apply them.
    for half in (usage[::2], usage[1::2]):
        usage_apply(
            operator=acme.operator,
            updates=[
                UsageUpdate(types[name], None, "key", user, Decimal(value), at(when))
                for name, user, when, value in half
            ],
            now=at("2024-08-02T00:00"),
        )
    return types


def query(client, *queries, window=JULY, accept=None) -> list[dict]:
    extra = {"HTTP_ACCEPT": accept} if accept else {}
    response = client.post(
        "/metrics",
        {"startTime": window[0], "endTime": window[1], "metricQueries": list(queries)},
        **extra,
    )
    assert response.status_code == 200, response.content
    return response.json()["results"]


def series(result: dict) -> dict:
    """A result as {group value or None: values}, checking every series shares the
    timestamps."""
    stamps = {tuple(item["timestamps"]) for item in result["data"]}
    assert len(stamps) <= 1
    return {
        item.get("groupedBy", {}).get("fieldValue"): item["metricValues"] for item in result["data"]
    }


def calls_filter(data) -> dict:
    return {"fieldName": "USAGE_METER_ID", "fieldValues": ["Calls"]}


# -- USAGE -----------------------------------------------------------------------------------


def test_usage_per_day_adds_a_sum_type_and_zero_fills(client, data):
    (result,) = query(client, {"id": "q", "name": "USAGE", "filters": [calls_filter(data)]})
    assert result["id"] == "q" and result["name"] == "USAGE"
    assert result["data"][0]["timestamps"] == [day(n) for n in range(1, 32)]
    assert series(result) == {None: july({1: 14, 2: 7, 8: 1, 31: 6})}


def test_max_and_min_types_keep_the_extreme_across_hours_and_customers(client, data):
    seats, temp = query(
        client,
        {
            "id": "seats",
            "name": "USAGE",
            "filters": [{"fieldName": "USAGE_METER_ID", "fieldValues": ["Seats"]}],
        },
        {
            "id": "temp",
            "name": "USAGE",
            "filters": [{"fieldName": "USAGE_METER_ID", "fieldValues": [data["Temp"]]}],
        },
    )
    assert series(seats) == {None: july({1: 9, 2: 3})}
    assert series(temp) == {None: july({1: -2, 2: 1})}
    (weekly,) = query(
        client,
        {
            "id": "w",
            "name": "USAGE",
            "aggregationPeriod": "WEEK",
            "groupBy": "CUSTOMER_ID",
            "filters": [{"fieldName": "USAGE_METER_ID", "fieldValues": ["Seats"]}],
        },
    )
    # Weeks start on Monday: 07-01, 07-08, 07-15, 07-22, 07-29.
    assert weekly["data"][0]["timestamps"] == [day(n) for n in (1, 8, 15, 22, 29)]
    assert series(weekly) == {"c1": [9, 0, 0, 0, 0], "c2": [7, 0, 0, 0, 0]}


def test_usage_grouped_by_meter_type_names_them(client, data):
    (result,) = query(
        client,
        {
            "id": "q",
            "name": "METER_USAGE",
            "aggregationPeriod": "MONTH",
            "groupBy": "USAGE_METER_ID",
            "filters": [{"fieldName": "CUSTOMER_ID", "fieldValues": ["c1"]}],
        },
    )
    assert result["name"] == "METER_USAGE"
    assert result["data"][0]["timestamps"] == [day(1)]
    assert series(result) == {"Calls": [18], "Logins": [2], "Seats": [9], "Temp": [-2]}
    assert {item["groupedBy"]["fieldName"] for item in result["data"]} == {"USAGE_METER_ID"}


def test_a_series_over_several_types_adds_each_types_own_aggregate(client, data):
    one_customer, everyone = query(
        client,
        {
            "id": "c1",
            "name": "USAGE",
            "aggregationPeriod": "MONTH",
            "filters": [{"fieldName": "CUSTOMER_ID", "fieldValues": ["c1"]}],
        },
        {"id": "all", "name": "USAGE", "aggregationPeriod": "MONTH"},
    )
    assert series(one_customer) == {None: [18 + 9 - 2 + 2]}
    # Calls 28, Seats max 9, Temp min -2, Logins 2 (August's 100 is outside).
    assert series(everyone) == {None: [28 + 9 - 2 + 2]}


def test_the_per_type_and_per_customer_rollups_agree(client, data):
    results = query(
        client,
        *(
            {
                "id": f"{name}-{how}",
                "name": "USAGE",
                "filters": [{"fieldName": "USAGE_METER_ID", "fieldValues": [name]}]
                + ([{"fieldName": "CUSTOMER_ID", "fieldValues": ["c1", "c2"]}] if how else []),
            }
            for name in data
            for how in (0, 1)
        ),
    )
    by_id = {result["id"]: series(result)[None] for result in results}
    for name in data:
        assert by_id[f"{name}-0"] == by_id[f"{name}-1"], name


def test_hourly_buckets_and_a_window_inside_the_day(client, data):
    (result,) = query(
        client,
        {
            "id": "q",
            "name": "USAGE",
            "aggregationPeriod": "HOUR",
            "filters": [
                calls_filter(data),
                {"fieldName": "CUSTOMER_ID", "fieldValues": ["c1"]},
            ],
        },
        window=("2024-07-01T09:00:00Z", "2024-07-01T12:00:00Z"),
    )
    assert result["data"][0]["timestamps"] == [
        "2024-07-01T09:00:00.000Z",
        "2024-07-01T10:00:00.000Z",
        "2024-07-01T11:00:00.000Z",
    ]
    assert series(result) == {None: [0, 5, 0]}


def test_a_window_starting_mid_week_counts_from_its_start(client, data):
    (result,) = query(
        client,
        {"id": "q", "name": "USAGE", "aggregationPeriod": "WEEK", "filters": [calls_filter(data)]},
        window=("2024-07-02T00:00:00Z", "2024-07-09T00:00:00Z"),
    )
    # The week of Monday 07-01 holds only 07-02's 7 (07-01's 14 is before the window).
    assert result["data"][0]["timestamps"] == [day(1), day(8)]
    assert series(result) == {None: [7, 1]}


def test_filters_by_account_and_grouping_by_it(client, data):
    by_account, only_a2 = query(
        client,
        {
            "id": "g",
            "name": "USAGE",
            "aggregationPeriod": "MONTH",
            "groupBy": "ACCOUNT_ID",
            "filters": [calls_filter(data)],
        },
        {
            "id": "f",
            "name": "USAGE",
            "aggregationPeriod": "MONTH",
            "filters": [calls_filter(data), {"fieldName": "ACCOUNT_ID", "fieldValues": ["a2"]}],
        },
    )
    assert series(by_account) == {"a1": [18], "a2": [10]}
    assert series(only_a2) == {None: [10]}


def test_a_filtered_group_value_without_data_is_a_series_of_zeros(client, data):
    (result,) = query(
        client,
        {
            "id": "q",
            "name": "USAGE",
            "aggregationPeriod": "MONTH",
            "groupBy": "CUSTOMER_ID",
            "filters": [
                calls_filter(data),
                {"fieldName": "CUSTOMER_ID", "fieldValues": ["c2", "nobody"]},
            ],
        },
    )
    assert series(result) == {"c2": [10], "nobody": [0]}


# -- REVENUE ---------------------------------------------------------------------------------


def test_revenue_in_the_base_currency(client, data):
    per_day, per_account = query(
        client,
        {"id": "d", "name": "REVENUE"},
        {"id": "a", "name": "REVENUE", "aggregationPeriod": "MONTH", "groupBy": "ACCOUNT_ID"},
    )
    assert series(per_day) == {None: july({1: 7, 2: 3.5, 8: 0.5, 31: 3})}
    assert series(per_account) == {"a1": [9], "a2": [5]}


def test_revenue_in_the_invoice_currency_at_each_days_rate(client, data):
    (grouped,) = query(
        client,
        {
            "id": "a",
            "name": "REVENUE",
            "aggregationPeriod": "MONTH",
            "groupBy": "ACCOUNT_ID",
            "configs": {"CURRENCY": "INVOICE"},
        },
    )
    # a2: 2.00 on 07-01 at 0.9, 3.00 on 07-31 at 0.8.
    assert series(grouped) == {"a1": [9], "a2": [4.2]}


def test_invoice_revenue_never_adds_two_currencies(client, data):
    response = client.post(
        "/metrics",
        {
            "startTime": JULY[0],
            "endTime": JULY[1],
            "metricQueries": [{"id": "q", "name": "REVENUE", "configs": {"CURRENCY": "INVOICE"}}],
        },
    )
    body = assert_error_body(response, 400)
    assert body["details"][0]["field"] == "metricQueries[0].configs.CURRENCY"
    assert "EUR and USD" in body["message"]


def test_invoice_revenue_without_a_rate_is_a_clear_400(client, data):
    assert client.delete("/billing/v1/exchange-rates/EUR/2024-06-30").status_code == 200
    response = client.post(
        "/metrics",
        {
            "startTime": JULY[0],
            "endTime": JULY[1],
            "metricQueries": [
                {
                    "id": "q",
                    "name": "REVENUE",
                    "configs": {"CURRENCY": "INVOICE"},
                    "filters": [{"fieldName": "ACCOUNT_ID", "fieldValues": ["a2"]}],
                }
            ],
        },
    )
    body = assert_error_body(response, 400)
    assert "No exchange rate from USD to EUR on or before 2024-07-01" in body["message"]


# -- *_FOR_CYCLE -----------------------------------------------------------------------------


def test_cycle_metrics_by_cycle_start(client, data):
    usage, calls, revenue, invoiced = query(
        client,
        {"id": "u", "name": "USAGE_FOR_CYCLE"},
        {
            "id": "c",
            "name": "USAGE_FOR_CYCLE",
            "groupBy": "ACCOUNT_ID",
            "filters": [calls_filter(data)],
        },
        {"id": "r", "name": "REVENUE_FOR_CYCLE", "groupBy": "CUSTOMER_ID"},
        {
            "id": "i",
            "name": "REVENUE_FOR_CYCLE",
            "groupBy": "ACCOUNT_ID",
            "configs": {"CURRENCY": "INVOICE"},
        },
    )
    # Cycles starting in July: a1's of 07-01, a2's of 07-15 (its 06-15 one starts before).
    for result in (usage, calls, revenue, invoiced):
        assert result["data"][0]["timestamps"] == [day(1), day(15)]
    # a1: Calls 18, Seats 9, Temp -2, Logins 2; a2: Calls 6 + 100.
    assert series(usage) == {None: [27, 106]}
    assert series(calls) == {"a1": [18, 0], "a2": [0, 106]}
    assert series(revenue) == {"c1": [9, 0], "c2": [0, 53]}
    # a2's cycle at the rate of its start day, 07-15: 0.9.
    assert series(invoiced) == {"a1": [9, 0], "a2": [0, 47.7]}


# -- EVENTS ----------------------------------------------------------------------------------


# Records are taken from the last 35 days only: the events happen on three days of
# last week.
EVENT_DAY = (datetime.now(UTC) - timedelta(days=7)).replace(
    hour=0, minute=0, second=0, microsecond=0
)


def event_time(days: int, hour: int) -> str:
    return (EVENT_DAY + timedelta(days=days, hours=hour)).isoformat().replace("+00:00", "Z")


def event_day(days: int) -> str:
    return event_time(days, 0).replace("Z", ".000Z")


FIRST_DAYS = (event_time(0, 0), event_time(3, 0))


@pytest.fixture
def events(client):
    """Five records in every status: r1, r2 PROCESSED, r3 FAILED, r4 UNPROCESSED, r5
    IN_PROGRESS."""
    collector = create_collector(client)["id"]

    def record(record_id, kind, customer, account, when):
        body = {"id": record_id, "type": kind, "customerId": customer, "timestamp": when}
        return {**body, "accountId": account} if account else body

    ingest(
        client,
        collector,
        [
            record("r1", "call", "c1", "a1", event_time(0, 10)),
            record("r2", "call", "c1", "a1", event_time(0, 11)),
            record("r3", "seat", "c2", "a2", event_time(1, 10)),
        ],
    )
    claim = records_claim(collector_id=collector)
    failed = next(r.id for r in claim.records if r.record_id == "r3")
    claim_finish(claim=claim, failures={failed: "bad seat"})
    ingest(client, collector, [record("r5", "seat", "c1", None, event_time(2, 10))])
    records_claim(collector_id=collector)
    ingest(client, collector, [record("r4", "call", "c2", "a2", event_time(1, 12))])
    return collector


ALL_STATUSES = {
    "fieldName": "EVENT_STATUS",
    "fieldValues": ["PROCESSED", "UNPROCESSED", "IN_PROGRESS", "FAILED"],
}


@pytest.mark.parametrize("folded", [False, True], ids=["pending-deltas", "folded"])
def test_events_by_status_schema_and_account(client, events, folded):
    if folded:
        rollups_fold()
        # Statuses moved on leave no empty buckets to read.
        for model in (CustomerEventRollup, EventRollup):
            assert model.objects.exists() and not model.objects.filter(count=0).exists()
    default, by_status, one_customer, by_account, seats, by_schema = query(
        client,
        {"id": "default"},
        {"id": "status", "groupBy": "EVENT_STATUS", "filters": [ALL_STATUSES]},
        {
            "id": "c1",
            "name": "EVENTS",
            "groupBy": "EVENT_STATUS",
            "filters": [{"fieldName": "CUSTOMER_ID", "fieldValues": ["c1"]}],
        },
        {"id": "account", "groupBy": "ACCOUNT_ID", "filters": [ALL_STATUSES]},
        {
            "id": "seat",
            "filters": [ALL_STATUSES, {"fieldName": "SCHEMA_NAME", "fieldValues": ["seat"]}],
        },
        {"id": "schema", "groupBy": "SCHEMA_NAME"},
        window=FIRST_DAYS,
    )
    assert default["name"] == "EVENTS"
    assert default["data"][0]["timestamps"] == [event_day(0), event_day(1), event_day(2)]
    # The default statuses: PROCESSED and UNPROCESSED.
    assert series(default) == {None: [2, 1, 0]}
    assert series(by_status) == {
        "PROCESSED": [2, 0, 0],
        "UNPROCESSED": [0, 1, 0],
        "FAILED": [0, 1, 0],
        "IN_PROGRESS": [0, 0, 1],
    }
    assert series(one_customer) == {"PROCESSED": [2, 0, 0], "UNPROCESSED": [0, 0, 0]}
    assert series(by_account) == {"a1": [2, 0, 0], "a2": [0, 2, 0], "": [0, 0, 1]}
    assert series(seats) == {None: [0, 1, 1]}
    assert series(by_schema) == {"call": [2, 1, 0]}


def test_events_per_hour(client, events):
    (result,) = query(
        client,
        {"id": "h", "aggregationPeriod": "HOUR"},
        window=(event_time(0, 9), event_time(0, 12)),
    )
    assert series(result) == {None: [0, 1, 1]}


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_gives_the_same_numbers(client, data):
    body = {
        "id": "q",
        "name": "USAGE",
        "aggregationPeriod": "MONTH",
        "groupBy": "CUSTOMER_ID",
        "filters": [calls_filter(data)],
    }
    response = client.post(
        "/metrics",
        {"startTime": JULY[0], "endTime": JULY[1], "metricQueries": [body]},
        HTTP_ACCEPT="text/csv",
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(row["groupByValue"], row["timestamp"], row["value"]) for row in rows] == [
        ("c1", day(1), "18"),
        ("c2", day(1), "10"),
    ]
    assert {row["groupByField"] for row in rows} == {"CUSTOMER_ID"}


def test_buckets_are_utc_whatever_the_meter_types_time_zone(client, acme):
    """Berlin's clocks went forward on 2024-03-31 at 01:00 UTC: the buckets do not."""
    berlin = meter_type_create(
        operator=acme.operator,
        name="Berlin",
        unit="units",
        category="Berlin",
        aggregation="Sum",
        timezone="Europe/Berlin",
        reset_cron="0 0 1 * *",
        active_from=None,
    )
    usage_apply(
        operator=acme.operator,
        updates=[
            UsageUpdate(berlin.pk, None, "key", "c1", Decimal(value), at(when))
            for when, value in (
                ("2024-03-30T23:30", "1"),  # 00:30 in Berlin, on the 31st
                ("2024-03-31T00:30", "2"),
                ("2024-03-31T01:30", "4"),  # 03:30 in Berlin: 02:00-03:00 never was
                ("2024-03-31T22:30", "8"),  # 00:30 on April 1st in Berlin
            )
        ],
        now=at("2024-04-02T00:00"),
    )
    daily, hourly = query(
        client,
        {"id": "d", "name": "USAGE"},
        {"id": "h", "name": "USAGE", "aggregationPeriod": "HOUR"},
        window=("2024-03-30T23:00:00Z", "2024-03-31T03:00:00Z"),
    )
    assert daily["data"][0]["timestamps"] == [
        "2024-03-30T00:00:00.000Z",
        "2024-03-31T00:00:00.000Z",
    ]
    assert series(daily) == {None: [1, 6]}
    assert hourly["data"][0]["timestamps"] == [
        f"2024-03-3{day}T{hour:02d}:00:00.000Z" for day, hour in ((0, 23), (1, 0), (1, 1), (1, 2))
    ]
    assert series(hourly) == {None: [1, 2, 4, 0]}
    (whole_day,) = query(
        client,
        {"id": "d", "name": "USAGE"},
        window=("2024-03-31T00:00:00Z", "2024-04-01T00:00:00Z"),
    )
    assert series(whole_day) == {None: [14]}
