"""/billing/v1/…: accounts, price plans, plan assignments and exchange rates through the
API, with their rules, tenant isolation, scopes and the reference's cycle example."""

from __future__ import annotations

import pytest

from metering.models import Customer, MeterType, PricePlan
from metering.services import meter_type_create
from tests.conftest import assert_error_body, make_tenant

pytestmark = pytest.mark.django_db

BASE = "/billing/v1"


@pytest.fixture(autouse=True)
def _generous_limits(settings):
    settings.TALLY["RATE_LIMITS"]["metrics"] = {"rate": 1000, "burst": 1000}


@pytest.fixture
def other(globex, api_client):
    return api_client(globex.token)


def _meter_type(operator, name="Calls") -> MeterType:
    return meter_type_create(
        operator=operator,
        name=name,
        unit="calls",
        aggregation=MeterType.Aggregation.SUM,
        timezone="Etc/UTC",
        reset_cron="0 0 1 * *",
    )


@pytest.fixture
def calls(acme) -> MeterType:
    return _meter_type(acme.operator)


def account(client, **fields):
    body = {"accountId": "acc-1", "customerId": "cust-1", "invoiceCurrency": "EUR", **fields}
    return client.post(f"{BASE}/accounts", {k: v for k, v in body.items() if v is not ...})


def plan(client, meter_type, **fields):
    body = {
        "name": "Standard",
        "rates": [{"meterTypeId": str(meter_type.pk), "model": "PER_UNIT", "unitPrice": 0.25}],
        **fields,
    }
    return client.post(f"{BASE}/price-plans", {k: v for k, v in body.items() if v is not ...})


def assign(client, plan_id, **fields):
    body = {
        "accountId": "acc-1",
        "pricePlanId": plan_id,
        "effectiveFrom": "2019-12-05",
        "cycle": "MONTHLY",
        "anchorDay": 5,
        **fields,
    }
    return client.post(f"{BASE}/plan-assignments", {k: v for k, v in body.items() if v is not ...})


# -- Accounts ---------------------------------------------------------------------------


def test_account_crud_creates_the_customer_on_first_use(client, acme):
    response = account(client, name="Main")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["accountId"] == "acc-1"
    assert data["customerId"] == "cust-1"
    assert data["name"] == "Main"
    assert data["invoiceCurrency"] == "EUR"
    assert data["createdAt"].endswith("Z")
    assert Customer.objects.filter(operator=acme.operator, external_id="cust-1").exists()
    assert client.get(f"{BASE}/accounts/acc-1").json() == data

    changed = client.patch(f"{BASE}/accounts/acc-1", {"name": "Renamed", "invoiceCurrency": "GBP"})
    assert changed.status_code == 200, changed.content
    assert changed.json()["name"] == "Renamed"
    assert changed.json()["invoiceCurrency"] == "GBP"

    assert client.delete(f"{BASE}/accounts/acc-1").json() == {"deletedCount": 1}
    assert_error_body(client.get(f"{BASE}/accounts/acc-1"), 404)


def test_accounts_list_pages_and_filters_by_customer(client):
    for index in range(3):
        account(client, accountId=f"acc-{index}", customerId="a" if index < 2 else "b")
    listed = client.get(f"{BASE}/accounts", {"limit": 2}).json()
    assert listed["total"] == 3 and len(listed["accounts"]) == 2
    only_b = client.get(f"{BASE}/accounts", {"customerId": "b"}).json()
    assert [row["accountId"] for row in only_b["accounts"]] == ["acc-2"]


def test_an_account_id_in_use_is_a_conflict(client):
    account(client)
    assert_error_body(account(client), 409)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"accountId": ...}, "accountId"),
        ({"accountId": "a/b"}, "accountId"),
        ({"customerId": ...}, "customerId"),
        ({"invoiceCurrency": "eur"}, "invoiceCurrency"),
        ({"invoiceCurrency": "EURO"}, "invoiceCurrency"),
        ({"invoiceCurrency": ...}, "invoiceCurrency"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_accounts_are_400_naming_the_field(client, fields, field):
    body = assert_error_body(account(client, **fields), 400)
    assert field in [detail["field"] for detail in body["details"]]


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"accountId": "acc-2"}, "accountId"),
        ({"customerId": "other"}, "customerId"),
        ({"invoiceCurrency": "usd"}, "invoiceCurrency"),
    ],
)
def test_account_ids_cannot_change_and_currency_is_checked(client, fields, field):
    account(client)
    body = assert_error_body(client.patch(f"{BASE}/accounts/acc-1", fields), 400)
    assert field in [detail["field"] for detail in body["details"]]


