"""`POST /metrics` counts the caller's operator only.

acme and globex have the same customers and billing accounts (external ids `cust-1` /
`acc-1`, `cust-2` / `acc-2`), meter types of the same names, the same plan name, both
with cycles, usage and events; globex also has `cust-g` / `acc-g`. Globex's numbers are
much larger, so any of them reaching acme's answer shows.

    usage (2024-03)       acme                         globex
    cust-1 / acc-1        Prints 3 (10th 10:20)         Prints 300 (10th 10:40)
                          Scans 1 (10th 11:05)          Scans 100 (10th 11:30)
    cust-2 / acc-2        Prints 5 (11th 09:00)         Prints 500 (11th 09:30)
    cust-g / acc-g        -                             Prints 7000 (10th 12:00)

    prices per unit       Prints 0.5, Scans 2           Prints 10, Scans 100
    invoice currency      EUR, 0.9 from 2024-01-01      GBP, 2 from 2024-01-01
    cycles                acc-1 monthly on the 1st, acc-2 monthly on the 15th (both from
                          2024-01-01; acc-g like acc-1): usage of the 10th is in acc-1's
                          cycle of 03-01, of the 11th in acc-2's cycle of 02-15

    events (3 hours ago)  acme                         globex
    cust-1 / acc-1        2 "print", PROCESSED          10 "print", PROCESSED
    cust-2 / acc-2        1 "scan", UNPROCESSED         20 "scan", UNPROCESSED
    cust-g / acc-g        -                             40 "print", PROCESSED

So acme's revenue is acc-1 3 x 0.5 + 1 x 2 = 3.5 on the 10th and acc-2 5 x 0.5 = 2.5 on
the 11th; in EUR 3.15 and 2.25.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.utils import timezone

from collection.services import claim_finish, records_claim, rollups_fold
from metering.tasks import reprice_pending
from metering.usage import UsageUpdate, usage_apply
from tests.conftest import Tenant, assert_error_body
from tests.streams.runtime.helpers import create_collector, create_meter_type, ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

METRICS_URL = "/metrics"
BILLING = "/billing/v1"


def meter_type_body(name: str) -> dict:
    return {
        "name": name,
        "unit": "units",
        "category": name,
        "aggregation": {"type": "sum"},
        "resetSchedule": {"day": "1", "hour": "0", "minute": "0", "month": "*", "weekday": "*"},
        "timezone": "Etc/UTC",
        "activeFrom": None,  # active always: the usage below is from the past
    }


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Side:
    """One operator's part of the scene: its API client and meter type ids by name."""

    tenant: Tenant
    client: object
    types: dict[str, str]


def _side(tenant: Tenant, api_client) -> Side:
    client = api_client(tenant.token)
    types = {
        name: create_meter_type(client, meter_type_body(name))["id"] for name in ("Prints", "Scans")
    }
    return Side(tenant, client, types)


@pytest.fixture
def acme_side(acme, api_client) -> Side:
    return _side(acme, api_client)


@pytest.fixture
def globex_side(globex, api_client) -> Side:
    return _side(globex, api_client)


def _created(response) -> dict:
    assert response.status_code in (200, 201), response.content
    return response.json()


def _billing(
    side: Side, accounts: dict[str, str], prices: dict[str, float], currency: str, rate: float
) -> None:
    """Accounts (id -> customer), all invoiced in `currency` at `rate` from 2024-01-01;
    one plan pricing each type per unit; acc-2 cycles on the 15th, the others on the 1st."""
    client = side.client
    for account_id, customer_id in accounts.items():
        body = {"accountId": account_id, "customerId": customer_id, "invoiceCurrency": currency}
        _created(client.post(f"{BILLING}/accounts", body))
    rates = [
        {"meterTypeId": side.types[name], "model": "PER_UNIT", "unitPrice": price}
        for name, price in prices.items()
    ]
    plan = _created(client.post(f"{BILLING}/price-plans", {"name": "Standard", "rates": rates}))
    for account_id in accounts:
        body = {
            "accountId": account_id,
            "pricePlanId": plan["id"],
            "effectiveFrom": "2024-01-01",
            "cycle": "MONTHLY",
            "anchorDay": 15 if account_id == "acc-2" else 1,
        }
        _created(client.post(f"{BILLING}/plan-assignments", body))
    _created(client.put(f"{BILLING}/exchange-rates/{currency}/2024-01-01", {"rate": rate}))


