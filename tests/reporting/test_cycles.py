"""Pricing cycles and revenue through the API: the reference's storage and querying
example reproduced exactly, and graduated tiers crossed within a cycle, in the base and
the invoice currency, to the cent.

Plans, accounts, assignments and rates are set through `/billing/v1/…`; usage is applied
by the metering service the stream meter node calls (with event times years back, which
ingestion would refuse as too old)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from metering.models import CycleRollup, UsageRollup
from metering.services import meter_type_create
from metering.usage import UsageUpdate, usage_apply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def midnight(date: str) -> str:
    return f"{date}T00:00:00.000Z"


@pytest.fixture
def calls(acme):
    return meter_type_create(
        operator=acme.operator,
        name="Calls",
        unit="calls",
        aggregation="Sum",
        timezone="Etc/UTC",
        reset_cron="0 0 1 * *",
        active_from=None,
    )


def post(client, path: str, body: dict) -> dict:
    response = client.post(path, body)
    assert response.status_code == 201, response.content
    return response.json()


def price_plan(client, name: str, meter_type, **rate) -> str:
    body = {"name": name, "rates": [{"meterTypeId": str(meter_type.pk), **rate}]}
    return post(client, "/billing/v1/price-plans", body)["id"]


def apply(operator, meter_type, *usage, account=None, now="2026-01-01T00:00"):
    usage_apply(
        operator=operator,
        updates=[
            UsageUpdate(
                meter_type.pk, None, "key", "cust-1", Decimal(value), at(when), account_id=account
            )
            for when, value in usage
        ],
        now=at(now),
    )


def metric(client, start: str, end: str, **query) -> dict:
    response = client.post(
        "/metrics",
        {"startTime": start, "endTime": end, "metricQueries": [{"id": "q", **query}]},
    )
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    (data,) = result["data"]
    return dict(zip(data["timestamps"], data["metricValues"], strict=True))


# -- The reference's example --------------------------------------------------------------


@pytest.fixture
def reference_example(client, acme, calls):
    """Monthly on the 5th, then from 2020-03-15 a monthly plan invoicing on the 1st;
    usage per cycle as the reference's second table (each unit priced 1, so revenue
    equals usage), some of it on the cycles' first and last hours."""
    post(
        client,
        "/billing/v1/accounts",
        {"accountId": "acc-1", "customerId": "cust-1", "invoiceCurrency": "USD"},
    )
    first = price_plan(client, "On the 5th", calls, model="PER_UNIT", unitPrice=1)
    second = price_plan(client, "On the 1st", calls, model="PER_UNIT", unitPrice=1)
    for plan, since, anchor in ((first, "2020-01-05", 5), (second, "2020-03-15", 1)):
        post(
            client,
            "/billing/v1/plan-assignments",
            {
                "accountId": "acc-1",
                "pricePlanId": plan,
                "effectiveFrom": since,
                "cycle": "MONTHLY",
                "anchorDay": anchor,
            },
        )
    apply(
        acme.operator,
        calls,
        ("2020-01-05T00:00", "400"),
        ("2020-02-04T23:00", "600"),
        ("2020-02-05T00:00", "1200"),
        ("2020-03-05T00:00", "1000"),
        ("2020-03-14T23:00", "250"),
        ("2020-03-15T00:00", "600"),
        ("2020-04-01T00:00", "1300"),
        ("2020-05-31T23:00", "1300"),
    )


def test_cycles_are_stored_as_the_reference_stores_them(client, reference_example):
    stored = {
        str(row.cycle_start): (str(row.cycle_end), row.usage)
        for row in CycleRollup.objects.order_by("cycle_start")
    }
    assert stored == {
        "2020-01-05": ("2020-02-05", 1000),
        "2020-02-05": ("2020-03-05", 1200),
        "2020-03-05": ("2020-03-15", 1250),
        "2020-03-15": ("2020-04-01", 600),
        "2020-04-01": ("2020-05-01", 1300),
        "2020-05-01": ("2020-06-01", 1300),
    }
    for name in ("USAGE_FOR_CYCLE", "REVENUE_FOR_CYCLE"):
        assert metric(client, "2020-01-01T00:00:00Z", "2020-07-01T00:00:00Z", name=name) == {
            midnight("2020-01-05"): 1000,
            midnight("2020-02-05"): 1200,
            midnight("2020-03-05"): 1250,
            midnight("2020-03-15"): 600,
            midnight("2020-04-01"): 1300,
            midnight("2020-05-01"): 1300,
        }


@pytest.mark.parametrize("name", ["USAGE_FOR_CYCLE", "REVENUE_FOR_CYCLE"])
def test_the_references_query_returns_the_cycles_starting_in_the_window(
    client, reference_example, name
):
    # Neither a cycle starting 2020-02-15 nor the one starting on endTime.
    assert metric(client, "2020-02-15T00:00:00Z", "2020-04-01T00:00:00Z", name=name) == {
        midnight("2020-03-05"): 1250,
        midnight("2020-03-15"): 600,
    }


def test_a_window_ending_just_after_a_cycle_start_takes_it(client, reference_example):
    assert metric(
        client, "2020-03-15T00:00:00Z", "2020-03-15T01:00:00Z", name="USAGE_FOR_CYCLE"
    ) == {midnight("2020-03-15"): 600}
    assert (
        metric(client, "2020-03-15T01:00:00Z", "2020-04-01T00:00:00Z", name="USAGE_FOR_CYCLE") == {}
    )


# -- Graduated tiers and the invoice currency ---------------------------------------------