# -- Price plans -------------------------------------------------------------------------

GRADUATED = {
    "model": "GRADUATED",
    "tiers": [{"upTo": 1000, "unitPrice": 0.1}, {"upTo": None, "unitPrice": 0.08}],
}


def test_price_plan_crud(client, acme, calls):
    storage = _meter_type(acme.operator, "Storage")
    response = plan(
        client,
        calls,
        description="Most customers",
        rates=[
            {"meterTypeId": str(calls.pk), "model": "PER_UNIT", "unitPrice": 0.25},
            {"meterTypeId": str(storage.pk), **GRADUATED},
        ],
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["currency"] == "USD"
    assert data["description"] == "Most customers"
    assert data["rates"] == [
        {"meterTypeId": str(calls.pk), "model": "PER_UNIT", "unitPrice": 0.25},
        {"meterTypeId": str(storage.pk), **GRADUATED},
    ]
    assert client.get(f"{BASE}/price-plans/{data['id']}").json() == data
    assert client.get(f"{BASE}/price-plans").json()["total"] == 1

    replaced = client.put(
        f"{BASE}/price-plans/{data['id']}",
        {"name": "Gold", "rates": [{"meterTypeId": str(storage.pk), **GRADUATED}]},
    )
    assert replaced.status_code == 200, replaced.content
    assert replaced.json()["name"] == "Gold"
    assert replaced.json()["description"] == ""
    assert [rate["meterTypeId"] for rate in replaced.json()["rates"]] == [str(storage.pk)]

    assert client.delete(f"{BASE}/price-plans/{data['id']}").json() == {"deletedCount": 1}
    assert_error_body(client.get(f"{BASE}/price-plans/{data['id']}"), 404)


def test_prices_stay_exact(client, calls):
    # Raw JSON: a Python float would already have lost the digits.
    rate = f'{{"meterTypeId": "{calls.pk}", "model": "PER_UNIT", "unitPrice": 0.0001234567}}'
    raw = f'{{"name": "Exact", "rates": [{rate}]}}'
    response = client.post(f"{BASE}/price-plans", raw.encode())
    assert response.status_code == 201, response.content
    assert b'"unitPrice":0.0001234567' in response.content


def test_a_plan_name_in_use_is_a_conflict(client, calls):
    plan(client, calls)
    assert_error_body(plan(client, calls), 409)


def _rate(calls, **fields) -> dict:
    return {"meterTypeId": str(calls.pk), **fields}


@pytest.mark.parametrize(
    "rate, field",
    [
        ({"model": "PER_UNIT"}, "rates[0].unitPrice"),
        ({"model": "PER_UNIT", "unitPrice": -1}, "rates[0].unitPrice"),
        ({"model": "PER_UNIT", "unitPrice": "1"}, "rates[0].unitPrice"),
        ({"model": "PER_UNIT", "unitPrice": 1, "tiers": GRADUATED["tiers"]}, "rates[0].tiers"),
        ({"model": "GRADUATED"}, "rates[0].tiers"),
        ({"model": "GRADUATED", "tiers": []}, "rates[0].tiers"),
        ({**GRADUATED, "unitPrice": 1}, "rates[0].unitPrice"),
        (
            {
                "model": "GRADUATED",
                "tiers": [{"upTo": 10, "unitPrice": 1}, {"upTo": 10, "unitPrice": 1}],
            },
            "rates[0].tiers[1].upTo",
        ),
        (
            {
                "model": "GRADUATED",
                "tiers": [{"upTo": None, "unitPrice": 1}, {"upTo": None, "unitPrice": 1}],
            },
            "rates[0].tiers[0].upTo",
        ),
        ({"model": "GRADUATED", "tiers": [{"upTo": 0, "unitPrice": 1}]}, "rates[0].tiers[0].upTo"),
        ({"model": "GRADUATED", "tiers": [{"upTo": -5, "unitPrice": 1}]}, "rates[0].tiers[0].upTo"),
        (
            {"model": "GRADUATED", "tiers": [{"upTo": None, "unitPrice": -1}]},
            "rates[0].tiers[0].unitPrice",
        ),
        ({"model": "GRADUATED", "tiers": [{"unitPrice": 1}]}, "rates[0].tiers[0].upTo"),
        (
            {"model": "GRADUATED", "tiers": [{"upTo": None, "unitPrice": 1, "x": 1}]},
            "rates[0].tiers[0].x",
        ),
        ({"model": "FLAT", "unitPrice": 1}, "rates[0].model"),
        ({"model": "PER_UNIT", "unitPrice": 1, "extra": 1}, "rates[0].extra"),
    ],
)
def test_invalid_rates_are_400_naming_the_field(client, calls, rate, field):
    body = assert_error_body(plan(client, calls, rates=[_rate(calls, **rate)]), 400)
    assert field in [detail["field"] for detail in body["details"]], body


def test_one_rate_per_meter_type(client, calls):
    rate = _rate(calls, model="PER_UNIT", unitPrice=1)
    body = assert_error_body(plan(client, calls, rates=[rate, rate]), 400)
    assert [detail["field"] for detail in body["details"]] == ["rates[1].meterTypeId"]


def test_another_operators_meter_type_is_400_naming_the_field(client, globex, calls):
    theirs = _meter_type(globex.operator, "Theirs")
    response = plan(client, calls, rates=[_rate(theirs, model="PER_UNIT", unitPrice=1)])
    body = assert_error_body(response, 400)
    assert [detail["field"] for detail in body["details"]] == ["rates[0].meterTypeId"]


@pytest.mark.parametrize("fields, field", [({"name": ...}, "name"), ({"name": " "}, "name")])
def test_invalid_plans_are_400_naming_the_field(client, calls, fields, field):
    body = assert_error_body(plan(client, calls, **fields), 400)
    assert field in [detail["field"] for detail in body["details"]]


def test_an_assigned_plan_cannot_be_deleted(client, calls):
    account(client)
    plan_id = plan(client, calls).json()["id"]
    assignment = assign(client, plan_id).json()
    assert_error_body(client.delete(f"{BASE}/price-plans/{plan_id}"), 409)
    client.delete(f"{BASE}/plan-assignments/{assignment['id']}")
    assert client.delete(f"{BASE}/price-plans/{plan_id}").status_code == 200


# -- Plan assignments --------------------------------------------------------------------


def test_the_reference_cycle_example_through_the_api(client, calls):
    account(client)
    monthly_fifth = plan(client, calls, name="Fifth").json()["id"]
    monthly_first = plan(client, calls, name="First").json()["id"]

    first = assign(client, monthly_fifth)
    assert first.status_code == 201, first.content
    assert first.json()["firstCycle"] == {"start": "2019-12-05", "end": "2020-01-05"}

    second = assign(client, monthly_first, effectiveFrom="2020-03-15", anchorDay=1)
    assert second.status_code == 201, second.content
    data = second.json()
    assert data["accountId"] == "acc-1"
    assert data["pricePlanId"] == monthly_first
    assert data["pricePlanName"] == "First"
    assert data["cycle"] == "MONTHLY" and data["anchorDay"] == 1
    assert data["firstCycle"] == {"start": "2020-03-15", "end": "2020-04-01"}
    assert client.get(f"{BASE}/plan-assignments/{data['id']}").json() == data

    listed = client.get(f"{BASE}/plan-assignments", {"accountId": "acc-1"}).json()
    assert listed["total"] == 2
    assert [row["effectiveFrom"] for row in listed["planAssignments"]] == [
        "2019-12-05",
        "2020-03-15",
    ]
    assert listed["planAssignments"][1] == data


def test_a_later_assignment_cuts_the_first_cycle_short(client, calls):
    account(client)
    plan_id = plan(client, calls).json()["id"]
    early = assign(client, plan_id, effectiveFrom="2020-01-05").json()
    assign(client, plan_id, effectiveFrom="2020-01-20", cycle="WEEKLY", anchorDay=1)
    shown = client.get(f"{BASE}/plan-assignments/{early['id']}").json()
    assert shown["firstCycle"] == {"start": "2020-01-05", "end": "2020-01-20"}


def test_a_second_assignment_on_the_same_day_is_a_conflict(client, calls):
    account(client)
    plan_id = plan(client, calls).json()["id"]
    assign(client, plan_id)
    assert_error_body(assign(client, plan_id, cycle="YEARLY"), 409)


def test_assignments_list_filters_by_account(client, calls):
    account(client)
    account(client, accountId="acc-2")
    plan_id = plan(client, calls).json()["id"]
    assign(client, plan_id)
    assign(client, plan_id, accountId="acc-2")
    listed = client.get(f"{BASE}/plan-assignments", {"accountId": "acc-2"}).json()
    assert [row["accountId"] for row in listed["planAssignments"]] == ["acc-2"]


def test_assignment_list_queries_do_not_grow(client, calls, django_assert_max_num_queries):
    account(client)
    plan_id = plan(client, calls).json()["id"]
    for day in range(1, 9):
        assign(client, plan_id, effectiveFrom=f"2020-01-{day:02}")
    # token lookup, access marks, count, page, the page's accounts' assignments
    with django_assert_max_num_queries(8):
        listed = client.get(f"{BASE}/plan-assignments").json()
    assert listed["total"] == 8


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"accountId": "nobody"}, "accountId"),
        ({"pricePlanId": "00000000-0000-0000-0000-000000000000"}, "pricePlanId"),
        ({"effectiveFrom": "2020-13-01"}, "effectiveFrom"),
        ({"effectiveFrom": "05/12/2019"}, "effectiveFrom"),
        ({"cycle": "DAILY"}, "cycle"),
        ({"anchorDay": 0}, "anchorDay"),
        ({"anchorDay": 32}, "anchorDay"),
        ({"anchorDay": "5"}, "anchorDay"),
        ({"cycle": "WEEKLY", "anchorDay": 8}, "anchorDay"),
        ({"effectiveFrom": ...}, "effectiveFrom"),
    ],
)
def test_invalid_assignments_are_400_naming_the_field(client, calls, fields, field):
    account(client)
    plan_id = plan(client, calls).json()["id"]
    body = assert_error_body(assign(client, plan_id, **fields), 400)
    assert field in [detail["field"] for detail in body["details"]]