def _usage(side: Side, rows: list[tuple[str, str | None, str, int, str]]) -> None:
    """Rows of (customer, account, meter type name, value, event time), applied by the
    metering service the stream meter node calls."""
    updates = [
        UsageUpdate(
            uuid.UUID(side.types[type_name]),
            None,
            "key",
            customer,
            Decimal(value),
            at(moment),
            account_id=account,
        )
        for customer, account, type_name, value, moment in rows
    ]
    result = usage_apply(operator=side.tenant.operator, updates=updates)
    assert result.applied == len(rows)


def _record(index: int, customer: str, account: str, type_: str, moment) -> dict:
    return {
        "id": f"{customer}-{type_}-{index}",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "type": type_,
        "customerId": customer,
        "accountId": account,
    }


def _events(side: Side, processed: list[tuple], unprocessed: list[tuple], moment) -> None:
    """Ingest (count, customer, account, type) groups; the `processed` ones are claimed
    and finished as a worker does, the others stay UNPROCESSED."""
    collector = create_collector(side.client)["id"]
    first = [
        _record(index, customer, account, type_, moment)
        for count, customer, account, type_ in processed
        for index in range(count)
    ]
    ingest(side.client, collector, first)
    claim = records_claim(collector_id=collector, limit=len(first))
    assert len(claim.records) == len(first)
    claim_finish(claim=claim, failures={})
    later = [
        _record(index, customer, account, type_, moment)
        for count, customer, account, type_ in unprocessed
        for index in range(count)
    ]
    ingest(side.client, collector, later)


@pytest.fixture
def moment() -> datetime.datetime:
    """When the events happened: recent, as ingestion only takes recent records."""
    return (timezone.now() - datetime.timedelta(hours=3)).replace(
        minute=20, second=0, microsecond=0
    )


@pytest.fixture
def world(acme_side, globex_side, moment) -> tuple[Side, Side]:
    _billing(
        acme_side, {"acc-1": "cust-1", "acc-2": "cust-2"}, {"Prints": 0.5, "Scans": 2}, "EUR", 0.9
    )
    _billing(
        globex_side,
        {"acc-1": "cust-1", "acc-2": "cust-2", "acc-g": "cust-g"},
        {"Prints": 10, "Scans": 100},
        "GBP",
        2,
    )
    _usage(
        acme_side,
        [
            ("cust-1", "acc-1", "Prints", 3, "2024-03-10T10:20:00"),
            ("cust-1", "acc-1", "Scans", 1, "2024-03-10T11:05:00"),
            ("cust-2", "acc-2", "Prints", 5, "2024-03-11T09:00:00"),
        ],
    )
    _usage(
        globex_side,
        [
            ("cust-1", "acc-1", "Prints", 300, "2024-03-10T10:40:00"),
            ("cust-1", "acc-1", "Scans", 100, "2024-03-10T11:30:00"),
            ("cust-2", "acc-2", "Prints", 500, "2024-03-11T09:30:00"),
            ("cust-g", "acc-g", "Prints", 7000, "2024-03-10T12:00:00"),
        ],
    )
    _events(
        acme_side,
        processed=[(2, "cust-1", "acc-1", "print")],
        unprocessed=[(1, "cust-2", "acc-2", "scan")],
        moment=moment,
    )
    _events(
        globex_side,
        processed=[(10, "cust-1", "acc-1", "print"), (40, "cust-g", "acc-g", "print")],
        unprocessed=[(20, "cust-2", "acc-2", "scan")],
        moment=moment,
    )
    return acme_side, globex_side


