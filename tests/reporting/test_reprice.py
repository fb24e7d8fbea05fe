"""Pricing that changes under usage already applied: billing set up after usage came in,
a plan's rates replaced, an assignment removed, an account deleted. The change is made
through `/billing/v1/…`; the repricing runs as Beat's sweep runs it; the answers are
read through POST /metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from metering.models import BillingAccount, CycleRollup
from metering.services import meter_type_create
from metering.tasks import reprice_pending
from metering.usage import UsageUpdate, usage_apply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

JULY = ("2024-07-01T00:00:00Z", "2024-08-01T00:00:00Z")
JULY_1 = "2024-07-01T00:00:00.000Z"
JULY_15 = "2024-07-15T00:00:00.000Z"


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


def apply(operator, meter_type, *usage, user="cust-1"):
    usage_apply(
        operator=operator,
        updates=[
            UsageUpdate(
                meter_type.pk,
                None,
                "key",
                user,
                Decimal(value),
                datetime.fromisoformat(when).replace(tzinfo=UTC),
            )
            for when, value in usage
        ],
        now=datetime(2024, 8, 2, tzinfo=UTC),
    )


def created(response) -> dict:
    assert response.status_code == 201, response.content
    return response.json()


def metrics(client, *queries) -> dict[str, dict]:
    response = client.post(
        "/metrics",
        {
            "startTime": JULY[0],
            "endTime": JULY[1],
            "metricQueries": [{"aggregationPeriod": "MONTH", **query} for query in queries],
        },
    )
    assert response.status_code == 200, response.content
    return {
        result["id"]: {
            (item.get("groupedBy") or {}).get("fieldValue"): dict(
                zip(item["timestamps"], item["metricValues"], strict=True)
            )
            for item in result["data"]
        }
        for result in response.json()["results"]
    }


REVENUE_QUERIES = (
    {"id": "revenue", "name": "REVENUE"},
    {"id": "by_account", "name": "REVENUE", "groupBy": "ACCOUNT_ID"},
    {"id": "cycles", "name": "REVENUE_FOR_CYCLE"},
    {"id": "cycle_usage", "name": "USAGE_FOR_CYCLE", "groupBy": "ACCOUNT_ID"},
)


def set_up_billing(client, calls, *, unit_price=0.5, anchor=15) -> str:
    created(
        client.post(
            "/billing/v1/accounts",
            {"accountId": "acc-1", "customerId": "cust-1", "invoiceCurrency": "USD"},
        )
    )
    plan = created(
        client.post(
            "/billing/v1/price-plans",
            {
                "name": "Standard",
                "rates": [
                    {"meterTypeId": str(calls.pk), "model": "PER_UNIT", "unitPrice": unit_price}
                ],
            },
        )
    )["id"]
    created(
        client.post(
            "/billing/v1/plan-assignments",
            {
                "accountId": "acc-1",
                "pricePlanId": plan,
                "effectiveFrom": "2024-06-15",
                "cycle": "MONTHLY",
                "anchorDay": anchor,
            },
        )
    )
    return plan


USAGE = (("2024-07-02T10:00", "10"), ("2024-07-20T10:00", "30"))


def test_billing_set_up_after_the_usage_prices_it(client, acme, calls):
    apply(acme.operator, calls, *USAGE)
    set_up_billing(client, calls)
    before = metrics(client, *REVENUE_QUERIES)
    assert before["revenue"] == {None: {JULY_1: 0}}
    assert before["by_account"] == {"": {JULY_1: 0}}  # applied without an account

    assert reprice_pending() == 1
    after = metrics(client, *REVENUE_QUERIES)
    assert after["revenue"] == {None: {JULY_1: 20}}
    assert after["by_account"] == {"acc-1": {JULY_1: 20}}
    # Cycles of the 15th: 06-15 (07-02's 10) starts before July; 07-15 holds 30.
    assert after["cycles"] == {None: {JULY_15: 15}}
    assert after["cycle_usage"] == {"acc-1": {JULY_15: 30}}
    assert reprice_pending() == 0  # done once


def test_usage_after_the_repricing_accrues_on_top(client, acme, calls):
    apply(acme.operator, calls, *USAGE)
    set_up_billing(client, calls)
    reprice_pending()
    apply(acme.operator, calls, ("2024-07-21T10:00", "2"))
    found = metrics(client, *REVENUE_QUERIES)
    assert found["revenue"] == {None: {JULY_1: 21}}
    assert found["cycles"] == {None: {JULY_15: 16}}


def test_new_rates_reprice_the_plans_accounts(client, acme, calls):
    plan = set_up_billing(client, calls)
    reprice_pending()
    apply(acme.operator, calls, *USAGE)
    assert metrics(client, *REVENUE_QUERIES)["revenue"] == {None: {JULY_1: 20}}

    replaced = client.put(
        f"/billing/v1/price-plans/{plan}",
        {
            "name": "Standard",
            "rates": [
                {
                    "meterTypeId": str(calls.pk),
                    "model": "GRADUATED",
                    "tiers": [{"upTo": 20, "unitPrice": 1}, {"upTo": None, "unitPrice": 0.1}],
                }
            ],
        },
    )
    assert replaced.status_code == 200, replaced.content
    assert reprice_pending() == 1
    found = metrics(client, *REVENUE_QUERIES)
    # Cycle 06-15: 10 at 1; cycle 07-15: 20 at 1 and 10 at 0.1.
    assert found["revenue"] == {None: {JULY_1: 10 + 21}}
    assert found["cycles"] == {None: {JULY_15: 21}}


def test_a_removed_assignment_takes_its_revenue_with_it(client, acme, calls):
    set_up_billing(client, calls)
    reprice_pending()
    apply(acme.operator, calls, *USAGE)
    (assignment,) = client.get("/billing/v1/plan-assignments").json()["planAssignments"]
    assert client.delete(f"/billing/v1/plan-assignments/{assignment['id']}").status_code == 200
    reprice_pending()
    found = metrics(client, *REVENUE_QUERIES)
    assert found["revenue"] == {None: {JULY_1: 0}}
    assert found["cycles"] == {None: {}}
    assert not CycleRollup.objects.exists()


def test_a_deleted_account_takes_its_revenue_out_at_once(client, acme, calls):
    set_up_billing(client, calls)
    reprice_pending()
    apply(acme.operator, calls, *USAGE)
    assert client.delete("/billing/v1/accounts/acc-1").status_code == 200
    found = metrics(client, *REVENUE_QUERIES)
    assert found["revenue"] == {None: {JULY_1: 0}}
    assert found["by_account"] == {"acc-1": {JULY_1: 0}}  # the usage keeps its account id
    assert found["cycles"] == {None: {}}


def test_repricing_what_accrued_live_changes_nothing(client, acme, calls):
    set_up_billing(client, calls, unit_price=0.37)
    reprice_pending()
    apply(acme.operator, calls, *USAGE, ("2024-07-25T03:00", "0.5"))
    apply(acme.operator, calls, ("2024-07-16T08:00", "7"))
    live = metrics(client, *REVENUE_QUERIES)

    BillingAccount.objects.update(reprice_from=datetime(2024, 6, 1).date())
    assert reprice_pending() == 1
    assert metrics(client, *REVENUE_QUERIES) == live
    BillingAccount.objects.update(reprice_from=datetime(2024, 7, 20).date())
    assert reprice_pending() == 1
    assert metrics(client, *REVENUE_QUERIES) == live


def test_an_account_is_only_priced_by_its_own_operators_changes(client, acme, globex, calls):
    """globex's account of the same id and customer, on its own plan, is untouched."""
    other = meter_type_create(
        operator=globex.operator,
        name="Calls",
        unit="calls",
        aggregation="Sum",
        timezone="Etc/UTC",
        reset_cron="0 0 1 * *",
        active_from=None,
    )
    apply(globex.operator, other, *USAGE)
    apply(acme.operator, calls, *USAGE)
    set_up_billing(client, calls)
    reprice_pending()
    assert metrics(client, *REVENUE_QUERIES)["revenue"] == {None: {JULY_1: 20}}
    assert not BillingAccount.objects.filter(operator=globex.operator).exists()
    assert not CycleRollup.objects.filter(operator=globex.operator).exists()