# -- Exchange rates ----------------------------------------------------------------------


def test_exchange_rates_upsert_list_and_delete(client):
    created = client.put(f"{BASE}/exchange-rates/EUR/2024-01-01", {"rate": 0.91})
    assert created.status_code == 201, created.content
    assert created.json() == {"currency": "EUR", "date": "2024-01-01", "rate": 0.91}
    replaced = client.put(f"{BASE}/exchange-rates/EUR/2024-01-01", {"rate": 0.9123})
    assert replaced.status_code == 200
    assert replaced.json()["rate"] == 0.9123
    client.put(f"{BASE}/exchange-rates/GBP/2024-01-01", {"rate": 0.79})

    listed = client.get(f"{BASE}/exchange-rates").json()
    assert listed["total"] == 2
    only_eur = client.get(f"{BASE}/exchange-rates", {"currency": "EUR"}).json()
    assert only_eur["exchangeRates"] == [{"currency": "EUR", "date": "2024-01-01", "rate": 0.9123}]
    assert client.get(f"{BASE}/exchange-rates/EUR/2024-01-01").json()["rate"] == 0.9123

    assert client.delete(f"{BASE}/exchange-rates/EUR/2024-01-01").json() == {"deletedCount": 1}
    assert_error_body(client.delete(f"{BASE}/exchange-rates/EUR/2024-01-01"), 404)


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("EUR/2024-01-01", {"rate": 0}, "rate"),
        ("EUR/2024-01-01", {"rate": -1}, "rate"),
        ("EUR/2024-01-01", {"rate": "1"}, "rate"),
        ("EUR/2024-01-01", {}, "rate"),
        ("EUR/2024-01-01", {"rate": 1, "x": 1}, "x"),
        ("eur/2024-01-01", {"rate": 1}, "currency"),
        ("EURO/2024-01-01", {"rate": 1}, "currency"),
        ("EUR/2024-02-30", {"rate": 1}, "date"),
        ("EUR/yesterday", {"rate": 1}, "date"),
    ],
)
def test_invalid_exchange_rates_are_400_naming_the_field(client, path, body, field):
    response = client.put(f"{BASE}/exchange-rates/{path}", body)
    assert field in [detail["field"] for detail in assert_error_body(response, 400)["details"]]