# -- Asking and reading ------------------------------------------------------------------


def ask(client, window: tuple[str, str], queries: list[dict]) -> dict[str, dict]:
    response = client.post(
        METRICS_URL, {"startTime": window[0], "endTime": window[1], "metricQueries": queries}
    )
    assert response.status_code == 200, response.content
    return {result["id"]: result for result in response.json()["results"]}


def series(result: dict) -> dict[str | None, list[Decimal]]:
    """A result's series by group value (None ungrouped); each group once, every series
    on the result's timestamps."""
    found: dict[str | None, list[Decimal]] = {}
    for data in result["data"]:
        label = (data.get("groupedBy") or {}).get("fieldValue")
        assert label not in found, f"{label!r} appears twice in {result}"
        found[label] = [Decimal(str(value)) for value in data["metricValues"]]
    return found


def numbers(*values) -> list[Decimal]:
    return [Decimal(str(value)) for value in values]


def flt(field: str, *values: str) -> dict:
    return {"fieldName": field, "fieldValues": list(values)}


# Each metric's window and buckets.
USAGE_WINDOW = ("2024-03-10T00:00:00Z", "2024-03-12T00:00:00Z")  # DAY: the 10th, the 11th
USAGE_DAYS = ["2024-03-10T00:00:00.000Z", "2024-03-11T00:00:00.000Z"]
CYCLE_WINDOW = ("2024-02-01T00:00:00Z", "2024-04-01T00:00:00Z")
CYCLE_STARTS = ["2024-02-15T00:00:00.000Z", "2024-03-01T00:00:00.000Z"]  # acc-2's, acc-1's