# -- The same changes made by staff in the admin --------------------------------------------


@pytest.fixture
def staff(staff_user):
    from django.test import Client

    browser = Client()
    browser.force_login(staff_user)
    return browser


def test_staff_changing_a_rate_in_the_admin_reprices(client, acme, calls, staff):
    from metering.models import PlanRate, PricePlan

    set_up_billing(client, calls)
    reprice_pending()
    apply(acme.operator, calls, *USAGE)
    plan = PricePlan.objects.get()
    rate = PlanRate.objects.get()
    response = staff.post(
        f"/admin/metering/priceplan/{plan.pk}/change/",
        {
            "name": plan.name,
            "description": "",
            "rates-TOTAL_FORMS": "1",
            "rates-INITIAL_FORMS": "1",
            "rates-MIN_NUM_FORMS": "0",
            "rates-MAX_NUM_FORMS": "1000",
            "rates-0-id": str(rate.pk),
            "rates-0-plan": str(plan.pk),
            "rates-0-meter_type": str(calls.pk),
            "rates-0-model": "PER_UNIT",
            "rates-0-unit_price": "2",
            "rates-0-tiers": "[]",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert reprice_pending() == 1
    assert metrics(client, *REVENUE_QUERIES)["revenue"] == {None: {JULY_1: 80}}


def test_staff_deleting_in_the_admin_goes_through_the_services(client, acme, calls, staff):
    from metering.models import PlanAssignment

    set_up_billing(client, calls)
    reprice_pending()
    apply(acme.operator, calls, *USAGE)
    assignment = PlanAssignment.objects.get()
    response = staff.post(
        f"/admin/metering/planassignment/{assignment.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert reprice_pending() == 1
    assert metrics(client, *REVENUE_QUERIES)["revenue"] == {None: {JULY_1: 0}}

    set_up_billing_again = client.post(
        "/billing/v1/plan-assignments",
        {
            "accountId": "acc-1",
            "pricePlanId": str(assignment.plan_id),
            "effectiveFrom": "2024-06-15",
            "cycle": "MONTHLY",
            "anchorDay": 15,
        },
    )
    assert set_up_billing_again.status_code == 201
    reprice_pending()
    assert metrics(client, *REVENUE_QUERIES)["revenue"] == {None: {JULY_1: 20}}
    account = BillingAccount.objects.get()
    response = staff.post(
        "/admin/metering/billingaccount/",
        {"action": "delete_selected", "_selected_action": [str(account.pk)], "post": "yes"},
    )
    assert response.status_code == 302
    assert not BillingAccount.objects.exists()
    assert metrics(client, *REVENUE_QUERIES)["revenue"] == {None: {JULY_1: 0}}