TIERS = [{"upTo": 1000, "unitPrice": 0.10}, {"upTo": None, "unitPrice": 0.08}]
JULY = ("2024-07-01T00:00:00Z", "2024-08-01T00:00:00Z")


@pytest.fixture
def graduated(client, calls):
    """acc-1 invoiced in EUR monthly on the 1st, under graduated tiers."""
    post(
        client,
        "/billing/v1/accounts",
        {"accountId": "acc-1", "customerId": "cust-1", "invoiceCurrency": "EUR"},
    )
    plan = price_plan(client, "Tiers", calls, model="GRADUATED", tiers=TIERS)
    post(
        client,
        "/billing/v1/plan-assignments",
        {
            "accountId": "acc-1",
            "pricePlanId": plan,
            "effectiveFrom": "2024-06-01",
            "cycle": "MONTHLY",
            "anchorDay": 1,
        },
    )
    for date, rate in (("2024-07-01", 0.9137), ("2024-07-08", 0.8765)):
        assert (
            client.put(f"/billing/v1/exchange-rates/EUR/{date}", {"rate": rate}).status_code == 201
        )


@pytest.mark.parametrize("batches", [1, 2], ids=["one-batch", "two-batches"])
def test_a_tier_boundary_crossed_within_a_cycle(client, acme, calls, graduated, batches):
    usage = [("2024-07-10T08:00", "500"), ("2024-07-03T08:00", "700")]  # out of order
    if batches == 1:
        apply(acme.operator, calls, *usage)
    else:
        apply(acme.operator, calls, usage[1])
        apply(acme.operator, calls, usage[0])
    # 700 at 0.10 on 07-03; then 300 at 0.10 and 200 at 0.08 on 07-10.
    daily = metric(client, *JULY, name="REVENUE", aggregationPeriod="DAY")
    assert {day: value for day, value in daily.items() if value} == {
        midnight("2024-07-03"): 70,
        midnight("2024-07-10"): 46,
    }
    assert metric(client, *JULY, name="REVENUE_FOR_CYCLE") == {midnight("2024-07-01"): 116}
    assert metric(client, *JULY, name="USAGE_FOR_CYCLE") == {midnight("2024-07-01"): 1200}

    # In EUR at each day's rate: 70 x 0.9137 + 46 x 0.8765 = 63.959 + 40.319.
    invoiced = metric(
        client, *JULY, name="REVENUE", aggregationPeriod="MONTH", configs={"CURRENCY": "INVOICE"}
    )
    assert invoiced == {midnight("2024-07-01"): 104.278}
    assert round(Decimal(str(invoiced[midnight("2024-07-01")])), 2) == Decimal("104.28")
    # The cycle at its start day's rate: 116 x 0.9137.
    assert metric(client, *JULY, name="REVENUE_FOR_CYCLE", configs={"CURRENCY": "INVOICE"}) == {
        midnight("2024-07-01"): 105.9892
    }
    # The hourly rollups add up to the cycle's charge exactly.
    assert sum(row.revenue for row in UsageRollup.objects.all()) == Decimal(116)


def test_usage_names_its_billing_account(client, acme, calls, graduated):
    """A record's accountId picks the account; one naming no billing account keeps its
    id for grouping but earns nothing."""
    apply(acme.operator, calls, ("2024-07-03T08:00", "10"), account="acc-1")
    apply(acme.operator, calls, ("2024-07-03T09:00", "5"), account="elsewhere")
    response = client.post(
        "/metrics",
        {
            "startTime": JULY[0],
            "endTime": JULY[1],
            "metricQueries": [
                {"id": "u", "name": "USAGE", "aggregationPeriod": "MONTH", "groupBy": "ACCOUNT_ID"},
                {
                    "id": "r",
                    "name": "REVENUE",
                    "aggregationPeriod": "MONTH",
                    "groupBy": "ACCOUNT_ID",
                },
            ],
        },
    )
    usage, revenue = response.json()["results"]
    assert {d["groupedBy"]["fieldValue"]: d["metricValues"] for d in usage["data"]} == {
        "acc-1": [10],
        "elsewhere": [5],
    }
    assert {d["groupedBy"]["fieldValue"]: d["metricValues"] for d in revenue["data"]} == {
        "acc-1": [1],
        "elsewhere": [0],
    }


def test_usage_before_any_assignment_has_no_cycle(client, acme, calls, graduated):
    apply(acme.operator, calls, ("2024-05-20T08:00", "10"))
    assert not CycleRollup.objects.exists()
    assert (
        metric(client, "2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z", name="USAGE_FOR_CYCLE") == {}
    )
    assert metric(
        client,
        "2024-05-01T00:00:00Z",
        "2024-06-01T00:00:00Z",
        name="USAGE",
        aggregationPeriod="MONTH",
    ) == {midnight("2024-05-01"): 10}


def test_staff_see_the_cycles_in_the_admin(reference_example, staff_user):
    from django.test import Client

    from metering.models import BillingAccount

    staff = Client()
    staff.force_login(staff_user)
    listed = staff.get("/admin/metering/cyclerollup/")
    assert listed.status_code == 200
    page = listed.content.decode()
    assert "2020-03-15" in page or "March 15, 2020" in page
    assert "1250" in page and "1250.0000000000" not in page
    account = BillingAccount.objects.get(account_id="acc-1")
    detail = staff.get(f"/admin/metering/billingaccount/{account.pk}/change/").content.decode()
    assert "pricing cycles" in detail.lower() and "600" in detail
    # Written by usage only.
    assert staff.get("/admin/metering/cyclerollup/add/").status_code == 403