# metric -> {query id: (query, {group: values})}: acme's numbers, on the metric's
# timestamps (`WINDOWS`) unless a third item names others. Cycle metrics answer only the
# cycle starts that hold data: a filter that leaves acc-1's cycle leaves one.
ACME = {
    "USAGE": {
        "all": ({}, {None: numbers(4, 5)}),
        "by-type": (
            {"groupBy": "USAGE_METER_ID"},
            {"Prints": numbers(3, 5), "Scans": numbers(1, 0)},
        ),
        "by-customer": (
            {"groupBy": "CUSTOMER_ID"},
            {"cust-1": numbers(4, 0), "cust-2": numbers(0, 5)},
        ),
        "by-account": ({"groupBy": "ACCOUNT_ID"}, {"acc-1": numbers(4, 0), "acc-2": numbers(0, 5)}),
        "shared-customer": ({"filters": [flt("CUSTOMER_ID", "cust-1")]}, {None: numbers(4, 0)}),
        "shared-account": ({"filters": [flt("ACCOUNT_ID", "acc-2")]}, {None: numbers(0, 5)}),
        "type-by-name": ({"filters": [flt("USAGE_METER_ID", "Prints")]}, {None: numbers(3, 5)}),
    },
    "REVENUE": {
        "all": ({}, {None: numbers(3.5, 2.5)}),
        "by-type": (
            {"groupBy": "USAGE_METER_ID"},
            {"Prints": numbers(1.5, 2.5), "Scans": numbers(2, 0)},
        ),
        "by-customer": (
            {"groupBy": "CUSTOMER_ID"},
            {"cust-1": numbers(3.5, 0), "cust-2": numbers(0, 2.5)},
        ),
        "by-account": (
            {"groupBy": "ACCOUNT_ID"},
            {"acc-1": numbers(3.5, 0), "acc-2": numbers(0, 2.5)},
        ),
        "invoice": ({"configs": {"CURRENCY": "INVOICE"}}, {None: numbers(3.15, 2.25)}),
        "invoice-by-account": (
            {"groupBy": "ACCOUNT_ID", "configs": {"CURRENCY": "INVOICE"}},
            {"acc-1": numbers(3.15, 0), "acc-2": numbers(0, 2.25)},
        ),
        "shared-customer": ({"filters": [flt("CUSTOMER_ID", "cust-1")]}, {None: numbers(3.5, 0)}),
        "type-by-name": ({"filters": [flt("USAGE_METER_ID", "Scans")]}, {None: numbers(2, 0)}),
    },
    "USAGE_FOR_CYCLE": {
        "all": ({}, {None: numbers(5, 4)}),
        "by-type": (
            {"groupBy": "USAGE_METER_ID"},
            {"Prints": numbers(5, 3), "Scans": numbers(0, 1)},
        ),
        "by-customer": (
            {"groupBy": "CUSTOMER_ID"},
            {"cust-1": numbers(0, 4), "cust-2": numbers(5, 0)},
        ),
        "by-account": ({"groupBy": "ACCOUNT_ID"}, {"acc-1": numbers(0, 4), "acc-2": numbers(5, 0)}),
        "shared-customer": (
            {"filters": [flt("CUSTOMER_ID", "cust-1")]},
            {None: numbers(4)},
            CYCLE_STARTS[1:],
        ),
        "type-by-name": ({"filters": [flt("USAGE_METER_ID", "Prints")]}, {None: numbers(5, 3)}),
    },
    "REVENUE_FOR_CYCLE": {
        "all": ({}, {None: numbers(2.5, 3.5)}),
        "by-type": (
            {"groupBy": "USAGE_METER_ID"},
            {"Prints": numbers(2.5, 1.5), "Scans": numbers(0, 2)},
        ),
        "by-customer": (
            {"groupBy": "CUSTOMER_ID"},
            {"cust-1": numbers(0, 3.5), "cust-2": numbers(2.5, 0)},
        ),
        "by-account": (
            {"groupBy": "ACCOUNT_ID"},
            {"acc-1": numbers(0, 3.5), "acc-2": numbers(2.5, 0)},
        ),
        "invoice": ({"configs": {"CURRENCY": "INVOICE"}}, {None: numbers(2.25, 3.15)}),
        "shared-account": (
            {"filters": [flt("ACCOUNT_ID", "acc-1")]},
            {None: numbers(3.5)},
            CYCLE_STARTS[1:],
        ),
        "type-by-name": (
            {"filters": [flt("USAGE_METER_ID", "Scans")]},
            {None: numbers(2)},
            CYCLE_STARTS[1:],
        ),
    },
}
WINDOWS = {
    "USAGE": (USAGE_WINDOW, USAGE_DAYS),
    "REVENUE": (USAGE_WINDOW, USAGE_DAYS),
    "USAGE_FOR_CYCLE": (CYCLE_WINDOW, CYCLE_STARTS),
    "REVENUE_FOR_CYCLE": (CYCLE_WINDOW, CYCLE_STARTS),
}
# What globex sees ungrouped (so the scene's globex data is really there).
GLOBEX_ALL = {
    "USAGE": numbers(7400, 500),
    "REVENUE": numbers(83000, 5000),
    "USAGE_FOR_CYCLE": numbers(500, 7400),
    "REVENUE_FOR_CYCLE": numbers(5000, 83000),
}


@pytest.mark.parametrize("reprice", [False, True], ids=["as-applied", "repriced"])
@pytest.mark.parametrize("metric", list(ACME))
def test_usage_and_revenue_metrics_count_the_callers_data_only(world, metric, reprice):
    acme_side, globex_side = world
    if reprice:  # Beat prices every marked account again, both operators' at once
        assert reprice_pending() == 5
    window, timestamps = WINDOWS[metric]
    expected = ACME[metric]
    queries = [{"id": key, "name": metric, **body} for key, (body, *_) in expected.items()]
    results = ask(acme_side.client, window, queries)
    for key, (_, values, *own_timestamps) in expected.items():
        result = results[key]
        assert result["name"] == metric
        assert series(result) == values, key
        wanted = own_timestamps[0] if own_timestamps else timestamps
        assert all(data["timestamps"] == wanted for data in result["data"]), (key, result)

    theirs = ask(globex_side.client, window, [{"id": "all", "name": metric}])
    assert series(theirs["all"]) == {None: GLOBEX_ALL[metric]}


