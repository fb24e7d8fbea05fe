"""Meter types as the reference product's clients send them: crontab-field schedules,
aggregation in any case, named thresholds with custom fields, over HTTP."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from tests.conftest import assert_error_body

pytestmark = pytest.mark.django_db

TYPES = "/usage-metering/v1/meter-types"
METERS = "/usage-metering/v1/meters"

# The reference product's public example streams, read where they lie (see their README).
STREAM_FIXTURES = Path(__file__).resolve().parents[3] / "shared/fixtures/usage-engine-streams"

# The body the example stream `provisioning-meter-types.json` sends (its script builds
# this object and POSTs it; the first test checks that against the file).
PAY_PER_PRINT = {
    "name": "Pay-Per-Print",
    "description": "This product charges customers based on total number of prints taken.",
    "unit": "sheets",
    "category": "Printing",
    "aggregation": {"type": "sum"},
    "resetSchedule": {"day": "1", "hour": "0", "minute": "0", "month": "*", "weekday": "*"},
    "timezone": "Etc/UTC",
    "capacity": 10000,
    "thresholds": [
        {
            "name": "EMAIL_MAINTENANCE",
            "capacityPercentage": 90,
            "customFields": {"action": "EMAIL_MAINTENANCE"},
        },
        {
            "name": "DEACTIVATE_PRINTER",
            "absoluteValue": 10000,
            "customFields": {"action": "DEACTIVATE_PRINTER"},
        },
    ],
}
MONTHLY = {"minute": "0", "hour": "0", "day": "1", "month": "*", "weekday": "*"}


@pytest.fixture(autouse=True)
def _generous_limits(settings):
    settings.TALLY["RATE_LIMITS"]["meter-types"] = {"rate": 1000, "burst": 1000}
    settings.TALLY["RATE_LIMITS"]["meters"] = {"rate": 1000, "burst": 1000}


def body(**changes) -> dict:
    data = copy.deepcopy(PAY_PER_PRINT)
    data.update(changes)
    return data


def meter_type_in_the_provisioning_stream() -> dict:
    """The object literal the provisioning stream's script builds, as JSON."""
    stream = json.loads((STREAM_FIXTURES / "provisioning-meter-types.json").read_text())
    (script,) = [
        node["params"]["transform"]
        for node in stream["nodes"]
        if "const meterType" in str(node.get("params", {}).get("transform", ""))
    ]
    literal = script[script.index("{") : script.index("};") + 1]
    literal = literal.replace("'", '"')
    literal = re.sub(r"([{,\s])(\w+)\s*:", r'\1"\2":', literal)  # quote the keys
    literal = re.sub(r",\s*([}\]])", r"\1", literal)  # drop trailing commas
    return json.loads(literal)


def test_the_provisioning_streams_body_is_accepted_as_it_is(client):
    sent = meter_type_in_the_provisioning_stream()
    assert sent["thresholds"] == PAY_PER_PRINT["thresholds"]
    response = client.post(TYPES, sent)
    assert response.status_code == 201, response.content
    assert response.json()["thresholds"] == sent["thresholds"]


def test_the_reference_clients_body_is_created_and_read_back_in_its_own_form(client):
    response = client.post(TYPES, PAY_PER_PRINT)
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["aggregation"] == {"type": "Sum"}
    assert created["resetSchedule"] == MONTHLY
    assert created["thresholds"] == PAY_PER_PRINT["thresholds"]
    assert created["capacity"] == 10000
    assert created["category"] == "Printing"

    fetched = client.get(f"{TYPES}/{created['id']}").json()
    assert fetched == created
    (listed,) = client.get(TYPES).json()["meterTypes"]
    assert listed == created