# -- Tenant isolation and scopes ---------------------------------------------------------


def test_another_operators_rows_are_not_found(client, other, globex, calls):
    account(client)
    plan_id = plan(client, calls).json()["id"]
    assignment_id = assign(client, plan_id).json()["id"]
    client.put(f"{BASE}/exchange-rates/EUR/2024-01-01", {"rate": 0.9})

    for path in (
        f"{BASE}/accounts/acc-1",
        f"{BASE}/price-plans/{plan_id}",
        f"{BASE}/plan-assignments/{assignment_id}",
        f"{BASE}/exchange-rates/EUR/2024-01-01",
    ):
        assert_error_body(other.get(path), 404)
        assert_error_body(other.delete(path), 404)
    assert_error_body(other.patch(f"{BASE}/accounts/acc-1", {"name": "x"}), 404)
    assert_error_body(other.put(f"{BASE}/price-plans/{plan_id}", {"name": "x"}), 404)
    for path, key in (
        ("accounts", "accounts"),
        ("price-plans", "pricePlans"),
        ("plan-assignments", "planAssignments"),
        ("exchange-rates", "exchangeRates"),
    ):
        assert other.get(f"{BASE}/{path}").json() == {key: [], "total": 0}
    # Nor can their rows be named in a body.
    other.post(
        f"{BASE}/accounts", {"accountId": "g-1", "customerId": "c", "invoiceCurrency": "EUR"}
    )
    body = assert_error_body(assign(other, plan_id, accountId="g-1"), 400)
    assert [detail["field"] for detail in body["details"]] == ["pricePlanId"]
    body = assert_error_body(assign(client, plan_id, accountId="g-1"), 400)
    assert [detail["field"] for detail in body["details"]] == ["accountId"]
    # The same account id is free in another operator.
    assert account(other).status_code == 201
    # A plan of ours cannot be changed to price their meter type.
    theirs = _meter_type(globex.operator, "Theirs")
    body = assert_error_body(
        client.put(
            f"{BASE}/price-plans/{plan_id}",
            {"name": "Calls", "rates": [_rate(theirs, model="PER_UNIT", unitPrice=1)]},
        ),
        400,
    )
    assert [detail["field"] for detail in body["details"]] == ["rates[0].meterTypeId"]
    # Their exchange rate for the same day is theirs: ours stays.
    assert other.put(f"{BASE}/exchange-rates/EUR/2024-01-01", {"rate": 2}).status_code == 201
    assert client.get(f"{BASE}/exchange-rates/EUR/2024-01-01").json()["rate"] == 0.9