def test_meter_usage_counts_the_callers_data_only(world):
    acme_side, _ = world
    results = ask(
        acme_side.client,
        USAGE_WINDOW,
        [
            {"id": "all", "name": "METER_USAGE"},
            {"id": "by-type", "name": "METER_USAGE", "groupBy": "USAGE_METER_ID"},
        ],
    )
    assert series(results["all"]) == {None: numbers(4, 5)}
    assert series(results["by-type"]) == {"Prints": numbers(3, 5), "Scans": numbers(1, 0)}


# -- EVENTS --------------------------------------------------------------------------------


@pytest.mark.parametrize("fold", [False, True], ids=["pending-deltas", "folded"])
def test_events_count_the_callers_records_only(world, moment, fold):
    if fold:
        assert rollups_fold() > 0
    acme_side, globex_side = world
    day = moment.replace(hour=0, minute=0)
    window = (stamp(day), stamp(day + datetime.timedelta(days=1)))
    queries = [
        {"id": "all"},
        {"id": "by-account", "groupBy": "ACCOUNT_ID"},
        {"id": "by-status", "groupBy": "EVENT_STATUS"},
        {"id": "by-schema", "groupBy": "SCHEMA_NAME"},
        {"id": "shared-customer", "filters": [flt("CUSTOMER_ID", "cust-1")]},
        {"id": "shared-account", "filters": [flt("ACCOUNT_ID", "acc-2")]},
        {"id": "schema", "filters": [flt("SCHEMA_NAME", "print")]},
        {"id": "processed", "filters": [flt("EVENT_STATUS", "PROCESSED")]},
        {
            "id": "schema-by-account",
            "groupBy": "ACCOUNT_ID",
            "filters": [flt("SCHEMA_NAME", "print")],
        },
    ]
    results = ask(acme_side.client, window, queries)
    assert series(results["all"]) == {None: numbers(3)}
    assert series(results["by-account"]) == {"acc-1": numbers(2), "acc-2": numbers(1)}
    assert series(results["by-status"]) == {"PROCESSED": numbers(2), "UNPROCESSED": numbers(1)}
    assert series(results["by-schema"]) == {"print": numbers(2), "scan": numbers(1)}
    assert series(results["shared-customer"]) == {None: numbers(2)}
    assert series(results["shared-account"]) == {None: numbers(1)}
    assert series(results["schema"]) == {None: numbers(2)}
    assert series(results["processed"]) == {None: numbers(2)}
    assert series(results["schema-by-account"]) == {"acc-1": numbers(2)}

    theirs = ask(
        globex_side.client, window, [{"id": "all"}, {"id": "by-account", "groupBy": "ACCOUNT_ID"}]
    )
    assert series(theirs["all"]) == {None: numbers(70)}
    assert series(theirs["by-account"]) == {
        "acc-1": numbers(10),
        "acc-2": numbers(20),
        "acc-g": numbers(40),
    }


# -- Another operator's ids ------------------------------------------------------------------

USAGE_METRICS = ["USAGE", "METER_USAGE", "REVENUE", "USAGE_FOR_CYCLE", "REVENUE_FOR_CYCLE"]


@pytest.mark.parametrize("metric", USAGE_METRICS)
def test_another_operators_meter_type_is_an_unknown_meter_type(acme_side, globex_side, metric):
    theirs = globex_side.types["Prints"]
    response = acme_side.client.post(
        METRICS_URL,
        {
            "startTime": USAGE_WINDOW[0],
            "endTime": USAGE_WINDOW[1],
            "metricQueries": [
                {
                    "id": "q",
                    "name": metric,
                    "filters": [flt("USAGE_METER_ID", acme_side.types["Scans"], theirs)],
                }
            ],
        },
    )
    body = assert_error_body(response, 400)
    assert [detail["field"] for detail in body["details"]] == [
        "metricQueries[0].filters[0].fieldValues"
    ]
    assert theirs in body["details"][0]["message"]