@pytest.mark.parametrize(
    "changes",
    [
        # `value` for absoluteValue, and the cron shorthand.
        {
            "thresholds": [
                {"name": "EMAIL_MAINTENANCE", "capacityPercentage": 90,
                 "customFields": {"action": "EMAIL_MAINTENANCE"}},
                {"name": "DEACTIVATE_PRINTER", "value": 10000,
                 "customFields": {"action": "DEACTIVATE_PRINTER"}},
            ]
        },
        {"resetSchedule": {"cron": "0 0 1 * *"}},
        {"resetSchedule": {"minute": 0, "hour": 0, "day": 1, "month": "*", "weekday": "*"}},
    ],
)  # fmt: skip
def test_synonyms_are_answered_in_the_reference_form(client, changes):
    response = client.post(TYPES, body(**changes))
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["resetSchedule"] == MONTHLY
    assert data["thresholds"] == PAY_PER_PRINT["thresholds"]


@pytest.mark.parametrize(
    ("spelled", "answered"),
    [
        ("sum", "Sum"),
        ("SUM", "Sum"),
        ("Sum", "Sum"),
        ("increment", "Increment"),
        ("MAX", "Max"),
        ("mIn", "Min"),
    ],
)
def test_aggregation_is_read_in_any_letter_case(client, spelled, answered):
    response = client.post(TYPES, body(name=f"agg {spelled}", aggregation={"type": spelled}))
    assert response.status_code == 201, response.content
    assert response.json()["aggregation"] == {"type": answered}


def test_crontab_fields_take_crontab_syntax(client):
    schedule = {
        "minute": "*/15",
        "hour": "8-17",
        "day": "*",
        "month": "JAN,JUL",
        "weekday": "MON-FRI",
    }
    response = client.post(TYPES, body(resetSchedule=schedule))
    assert response.status_code == 201, response.content
    assert response.json()["resetSchedule"] == schedule
    # A PATCH in the same form replaces it; GET answers what was sent.
    changed = {**MONTHLY, "day": "L"}
    patched = client.patch(f"{TYPES}/{response.json()['id']}", {"resetSchedule": changed})
    assert patched.status_code == 200, patched.content
    assert client.get(f"{TYPES}/{response.json()['id']}").json()["resetSchedule"] == changed


@pytest.mark.parametrize(
    ("schedule", "field", "message"),
    [
        ({**MONTHLY, "minute": "60"}, "resetSchedule.minute", "minute"),
        ({**MONTHLY, "hour": "24"}, "resetSchedule.hour", "hour"),
        ({**MONTHLY, "hour": "*/0"}, "resetSchedule.hour", "hour"),
        ({**MONTHLY, "day": "0"}, "resetSchedule.day", "day"),
        ({**MONTHLY, "month": "13"}, "resetSchedule.month", "month"),
        ({**MONTHLY, "weekday": "8"}, "resetSchedule.weekday", "weekday"),
        ({**MONTHLY, "weekday": "FUNDAY"}, "resetSchedule.weekday", "weekday"),
        ({**MONTHLY, "hour": ""}, "resetSchedule.hour", "one crontab field"),
        ({**MONTHLY, "hour": "0 0"}, "resetSchedule.hour", "one crontab field"),
        ({**MONTHLY, "hour": True}, "resetSchedule.hour", "one crontab field"),
        ({**MONTHLY, "hour": None}, "resetSchedule.hour", "required"),
        ({k: v for k, v in MONTHLY.items() if k != "weekday"}, "resetSchedule.weekday", "required"),
        ({**MONTHLY, "second": "0"}, "resetSchedule.second", "Unknown field"),
        ({**MONTHLY, "day": "30", "month": "2"}, "resetSchedule.day", "day-of-month"),
        ({**MONTHLY, "cron": "0 0 1 * *"}, "resetSchedule", "not both"),
        ({"cron": "0 0 1 *"}, "resetSchedule.cron", "5-field"),
        ("0 0 1 * *", "resetSchedule", "Must be an object"),
    ],
)
def test_every_bad_schedule_field_is_named(client, schedule, field, message):
    response = client.post(TYPES, body(resetSchedule=schedule))
    error = assert_error_body(response, 400)
    assert any(d["field"] == field and message in d["message"] for d in error["details"]), error


