"""/usage-metering/v1/meter-types: every field rule, with status codes and error bodies."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from metering.models import MeterType
from tests.conftest import assert_error_body, make_tenant

pytestmark = pytest.mark.django_db

BASE = "/usage-metering/v1/meter-types"


@pytest.fixture(autouse=True)
def _generous_limits(settings):
    settings.TALLY["RATE_LIMITS"]["meter-types"] = {"rate": 1000, "burst": 1000}
    settings.TALLY["RATE_LIMITS"]["meters"] = {"rate": 1000, "burst": 1000}


def body(**fields) -> dict:
    data = {
        "name": "Usage based API counter",
        "aggregation": {"type": "Sum"},
        "unit": "requests",
        "timezone": "Etc/UTC",
        "resetSchedule": {"cron": "0 0 1 * *"},
    }
    data.update(fields)
    return {key: value for key, value in data.items() if value is not ...}


def create(client, **fields):
    return client.post(BASE, body(**fields))


def iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_create_answers_the_full_meter_type(client, acme):
    response = create(
        client,
        capacity=1000,
        category="API Counts",
        description="Counts API requests",
        externalRef="878752b4-4ddf",
        thresholds=[{"value": 800}, {"capacityPercentage": 80}],
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["accountId"] == str(acme.operator.id)
    assert data["aggregation"] == {"type": "Sum"}
    assert data["resetSchedule"] == {
        "minute": "0",
        "hour": "0",
        "day": "1",
        "month": "*",
        "weekday": "*",
    }
    assert data["capacity"] == 1000
    assert data["thresholds"] == [{"absoluteValue": 800}, {"capacityPercentage": 80}]
    assert data["numberOfMeters"] == 0
    assert data["category"] == "API Counts"
    assert data["externalRef"] == "878752b4-4ddf"
    for stamp in ("createdAt", "updatedAt", "activeFrom"):
        assert data[stamp].endswith("Z")
    assert data["activeTo"] is None
    assert client.get(f"{BASE}/{data['id']}").json() == data


def test_category_defaults_to_default(client):
    assert create(client).json()["category"] == "DEFAULT"


@pytest.mark.parametrize("aggregation", ["Sum", "Increment", "Max", "Min"])
def test_every_aggregation_is_accepted(client, aggregation):
    response = create(client, aggregation={"type": aggregation})
    assert response.json()["aggregation"] == {"type": aggregation}


def test_capacity_stays_exact(client):
    # Raw JSON: a Python float would already have lost the digits.
    payload = json.dumps(body(capacity=0)).replace(
        '"capacity": 0', '"capacity": 12345678901234567.125'
    )
    response = client.post(BASE, payload.encode())
    assert response.status_code == 201, response.content
    assert b'"capacity":12345678901234567.125' in response.content
    assert str(MeterType.objects.get().capacity).startswith("12345678901234567.125")


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": ...}, "name"),
        ({"name": "n" * 81}, "name"),
        ({"name": "bad/name"}, "name"),
        ({"name": 12}, "name"),
        ({"aggregation": ...}, "aggregation"),
        ({"aggregation": {"type": "Average"}}, "aggregation.type"),
        ({"aggregation": "Sum"}, "aggregation"),
        ({"unit": ...}, "unit"),
        ({"unit": "u" * 51}, "unit"),
        ({"timezone": ...}, "timezone"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"resetSchedule": ...}, "resetSchedule"),
        ({"resetSchedule": {"cron": "61 * * * *"}}, "resetSchedule.cron"),
        ({"resetSchedule": {"cron": "* * *"}}, "resetSchedule.cron"),
        ({"resetSchedule": {"cron": "0 0 1 * * *"}}, "resetSchedule.cron"),
        ({"category": "c" * 51}, "category"),
        ({"description": "d" * 201}, "description"),
        ({"externalRef": "e" * 101}, "externalRef"),
        ({"capacity": -1}, "capacity"),
        ({"capacity": "1000"}, "capacity"),
        ({"thresholds": [{"value": 1}] * 6}, "thresholds"),
        ({"thresholds": [{"value": 1, "capacityPercentage": 5}]}, "thresholds[0]"),
        ({"thresholds": [{}]}, "thresholds[0]"),
        ({"thresholds": [{"value": -5}]}, "thresholds[0].value"),
        ({"thresholds": [{"absoluteValue": -5}]}, "thresholds[0].absoluteValue"),
        ({"thresholds": [{"capacityPercentage": 0}]}, "thresholds[0].capacityPercentage"),
        ({"thresholds": [{"percent": 5}]}, "thresholds[0].percent"),
        ({"thresholds": "800"}, "thresholds"),
        ({"numberOfMeters": 3}, "numberOfMeters"),
        ({"accountId": "x"}, "accountId"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_fields_are_400(client, fields, field):
    error = assert_error_body(create(client, **fields), 400)
    assert field in [item["field"] for item in error["details"]], error
    assert not MeterType.objects.exists()


def test_active_window_rules(client):
    past = iso(timezone.now() - timedelta(days=1))
    later = iso(timezone.now() + timedelta(days=10))
    sooner = iso(timezone.now() + timedelta(days=5))
    assert_error_body(create(client, activeFrom=past), 400)
    assert_error_body(create(client, activeTo=past), 400)
    error = assert_error_body(create(client, activeFrom=later, activeTo=sooner), 400)
    assert error["details"][0]["field"] == "activeTo"
    assert_error_body(create(client, activeFrom="yesterday"), 400)
    response = create(client, activeFrom=sooner, activeTo=later)
    assert response.status_code == 201, response.content


def test_duplicate_name_and_external_ref_are_409(client):
    create(client, externalRef="ref-1")
    assert "name" in assert_error_body(create(client, externalRef="ref-2"), 409)["message"]
    error = assert_error_body(create(client, name="Other", externalRef="ref-1"), 409)
    assert "externalRef" in error["message"]
    assert create(client, name="Third").status_code == 201  # no externalRef: no clash


def test_names_are_unique_per_operator_only(client, globex, api_client):
    create(client)
    assert create(api_client(globex.token)).status_code == 201


# Update


@pytest.fixture
def meter_type(client):
    return create(client, capacity=100).json()


def test_patch_changes_fields(client, meter_type):
    response = client.patch(
        f"{BASE}/{meter_type['id']}",
        {
            "name": "Renamed",
            "capacity": 250.5,
            "category": None,
            "description": "now described",
            "resetSchedule": {"cron": "0 0 * * 1"},
            "timezone": "America/New_York",
            "thresholds": [{"capacityPercentage": 50}],
            "unit": "calls",
            "externalRef": "new-ref",
        },
    )
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["name"] == "Renamed"
    assert data["capacity"] == 250.5
    assert data["category"] == "DEFAULT"
    assert data["resetSchedule"] == {
        "minute": "0",
        "hour": "0",
        "day": "*",
        "month": "*",
        "weekday": "1",
    }
    assert data["thresholds"] == [{"capacityPercentage": 50}]
    assert data["updatedAt"] >= meter_type["updatedAt"]
    assert data["aggregation"] == meter_type["aggregation"]


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"aggregation": {"type": "Max"}}, "aggregation"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"timezone": "Nowhere/City"}, "timezone"),
        ({"capacity": -3}, "capacity"),
        ({"id": "abc"}, "id"),
        ({"createdAt": "2020-01-01T00:00:00Z"}, "createdAt"),
    ],
)
def test_invalid_patches_are_400_and_change_nothing(client, meter_type, fields, field):
    error = assert_error_body(client.patch(f"{BASE}/{meter_type['id']}", fields), 400)
    assert error["details"][0]["field"] == field
    assert client.get(f"{BASE}/{meter_type['id']}").json() == meter_type


def test_patch_to_a_taken_name_is_409(client, meter_type):
    other = create(client, name="Other").json()
    assert_error_body(client.patch(f"{BASE}/{other['id']}", {"name": meter_type["name"]}), 409)


def test_changed_schedule_keeps_existing_meters_periods(client, meter_type):
    meter = client.post(
        "/usage-metering/v1/meters",
        {"meterTypeId": meter_type["id"], "meterKey": "k", "userId": "u"},
    ).json()
    client.patch(f"{BASE}/{meter_type['id']}", {"resetSchedule": {"cron": "0 * * * *"}})
    after = client.get(f"/usage-metering/v1/meters/{meter['id']}").json()
    assert (after["periodStart"], after["periodEnd"]) == (meter["periodStart"], meter["periodEnd"])


# List


def test_list_sorts_filters_and_counts_meters(client):
    for name in ("Beta", "Alpha", "Gamma ray"):
        create(client, name=name)
    alpha_id = next(
        item["id"] for item in client.get(BASE).json()["meterTypes"] if item["name"] == "Alpha"
    )
    client.post(
        "/usage-metering/v1/meters", {"meterTypeId": alpha_id, "meterKey": "k", "userId": "u"}
    )
    listed = client.get(BASE, {"sortBy": "name", "sortOrder": "DESC"}).json()
    assert [item["name"] for item in listed["meterTypes"]] == ["Gamma ray", "Beta", "Alpha"]
    assert listed["total"] == 3
    assert listed["meterTypes"][2]["numberOfMeters"] == 1
    assert [item["name"] for item in client.get(BASE, {"name": "amma"}).json()["meterTypes"]] == [
        "Gamma ray"
    ]


@pytest.mark.parametrize("params", [{"limit": 101}, {"sortBy": "secret"}, {"skip": "x"}])
def test_bad_list_parameters_are_400(client, params):
    assert_error_body(client.get(BASE, params), 400)


def test_list_query_count_is_constant(client, django_assert_max_num_queries):
    for index in range(15):
        create(client, name=f"type {index}")
    with django_assert_max_num_queries(5):
        client.get(BASE, {"limit": 100})


# Delete


def test_delete_answers_deleted_count(client, meter_type):
    response = client.delete(f"{BASE}/{meter_type['id']}")
    assert response.json() == {"deletedCount": 1}
    assert_error_body(client.get(f"{BASE}/{meter_type['id']}"), 404)


def test_delete_with_meters_is_409(client, meter_type):
    client.post(
        "/usage-metering/v1/meters",
        {"meterTypeId": meter_type["id"], "meterKey": "k", "userId": "u"},
    )
    assert_error_body(client.delete(f"{BASE}/{meter_type['id']}"), 409)
    assert MeterType.objects.filter(pk=meter_type["id"]).exists()


# Isolation, scopes and limits


def test_another_operator_gets_404_everywhere(meter_type, globex, api_client):
    intruder = api_client(globex.token)
    url = f"{BASE}/{meter_type['id']}"
    assert_error_body(intruder.get(url), 404)
    assert_error_body(intruder.patch(url, {"name": "pwned"}), 404)
    assert_error_body(intruder.delete(url), 404)
    assert intruder.get(BASE).json() == {"meterTypes": [], "total": 0}
    assert MeterType.objects.get(pk=meter_type["id"]).name == meter_type["name"]


@pytest.mark.parametrize(
    "path", [f"{BASE}/not-a-uuid", f"{BASE}/00000000-0000-0000-0000-000000000000"]
)
def test_unknown_ids_are_404(client, path):
    assert_error_body(client.get(path), 404)


@pytest.mark.parametrize(
    "method, suffix, payload, scope",
    [
        ("get", "", None, "usage-metering:read:meter_types"),
        ("post", "", "body", "usage-metering:create:meter_types"),
        ("get", "/id", None, "usage-metering:read:meter_types"),
        ("patch", "/id", {"unit": "x"}, "usage-metering:update:meter_types"),
        ("delete", "/id", None, "usage-metering:delete:meter_types"),
    ],
)
def test_each_action_requires_its_scope(db, api_client, method, suffix, payload, scope):
    from tenants.scopes import ALL_SCOPES

    owner = make_tenant("Owner")
    existing = create(api_client(owner.token)).json()
    path = BASE + suffix.replace("/id", f"/{existing['id']}")
    data = body(name="Another") if payload == "body" else payload
    kwargs = {"data": data} if data is not None else {}

    lacking = make_tenant("Lacking", scopes=[s for s in ALL_SCOPES if s != scope])
    error = assert_error_body(getattr(api_client(lacking.token), method)(path, **kwargs), 403)
    assert scope in error["message"]

    short = scope.removeprefix("usage-metering:")
    allowed = make_tenant("Short", scopes=[short])
    response = getattr(api_client(allowed.token), method)(path, **kwargs)
    assert response.status_code != 403


def test_rate_limit_is_twenty_per_second_burst_five(client, settings):
    from config.rate_limits import DEFAULT_RATE_LIMITS

    assert DEFAULT_RATE_LIMITS["meter-types"] == {"rate": 20, "burst": 5}
    settings.TALLY["RATE_LIMITS"]["meter-types"] = {"rate": 0.001, "burst": 5}
    statuses = [client.get(BASE).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
