"""Thresholds from where users set them (the API, the admin form, the demo) to the alert
and the webhook that downstream systems route on; meter periods as users see them."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import pytest
from django.utils import timezone

from metering.demo import load_demo
from metering.models import Alert, Meter, MeterPeriod, MeterType, Notification
from metering.notifications import notifications_deliver_due, webhook_endpoint_set
from metering.resets import meters_reset_due
from metering.schedule import next_fire
from metering.services import meter_create
from metering.thresholds import thresholds_from_stored
from metering.usage import UsageUpdate, usage_apply
from tenants.services import operator_create
from tests.factories import MeterTypeFactory
from tests.metering.test_admin import threshold_rows
from tests.metering.webhooks import Receiver

pytestmark = pytest.mark.django_db

TYPES = "/usage-metering/v1/meter-types"
METERS = "/usage-metering/v1/meters"
THRESHOLDS = [
    {"name": "NEARLY_FULL", "capacityPercentage": 80, "customFields": {"action": "EMAIL"}},
    {"name": "FULL", "absoluteValue": 1000, "customFields": {"action": "DEACTIVATE"}},
]


def use(operator, meter_type_id, *amounts, user="printer-1"):
    """One usage_apply call per amount, as separate batches of a stream would."""
    results = []
    for amount in amounts:
        update = UsageUpdate(
            meter_type_id=meter_type_id,
            category=None,
            meter_key="pages",
            user_id=user,
            value=Decimal(amount),
            event_time=timezone.now(),
        )
        results.append(usage_apply(operator=operator, updates=[update]))
    return results


def deliveries(receiver: Receiver) -> list[dict]:
    notifications_deliver_due()
    return [json.loads(body) for _, body in receiver.requests]


def assert_fired_once_each(operator, receiver, results, meter_id):
    fired = [[alert.threshold_name for alert in result.alerts] for result in results]
    # 500: nothing; 400 (900 >= 80 % of 1000): NEARLY_FULL; 200 (1100): FULL; 50: nothing.
    assert fired == [[], ["NEARLY_FULL"], ["FULL"], []]
    alerts = Alert.objects.filter(operator=operator).order_by("crossed_at", "threshold_name")
    assert [(a.threshold_name, a.threshold_value, a.meter_value) for a in alerts] == [
        ("NEARLY_FULL", 800, 900),
        ("FULL", 1000, 1100),
    ]
    assert {str(a.meter_id) for a in alerts} == {str(meter_id)}

    sent = deliveries(receiver)
    assert [event["type"] for event in sent] == ["meter.threshold_crossed"] * 2
    by_name = {event["data"]["thresholdName"]: event["data"] for event in sent}
    assert by_name["NEARLY_FULL"]["customFields"] == {"action": "EMAIL"}
    assert by_name["NEARLY_FULL"]["threshold"] == THRESHOLDS[0]
    assert by_name["NEARLY_FULL"]["thresholdValue"] == 800
    assert by_name["FULL"]["customFields"] == {"action": "DEACTIVATE"}
    assert by_name["FULL"]["threshold"] == THRESHOLDS[1]
    assert by_name["FULL"]["meterValue"] == 1100


def test_thresholds_set_through_the_api_fire_once_and_reach_the_webhook(acme, client, receiver):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    meter_type = client.post(
        TYPES,
        {
            "name": "Pay-Per-Print",
            "unit": "sheets",
            "aggregation": {"type": "sum"},
            "resetSchedule": {"minute": "0", "hour": "0", "day": "1", "month": "*", "weekday": "*"},
            "timezone": "Etc/UTC",
            "capacity": 1000,
            "thresholds": THRESHOLDS,
        },
    ).json()
    meter = client.post(
        METERS, {"meterTypeId": meter_type["id"], "meterKey": "pages", "userId": "printer-1"}
    )
    assert meter.status_code == 201, meter.content

    results = use(acme.operator, meter_type["id"], 500, 400, 200, 50)

    assert_fired_once_each(acme.operator, receiver, results, meter.json()["id"])
    assert Meter.objects.get().value == 1150


def test_thresholds_set_through_the_admin_form_fire_once_and_reach_the_webhook(
    acme, client, receiver, staff_user
):
    from django.test import Client

    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    browser = Client()
    browser.force_login(staff_user)
    response = browser.post(
        "/admin/metering/metertype/add/",
        {
            "operator": acme.operator.pk,
            "name": "Pay-Per-Print",
            "external_ref": "",
            "category": "Printing",
            "description": "",
            "unit": "sheets",
            "aggregation": "Sum",
            "capacity": "1000",
            "timezone": "Etc/UTC",
            "reset_cron": "0 0 1 * *",
            **threshold_rows(
                ("NEARLY_FULL", "capacityPercentage", "80", '{"action": "EMAIL"}'),
                ("FULL", "absoluteValue", "1000", '{"action": "DEACTIVATE"}'),
            ),
            "active_from_0": "",
            "active_from_1": "",
            "active_to_0": "",
            "active_to_1": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    meter_type = MeterType.objects.get(name="Pay-Per-Print")
    # The API reads back what the admin stored.
    assert client.get(f"{TYPES}/{meter_type.pk}").json()["thresholds"] == THRESHOLDS

    results = use(acme.operator, meter_type.pk, 500, 400, 200, 50)

    assert_fired_once_each(acme.operator, receiver, results, Meter.objects.get().pk)


def test_the_demos_thresholds_fire_where_its_usage_crosses_them():
    operator = operator_create(name="Demo")
    load_demo(operator=operator)

    expected, crossed_somewhere = set(), False
    meters = Meter.objects.filter(operator=operator).select_related("meter_type")
    for meter in meters:
        meter_type = meter.meter_type
        thresholds = thresholds_from_stored(meter_type.thresholds)
        assert thresholds, f"{meter_type.name} has no thresholds"
        periods = [(meter.period_start, meter.value, meter.record_count)] + [
            (p.period_start, p.value, p.record_count)
            for p in MeterPeriod.objects.filter(meter=meter)
        ]
        for period_start, value, records in periods:
            for threshold in thresholds:
                level = threshold.level(meter_type.capacity)
                if records and value >= level:
                    expected.add((meter.pk, period_start, threshold.key))
                    crossed_somewhere = True
    fired = set(
        Alert.objects.filter(operator=operator).values_list(
            "meter_id", "period_start", "threshold_key"
        )
    )
    assert crossed_somewhere
    assert fired == expected
    kinds = Notification.objects.filter(operator=operator).values_list("kind", flat=True)
    assert Notification.Kind.THRESHOLD_CROSSED in set(kinds)


def test_a_meter_created_mid_period_starts_at_its_creation_then_runs_fire_to_fire(client):
    meter_type = client.post(
        TYPES,
        {
            "name": "Monthly",
            "unit": "sheets",
            "aggregation": {"type": "sum"},
            "resetSchedule": {"minute": "0", "hour": "0", "day": "1", "month": "*", "weekday": "*"},
            "timezone": "Etc/UTC",
        },
    ).json()
    before = timezone.now()
    meter = client.post(
        METERS, {"meterTypeId": meter_type["id"], "meterKey": "k", "userId": "u"}
    ).json()
    first_end = next_fire("0 0 1 * *", "Etc/UTC", before)
    assert meter["periodStart"] == meter["createdAt"]
    assert parse(meter["periodStart"]) >= before.replace(
        microsecond=before.microsecond // 1000 * 1000
    )
    assert parse(meter["periodEnd"]) == first_end
    assert first_end.day == 1 and first_end.hour == 0

    meters_reset_due(now=first_end + datetime.timedelta(minutes=1))

    after = client.get(f"{METERS}/{meter['id']}").json()
    assert parse(after["periodStart"]) == first_end
    assert parse(after["periodEnd"]) == next_fire("0 0 1 * *", "Etc/UTC", first_end)
    (period,) = client.get(f"{METERS}/{meter['id']}/periods").json()["periods"]
    assert (period["periodStart"], parse(period["periodEnd"])) == (meter["periodStart"], first_end)


def test_a_monthly_meter_created_on_the_10th_runs_to_the_1st(acme):
    meter_type = MeterTypeFactory(
        operator=acme.operator, name="Monthly", reset_cron="0 0 1 * *", timezone="Europe/Berlin"
    )
    tenth = datetime.datetime(2026, 1, 10, 9, 30, tzinfo=datetime.UTC)
    meter = meter_create(
        operator=acme.operator, meter_type=meter_type, meter_key="k", user_id="u", now=tenth
    )
    assert (meter.period_start, meter.period_end) == (
        tenth,
        datetime.datetime(2026, 1, 31, 23, tzinfo=datetime.UTC),  # 1 Feb 00:00 in Berlin
    )
    # Usage from before the meter existed counts in that first period.
    early = UsageUpdate(
        meter_type.pk, None, "k", "u", Decimal(3), tenth - datetime.timedelta(days=2)
    )
    result = usage_apply(operator=acme.operator, updates=[early], now=tenth)
    assert (result.applied, result.late_applied, result.late_unmatched) == (1, 0, 0)
    assert Meter.objects.get().value == 3


def parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