def test_a_read_token_cannot_write(db, api_client):
    reader = api_client(make_tenant("Reader", scopes=["metrics:read"]).token)
    assert reader.get(f"{BASE}/accounts").status_code == 200
    for response in (
        account(reader),
        reader.post(f"{BASE}/price-plans", {"name": "x"}),
        reader.post(f"{BASE}/plan-assignments", {}),
        reader.put(f"{BASE}/exchange-rates/EUR/2024-01-01", {"rate": 1}),
    ):
        assert "metrics:write" in assert_error_body(response, 403)["message"]


def test_a_write_only_token_cannot_read(db, api_client):
    writer = api_client(make_tenant("Writer", scopes=["metrics:write"]).token)
    assert "metrics:read" in assert_error_body(writer.get(f"{BASE}/price-plans"), 403)["message"]


# -- Admin -------------------------------------------------------------------------------


@pytest.fixture
def staff(client, staff_user):
    # `client` here is the API client; the admin needs a session.
    from django.test import Client

    browser = Client()
    browser.force_login(staff_user)
    return browser


@pytest.mark.parametrize(
    "model", ["billingaccount", "priceplan", "planrate", "planassignment", "exchangerate"]
)
def test_billing_admin_pages_render(staff, client, calls, model):
    account(client)
    plan_id = plan(client, calls).json()["id"]
    assignment_id = assign(client, plan_id).json()["id"]
    client.put(f"{BASE}/exchange-rates/EUR/2024-01-01", {"rate": 0.9})
    assert staff.get(f"/admin/metering/{model}/").status_code == 200
    assert staff.get(f"/admin/metering/{model}/", {"q": "acc"}).status_code == 200
    if model != "planrate":
        assert staff.get(f"/admin/metering/{model}/add/").status_code == 200
    from metering.models import BillingAccount, ExchangeRate, PlanRate

    ids = {
        "billingaccount": BillingAccount.objects.get().pk,
        "priceplan": plan_id,
        "planrate": PlanRate.objects.get().pk,
        "planassignment": assignment_id,
        "exchangerate": ExchangeRate.objects.get().pk,
    }
    page = staff.get(f"/admin/metering/{model}/{ids[model]}/change/")
    assert page.status_code == 200


