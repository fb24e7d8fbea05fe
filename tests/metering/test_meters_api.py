"""/usage-metering/v1/meters: creation, reads, updates, periods, isolation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from metering.models import Customer, Meter, MeterPeriod
from tests.conftest import assert_error_body, make_tenant

pytestmark = pytest.mark.django_db

BASE = "/usage-metering/v1/meters"
TYPES = "/usage-metering/v1/meter-types"


@pytest.fixture(autouse=True)
def _generous_limits(settings):
    settings.TALLY["RATE_LIMITS"]["meter-types"] = {"rate": 1000, "burst": 1000}
    settings.TALLY["RATE_LIMITS"]["meters"] = {"rate": 1000, "burst": 1000}


@pytest.fixture
def meter_type(client):
    response = client.post(
        TYPES,
        {
            "name": "API calls",
            "aggregation": {"type": "Sum"},
            "unit": "requests",
            "timezone": "Europe/Berlin",
            "resetSchedule": {"cron": "0 0 1 * *"},
            "capacity": 1000,
            "externalRef": "api-calls",
            "thresholds": [{"value": 800}],
        },
    )
    assert response.status_code == 201, response.content
    return response.json()


def create(client, meter_type, **fields):
    data = {"meterTypeId": meter_type["id"], "meterKey": "key-1", "userId": "user0@example.com"}
    data.update(fields)
    return client.post(BASE, {key: value for key, value in data.items() if value is not ...})


def test_create_answers_the_meter_in_its_current_period(client, meter_type, acme):
    response = create(client, meter_type, customFields={"plan": "gold"})
    assert response.status_code == 201, response.content
    meter = response.json()
    assert meter["meterTypeId"] == meter_type["id"]
    assert meter["meterTypeName"] == "API calls"
    assert meter["value"] == 0
    assert meter["capacity"] == 1000
    assert meter["thresholds"] == [{"absoluteValue": 800}]
    assert meter["unit"] == "requests" and meter["timezone"] == "Europe/Berlin"
    assert meter["customFields"] == {"plan": "gold"}
    assert meter["groups"] == [] and meter["groupBreakdowns"] == []
    assert meter["carryFirst"] is None and meter["carryLast"] is None
    assert meter["meterMetaData"]["recordCount"] == 0
    assert meter["deleteOnReset"] is False
    # The first period starts at the meter's creation and ends at the next fire:
    # monthly in Berlin, local midnight on the 1st.
    assert meter["periodStart"] == meter["createdAt"]
    now = timezone.now().isoformat().replace("+00:00", "Z")
    assert meter["periodStart"] <= now < meter["periodEnd"]
    assert meter["periodEnd"].endswith(("T22:00:00.000Z", "T23:00:00.000Z"))
    # The customer exists now, keyed by the user id.
    assert Customer.objects.get(operator=acme.operator).external_id == "user0@example.com"


def test_create_by_external_ref(client, meter_type):
    response = create(client, meter_type, meterTypeId=..., meterTypeExternalRef="api-calls")
    assert response.status_code == 201, response.content


def test_the_identity_triple_is_unique(client, meter_type):
    create(client, meter_type)
    assert_error_body(create(client, meter_type), 409)
    assert create(client, meter_type, meterKey="key-2").status_code == 201
    assert create(client, meter_type, userId="other").status_code == 201


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"meterKey": ...}, "meterKey"),
        ({"meterKey": "k" * 37}, "meterKey"),
        ({"userId": ...}, "userId"),
        ({"userId": "u" * 321}, "userId"),
        ({"userId": 42}, "userId"),
        ({"meterTypeId": "not-a-uuid"}, "meterTypeId"),
        ({"customFields": "plain"}, "customFields"),
        ({"value": 5}, "value"),
        ({"colour": "x"}, "colour"),
    ],
)
def test_invalid_create_bodies_are_400(client, meter_type, fields, field):
    error = assert_error_body(create(client, meter_type, **fields), 400)
    assert field in [item["field"] for item in error["details"]], error
    assert not Meter.objects.exists()


def test_exactly_one_meter_type_reference(client, meter_type):
    assert_error_body(create(client, meter_type, meterTypeId=...), 400)
    assert_error_body(create(client, meter_type, meterTypeExternalRef="api-calls"), 400)


def test_unknown_meter_type_is_404(client, meter_type):
    missing = "00000000-0000-0000-0000-000000000000"
    assert_error_body(create(client, meter_type, meterTypeId=missing), 404)
    assert_error_body(create(client, meter_type, meterTypeId=..., meterTypeExternalRef="nope"), 404)


# Reads and filters


def test_list_filters_by_key_type_and_user(client, meter_type):
    create(client, meter_type, meterKey="a", userId="u1")
    create(client, meter_type, meterKey="b", userId="u1")
    create(client, meter_type, meterKey="a", userId="u2")
    assert client.get(BASE).json()["total"] == 3
    assert client.get(BASE, {"meterKey": "a"}).json()["total"] == 2
    assert client.get(BASE, {"userId": "u1"}).json()["total"] == 2
    assert client.get(BASE, {"userId": "u1", "meterKey": "a"}).json()["total"] == 1
    assert client.get(BASE, {"meterTypeId": meter_type["id"]}).json()["total"] == 3
    assert_error_body(client.get(BASE, {"meterTypeId": "nope"}), 400)
    assert_error_body(client.get(BASE, {"limit": 500}), 400)


def test_list_query_count_is_constant(client, meter_type, django_assert_max_num_queries):
    for index in range(20):
        create(client, meter_type, meterKey=f"k{index}")
    with django_assert_max_num_queries(5):
        client.get(BASE, {"limit": 100})


def test_state_is_shown_exactly(client, meter_type):
    meter_id = create(client, meter_type).json()["id"]
    Meter.objects.filter(pk=meter_id).update(
        value=Decimal("1234.5600"),
        record_count=3,
        group_breakdowns={"eu": "1000.5", "us": "234.06"},
        carry_first={"id": "r1"},
        carry_last={"id": "r3"},
    )
    meter = client.get(f"{BASE}/{meter_id}").json()
    assert meter["value"] == 1234.56
    assert meter["groups"] == ["eu", "us"]
    assert meter["groupBreakdowns"] == [
        {"group": "eu", "value": 1000.5},
        {"group": "us", "value": 234.06},
    ]
    assert meter["carryFirst"] == {"id": "r1"} and meter["carryLast"] == {"id": "r3"}
    assert meter["meterMetaData"]["recordCount"] == 3


# Updates


def test_patch_overrides_capacity_and_thresholds_then_falls_back(client, meter_type):
    meter_id = create(client, meter_type).json()["id"]
    response = client.patch(
        f"{BASE}/{meter_id}",
        {
            "capacity": 50,
            "thresholds": [{"capacityPercentage": 80}],
            "deleteOnReset": True,
            "customFields": {"tier": 2},
        },
    )
    assert response.status_code == 200, response.content
    meter = response.json()
    assert meter["capacity"] == 50
    assert meter["thresholds"] == [{"capacityPercentage": 80}]
    assert meter["deleteOnReset"] is True
    assert meter["customFields"] == {"tier": 2}

    back = client.patch(f"{BASE}/{meter_id}", {"capacity": None, "thresholds": None}).json()
    assert back["capacity"] == 1000
    assert back["thresholds"] == [{"absoluteValue": 800}]


@pytest.mark.parametrize(
    "fields, field",
    [
        ({}, None),
        ({"meterKey": "other"}, "meterKey"),
        ({"userId": "other"}, "userId"),
        ({"meterTypeId": "00000000-0000-0000-0000-000000000000"}, "meterTypeId"),
        ({"capacity": -1}, "capacity"),
        ({"deleteOnReset": "yes"}, "deleteOnReset"),
        ({"thresholds": [{"value": 1}] * 6}, "thresholds"),
        ({"value": 10}, "value"),
    ],
)
def test_invalid_patches_are_400_and_change_nothing(client, meter_type, fields, field):
    meter = create(client, meter_type).json()
    error = assert_error_body(client.patch(f"{BASE}/{meter['id']}", fields), 400)
    assert error["details"][0]["field"] == field
    assert client.get(f"{BASE}/{meter['id']}").json() == meter


# Delete and periods


def test_delete_answers_deleted_count_and_keeps_periods(client, meter_type):
    meter = create(client, meter_type).json()
    stored = Meter.objects.get(pk=meter["id"])
    MeterPeriod.objects.create(
        operator=stored.operator,
        meter=stored,
        meter_type=stored.meter_type,
        meter_key=stored.meter_key,
        user_id=stored.user_id,
        period_start=stored.period_start,
        period_end=stored.period_end,
        value=Decimal(7),
    )
    assert client.delete(f"{BASE}/{meter['id']}").json() == {"deletedCount": 1}
    assert_error_body(client.get(f"{BASE}/{meter['id']}"), 404)
    assert MeterPeriod.objects.get().value == 7


def test_periods_lists_closed_periods_newest_first(client, meter_type):
    meter = create(client, meter_type).json()
    stored = Meter.objects.get(pk=meter["id"])
    for months_back, value in ((2, "5"), (1, "7.25")):
        start = stored.period_start - timezone.timedelta(days=31 * months_back)
        MeterPeriod.objects.create(
            operator=stored.operator,
            meter=stored,
            meter_type=stored.meter_type,
            meter_key=stored.meter_key,
            user_id=stored.user_id,
            period_start=start,
            period_end=start + timezone.timedelta(days=31),
            value=Decimal(value),
            group_breakdowns={"eu": value},
            record_count=2,
        )
    body = client.get(f"{BASE}/{meter['id']}/periods").json()
    assert body["total"] == 2
    first = body["periods"][0]
    assert first["value"] == 7.25
    assert first["groupBreakdowns"] == [{"group": "eu", "value": 7.25}]
    assert first["recordCount"] == 2
    assert first["periodEnd"] > body["periods"][1]["periodEnd"]
    assert_error_body(client.get(f"{BASE}/{meter['id']}/periods", {"limit": 1000}), 400)


# Isolation and scopes


def test_another_operator_gets_404_and_cannot_use_the_meter_type(
    client, meter_type, globex, api_client
):
    meter = create(client, meter_type).json()
    intruder = api_client(globex.token)
    url = f"{BASE}/{meter['id']}"
    assert_error_body(intruder.get(url), 404)
    assert_error_body(intruder.get(f"{url}/periods"), 404)
    assert_error_body(intruder.patch(url, {"capacity": 1}), 404)
    assert_error_body(intruder.delete(url), 404)
    assert intruder.get(BASE).json() == {"meters": [], "total": 0}
    assert intruder.get(BASE, {"meterTypeId": meter_type["id"]}).json()["total"] == 0
    # Creating a meter on A's meter type, by id or external ref, finds nothing.
    assert_error_body(create(intruder, meter_type, meterKey="mine"), 404)
    assert_error_body(
        create(intruder, meter_type, meterTypeId=..., meterTypeExternalRef="api-calls"), 404
    )
    assert Meter.objects.count() == 1
    assert client.get(url).json() == meter


@pytest.mark.parametrize(
    "method, suffix, payload, scope",
    [
        ("get", "", None, "usage-metering:read:meters"),
        ("post", "", "body", "usage-metering:create:meters"),
        ("get", "/id", None, "usage-metering:read:meters"),
        ("get", "/id/periods", None, "usage-metering:read:meters"),
        ("patch", "/id", {"capacity": 5}, "usage-metering:update:meters"),
        ("delete", "/id", None, "usage-metering:delete:meters"),
    ],
)
def test_each_action_requires_its_scope(
    client, meter_type, api_client, method, suffix, payload, scope
):
    from tenants.models import Operator
    from tenants.scopes import ALL_SCOPES
    from tenants.services import application_access_create

    existing = create(client, meter_type).json()
    path = BASE + suffix.replace("/id", f"/{existing['id']}")
    data = (
        {"meterTypeId": meter_type["id"], "meterKey": "k2", "userId": "u"}
        if payload == "body"
        else payload
    )
    kwargs = {"data": data} if data is not None else {}
    operator = Operator.objects.get(pk=meter_type["accountId"])

    def token_with(scopes):
        from django.test import Client

        from tests.conftest import issue_token

        issued = application_access_create(operator=operator, name="limited", scopes=scopes)
        return issue_token(Client(), issued.client_id, issued.client_secret)["access_token"]

    lacking = token_with([s for s in ALL_SCOPES if s != scope])
    error = assert_error_body(getattr(api_client(lacking), method)(path, **kwargs), 403)
    assert scope in error["message"]
    allowed = token_with([scope.removeprefix("usage-metering:")])
    assert getattr(api_client(allowed), method)(path, **kwargs).status_code in (200, 201)


def test_rate_limit_is_fifty_per_second_burst_five(client, settings):
    from config.rate_limits import DEFAULT_RATE_LIMITS

    assert DEFAULT_RATE_LIMITS["meters"] == {"rate": 50, "burst": 5}
    settings.TALLY["RATE_LIMITS"]["meters"] = {"rate": 0.001, "burst": 5}
    assert [client.get(BASE).status_code for _ in range(6)] == [200] * 5 + [429]


def test_suspended_operator_is_refused(client, meter_type, acme):
    from tenants.models import Operator
    from tenants.services import operator_set_status

    operator_set_status(operator=acme.operator, status=Operator.Status.SUSPENDED)
    assert_error_body(client.get(BASE), 403)
    assert make_tenant("Fine").token