@pytest.mark.parametrize(
    ("thresholds", "field", "message"),
    [
        ([{"absoluteValue": 1, "capacityPercentage": 5}], "thresholds[0]", "exactly one"),
        ([{"absoluteValue": 1, "value": 1}], "thresholds[0]", "exactly one"),
        ([{"name": "A"}], "thresholds[0]", "exactly one"),
        ([{"absoluteValue": -1}], "thresholds[0].absoluteValue", "0 or more"),
        ([{"value": -1}], "thresholds[0].value", "0 or more"),
        ([{"capacityPercentage": -5}], "thresholds[0].capacityPercentage", "more than 0"),
        ([{"capacityPercentage": "90"}], "thresholds[0].capacityPercentage", "number"),
        (
            [{"name": "A", "absoluteValue": 1}, {"name": "A", "absoluteValue": 2}],
            "thresholds[1].name",
            "Another threshold",
        ),
        ([{"name": "x" * 101, "absoluteValue": 1}], "thresholds[0].name", "1 to 100"),
        ([{"absoluteValue": 1}] * 6, "thresholds", "At most 5"),
        ([{"absoluteValue": 1, "customFields": "EMAIL"}], "thresholds[0].customFields", "object"),
        ([{"absoluteValue": 1, "customFields": ["a"]}], "thresholds[0].customFields", "object"),
        (
            [{"absoluteValue": 1, "customFields": {"blob": "x" * 5000}}],
            "thresholds[0].customFields",
            "4096 bytes",
        ),
        ([{"absoluteValue": 1, "level": 2}], "thresholds[0].level", "Unknown field"),
        ({"absoluteValue": 1}, "thresholds", "list"),
        (["EMAIL"], "thresholds[0]", "object"),
    ],
)
def test_every_bad_threshold_is_named(client, thresholds, field, message):
    response = client.post(TYPES, body(thresholds=thresholds))
    error = assert_error_body(response, 400)
    assert any(d["field"] == field and message in d["message"] for d in error["details"]), error


def test_a_meters_own_thresholds_use_the_same_form(client):
    meter_type = client.post(TYPES, PAY_PER_PRINT).json()
    meter = client.post(
        METERS, {"meterTypeId": meter_type["id"], "meterKey": "printer", "userId": "101"}
    ).json()
    assert meter["thresholds"] == PAY_PER_PRINT["thresholds"]

    own = [{"name": "LOW", "value": 5.5, "customFields": {"level": 1.25, "tags": ["a"]}}]
    response = client.patch(f"{METERS}/{meter['id']}", {"thresholds": own})
    assert response.status_code == 200, response.content
    expected = [
        {"name": "LOW", "absoluteValue": 5.5, "customFields": {"level": 1.25, "tags": ["a"]}}
    ]
    assert response.json()["thresholds"] == expected
    assert client.get(f"{METERS}/{meter['id']}").json()["thresholds"] == expected

    bad = client.patch(f"{METERS}/{meter['id']}", {"thresholds": [{"capacityPercentage": 0}]})
    error = assert_error_body(bad, 400)
    assert error["details"][0]["field"] == "thresholds[0].capacityPercentage"


def test_custom_fields_keep_exact_numbers(client):
    """Fractions in free-form custom fields are stored and answered exactly as sent."""
    meter_type = client.post(TYPES, PAY_PER_PRINT).json()
    raw = (
        '{"meterTypeId": "' + meter_type["id"] + '", "meterKey": "printer", "userId": "102",'
        ' "customFields": {"rate": 0.1, "big": 12345678901234567890.123456789}}'
    )
    response = client.post(METERS, raw)
    assert response.status_code == 201, response.content
    assert b'"rate":0.1' in response.content
    assert b'"big":12345678901234567890.123456789' in response.content
    fetched = client.get(f"{METERS}/{response.json()['id']}")
    assert b'"big":12345678901234567890.123456789' in fetched.content