def test_a_base_currency_set_in_the_admin_is_the_plans_currency(staff, client, acme, calls):
    plan_id = plan(client, calls).json()["id"]
    assert client.get(f"{BASE}/price-plans/{plan_id}").json()["currency"] == "USD"
    url = f"/admin/tenants/operator/{acme.operator.pk}/change/"
    form = {
        "name": acme.operator.name,
        "status": "active",
        "base_currency": "eur",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "application_accesses-TOTAL_FORMS": "0",
        "application_accesses-INITIAL_FORMS": "0",
    }
    assert staff.post(url, form).status_code == 302
    assert client.get(f"{BASE}/price-plans/{plan_id}").json()["currency"] == "EUR"


def test_the_admin_refuses_tiers_the_api_refuses(staff, acme, calls):
    form = {
        "name": "Tiered",
        "description": "",
        "operator": str(acme.operator.pk),
        "rates-TOTAL_FORMS": "1",
        "rates-INITIAL_FORMS": "0",
        "rates-0-meter_type": str(calls.pk),
        "rates-0-model": "GRADUATED",
        "rates-0-unit_price": "",
        # The tiers as rows of (up to, unit price); an empty bound is the open last tier.
        **{f"rates-0-tiers_{n}": value for n, value in enumerate(["10", "1", "5", "1"])},
    }
    page = staff.post("/admin/metering/priceplan/add/", form)
    assert page.status_code == 200
    assert "Row 2, up to: Must be above the previous bound 10." in page.content.decode()
    assert not PricePlan.objects.filter(name="Tiered").exists()
    form.update({"rates-0-tiers_2": "", "rates-0-tiers_3": "0.5"})
    assert staff.post("/admin/metering/priceplan/add/", form).status_code == 302
    (rate,) = PricePlan.objects.get(name="Tiered").rates.all()
    assert rate.tiers == [{"upTo": 10, "unitPrice": 1}, {"upTo": None, "unitPrice": 0.5}]


@pytest.mark.parametrize(("path", "key"), [("accounts", "accounts"), ("price-plans", "pricePlans")])
def test_list_queries_do_not_grow(client, calls, django_assert_num_queries, path, key):
    def counted() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"{BASE}/{path}").status_code == 200
        return len(captured)

    account(client)
    plan(client, calls)
    one = counted()
    for index in range(2, 7):
        account(client, accountId=f"acc-{index}")
        plan(client, calls, name=f"Plan {index}")
    assert client.get(f"{BASE}/{path}").json()["total"] == 6
    assert counted() == one