@pytest.mark.parametrize("metric", ["EVENTS", *USAGE_METRICS])
def test_ids_only_another_operator_has_find_nothing(world, moment, metric):
    acme_side, _ = world
    if metric == "EVENTS":
        day = moment.replace(hour=0, minute=0)
        window, width = (stamp(day), stamp(day + datetime.timedelta(days=1))), 1
    else:
        window, width = WINDOWS[metric.replace("METER_", "")][0], 2
    queries = [
        {"id": "customer", "filters": [flt("CUSTOMER_ID", "cust-g")]},
        {"id": "account", "filters": [flt("ACCOUNT_ID", "acc-g")]},
        {"id": "both", "filters": [flt("ACCOUNT_ID", "acc-g"), flt("CUSTOMER_ID", "cust-1")]},
        {"id": "by-account", "groupBy": "ACCOUNT_ID", "filters": [flt("ACCOUNT_ID", "acc-g")]},
    ]
    if metric != "EVENTS":
        queries.append(
            {
                "id": "by-customer",
                "groupBy": "CUSTOMER_ID",
                "filters": [flt("CUSTOMER_ID", "cust-g")],
            }
        )
    # The cycle metrics answer no cycle at all; the others a zero in every bucket.
    nothing = [] if metric.endswith("_FOR_CYCLE") else [Decimal(0)] * width
    results = ask(acme_side.client, window, [{**q, "name": metric} for q in queries])
    assert series(results["customer"]) == {None: nothing}
    assert series(results["account"]) == {None: nothing}
    assert series(results["both"]) == {None: nothing}
    assert series(results["by-account"]) == {"acc-g": nothing}
    if metric != "EVENTS":
        assert series(results["by-customer"]) == {"cust-g": nothing}


# -- Billing added after the usage -----------------------------------------------------------


def test_an_account_added_later_takes_its_own_operators_usage_only(acme_side, globex_side):
    """Both have usage of `cust-3` without an account; then globex gives `cust-3` the
    account `acc-3` with a plan, and Beat prices the account's usage again. Globex's
    usage becomes acc-3's and earns 4 x 10; acme's stays without an account, unpriced."""
    _usage(acme_side, [("cust-3", None, "Prints", 2, "2024-03-10T13:00:00")])
    _usage(globex_side, [("cust-3", None, "Prints", 4, "2024-03-10T13:30:00")])
    _billing(globex_side, {"acc-3": "cust-3"}, {"Prints": 10}, "GBP", 2)
    assert reprice_pending() == 1

    queries = [
        {"id": "usage", "name": "USAGE", "filters": [flt("ACCOUNT_ID", "acc-3")]},
        {"id": "by-customer", "name": "USAGE", "groupBy": "CUSTOMER_ID"},
        {"id": "revenue", "name": "REVENUE"},
        {"id": "revenue-by-type", "name": "REVENUE", "groupBy": "USAGE_METER_ID"},
        {"id": "cycle", "name": "USAGE_FOR_CYCLE"},
    ]
    theirs = ask(globex_side.client, USAGE_WINDOW, queries)
    assert series(theirs["usage"]) == {None: numbers(4, 0)}
    assert series(theirs["revenue"]) == {None: numbers(40, 0)}
    assert series(theirs["revenue-by-type"]) == {"Prints": numbers(40, 0)}

    ours = ask(acme_side.client, USAGE_WINDOW, queries)
    assert series(ours["usage"]) == {None: numbers(0, 0)}
    assert series(ours["by-customer"]) == {"cust-3": numbers(2, 0)}
    assert series(ours["revenue"]) == {None: numbers(0, 0)}
    assert series(ours["revenue-by-type"]) == {"Prints": numbers(0, 0)}
    assert series(ours["cycle"]) == {None: []}
