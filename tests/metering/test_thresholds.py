"""Thresholds: fire when the value reaches them, once per meter, period and threshold."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from metering.models import Alert, Meter, MeterType, Notification
from metering.resets import meters_reset_due
from metering.thresholds import (
    Threshold,
    ThresholdsInvalid,
    thresholds_evaluate,
    thresholds_parse,
    thresholds_to_stored,
)
from tests.metering.meter_helpers import make_meter, make_type, utc

pytestmark = pytest.mark.django_db

NOW = utc(2026, 5, 1, 12)
SUM, INCREMENT = MeterType.Aggregation.SUM, MeterType.Aggregation.INCREMENT
MAX, MIN = MeterType.Aggregation.MAX, MeterType.Aggregation.MIN


def set_value(meter: Meter, value, records: int = 1) -> Meter:
    """The meter as usage would leave it, reloaded with its type."""
    Meter.objects.filter(pk=meter.pk).update(value=Decimal(value), record_count=records)
    return Meter.objects.select_related("meter_type").get(pk=meter.pk)


def fired(meter, value, records: int = 1, now=NOW) -> list[str]:
    alerts = thresholds_evaluate(meters=[set_value(meter, value, records)], now=now)
    return sorted(alert.threshold_key for alert in alerts)


@pytest.mark.parametrize("aggregation", [SUM, INCREMENT, MAX])
def test_a_threshold_fires_when_the_value_reaches_it(acme, aggregation):
    meter_type = make_type(acme.operator, aggregation=aggregation, thresholds=[{"value": 800}])
    meter = make_meter(meter_type, at=NOW)

    assert fired(meter, "799.9999") == []
    assert fired(meter, 800) == ["absoluteValue:800"]  # >=: reaching it is enough
    assert fired(meter, 900) == []  # once per period

    alert = Alert.objects.get()
    assert (alert.meter_id, alert.period_start) == (meter.pk, meter.period_start)
    assert (alert.threshold_value, alert.meter_value) == (800, 800)


def test_a_min_threshold_fires_when_the_value_falls_to_it(acme):
    meter_type = make_type(acme.operator, aggregation=MIN, thresholds=[{"value": 10}])
    meter = make_meter(meter_type, at=NOW)

    assert fired(meter, 0, records=0) == []  # no record yet: no value, nothing reached
    assert fired(meter, "10.5") == []
    assert fired(meter, 10) == ["absoluteValue:10"]  # <=
    assert fired(meter, 3) == []


def test_percentage_of_capacity_uses_the_meters_capacity_over_the_types(acme):
    meter_type = make_type(
        acme.operator, capacity=Decimal(1000), thresholds=[{"capacityPercentage": 80}]
    )
    own = make_meter(meter_type, at=NOW, user_id="alice", capacity=Decimal(100))
    inherited = make_meter(meter_type, at=NOW, user_id="bob")

    assert fired(own, 79) == []
    assert fired(own, 80) == ["capacityPercentage:80"]
    assert fired(inherited, 80) == []
    assert fired(inherited, 799) == []
    assert fired(inherited, 800) == ["capacityPercentage:80"]
    assert Alert.objects.get(meter=inherited).threshold_value == 800


def test_a_percentage_without_any_capacity_never_fires(acme):
    meter_type = make_type(acme.operator, thresholds=[{"capacityPercentage": 50}])
    meter = make_meter(meter_type, at=NOW)

    assert fired(meter, 10**9) == []


def test_the_meters_own_thresholds_replace_the_types(acme):
    meter_type = make_type(acme.operator, thresholds=[{"value": 5}])
    meter = make_meter(meter_type, at=NOW, thresholds=[{"value": 50}, {"value": 60}])
    silent = make_meter(meter_type, at=NOW, user_id="bob", thresholds=[])

    assert fired(meter, 55) == ["absoluteValue:50"]
    assert fired(meter, 60) == ["absoluteValue:60"]
    assert fired(silent, 100) == []


def test_each_threshold_fires_once_even_when_several_are_crossed_at_once(acme):
    thresholds = [{"value": 10}, {"value": 20}, {"value": 20.0}, {"value": 30}]
    meter_type = make_type(acme.operator, thresholds=[{"value": 10}])
    meter = make_meter(meter_type, at=NOW, thresholds=thresholds)

    assert fired(meter, 25) == [
        "absoluteValue:10",
        "absoluteValue:20",
    ]  # 20 and 20.0 are one threshold
    assert fired(meter, 25) == []
    assert Alert.objects.count() == 2


def test_a_threshold_fires_again_after_a_reset(acme):
    meter_type = make_type(acme.operator, cron="0 * * * *", thresholds=[{"value": 3}])
    meter = make_meter(meter_type, at=NOW)

    assert fired(meter, 3) == ["absoluteValue:3"]
    meters_reset_due(now=NOW + datetime.timedelta(hours=1))
    assert fired(meter, 2, now=NOW + datetime.timedelta(hours=1)) == []
    assert fired(meter, 4, now=NOW + datetime.timedelta(hours=1)) == ["absoluteValue:3"]

    starts = sorted(Alert.objects.values_list("period_start", flat=True))
    assert starts == [utc(2026, 5, 1, 12), utc(2026, 5, 1, 13)]


def test_each_new_alert_is_queued_as_a_notification(acme):
    meter_type = make_type(acme.operator, name="storage", capacity=Decimal(200))
    meter = make_meter(meter_type, at=NOW, thresholds=[{"capacityPercentage": 12.5}])

    (alert,) = thresholds_evaluate(meters=[set_value(meter, "25.5")], now=NOW)
    thresholds_evaluate(meters=[set_value(meter, 30)], now=NOW)

    notification = Notification.objects.get()
    assert notification.kind == Notification.Kind.THRESHOLD_CROSSED
    assert notification.operator_id == acme.operator.pk
    assert notification.payload == {
        "alertId": str(alert.id),
        "meterId": str(meter.pk),
        "meterTypeId": str(meter_type.pk),
        "meterTypeName": "storage",
        "userId": "alice",
        "meterKey": "m1",
        "threshold": {"capacityPercentage": 12.5},
        "thresholdName": None,
        "customFields": None,
        "thresholdValue": 25,
        "meterValue": 25.5,
        "periodStart": "2026-05-01T00:00:00.000Z",
        "periodEnd": "2026-05-02T00:00:00.000Z",
        "crossedAt": "2026-05-01T12:00:00.000Z",
    }


def test_evaluating_many_meters_takes_two_statements(acme, django_assert_num_queries):
    meter_type = make_type(acme.operator, thresholds=[{"value": 1}, {"value": 2}])
    meters = []
    for index in range(10):
        meter = make_meter(meter_type, at=NOW, user_id=f"user-{index}")
        meters.append(set_value(meter, 5))

    with django_assert_num_queries(2):  # INSERT … ON CONFLICT … RETURNING, COPY notifications
        assert len(thresholds_evaluate(meters=meters, now=NOW)) == 20


def test_a_late_record_in_a_closed_period_never_fires_the_current_periods_threshold(acme):
    from metering.models import MeterPeriod
    from metering.usage import UsageUpdate, usage_apply

    meter_type = make_type(acme.operator, cron="0 0 * * *", thresholds=[{"value": 10}])

    def record(value, at, now):
        update = UsageUpdate(
            meter_type_id=meter_type.pk,
            category=None,
            meter_key="m1",
            user_id="alice",
            value=Decimal(value),
            event_time=at,
        )
        return usage_apply(operator=acme.operator, updates=[update], now=now)

    yesterday, today = utc(2026, 5, 1, 12), utc(2026, 5, 2, 12)
    assert record(4, at=yesterday, now=yesterday).alerts == []
    meters_reset_due(now=today)

    late = record(50, at=yesterday, now=today)  # lands in yesterday's closed period

    assert late.late_applied == 1 and late.alerts == []
    assert not Alert.objects.exists()
    assert MeterPeriod.objects.get().value == 54
    meter = Meter.objects.get()
    assert (meter.value, meter.period_start) == (0, utc(2026, 5, 2))
    # Usage in the current period still fires it, once.
    assert [alert.threshold_key for alert in record(10, at=today, now=today).alerts] == [
        "absoluteValue:10"
    ]
    assert Alert.objects.get().period_start == utc(2026, 5, 2)


@pytest.mark.parametrize(
    ("item", "path", "problem"),
    [
        ({"value": 800}, None, None),
        ({"absoluteValue": 0}, None, None),
        ({"value": Decimal("0.5")}, None, None),
        ({"capacityPercentage": 80}, None, None),
        ({"capacityPercentage": 120.5, "name": "x" * 100, "customFields": {}}, None, None),
        ({"absoluteValue": -1}, "[0].absoluteValue", "0 or more"),
        ({"value": "800"}, "[0].value", "Must be a number."),
        ({"value": True}, "[0].value", "Must be a number."),
        ({"value": float("nan")}, "[0].value", "finite"),
        ({"absoluteValue": Decimal("Infinity")}, "[0].absoluteValue", "finite"),
        ({"absoluteValue": Decimal("0.00000000001")}, "[0].absoluteValue", "after it"),
        ({"absoluteValue": Decimal("1e25")}, "[0].absoluteValue", "before the point"),
        ({"capacityPercentage": Decimal("3.4e307")}, "[0].capacityPercentage", "before the point"),
        ({"capacityPercentage": 0}, "[0].capacityPercentage", "more than 0"),
        ({"capacityPercentage": None}, "[0].capacityPercentage", "Must be a number."),
        ({}, "[0]", "exactly one"),
        ({"value": 1, "absoluteValue": 1}, "[0]", "exactly one"),
        ({"value": 1, "capacityPercentage": 2}, "[0]", "exactly one"),
        ({"percent": 2, "value": 1}, "[0].percent", "Unknown field."),
        ({"value": 1, "name": ""}, "[0].name", "1 to 100"),
        ({"value": 1, "name": "x" * 101}, "[0].name", "1 to 100"),
        ({"value": 1, "name": 5}, "[0].name", "Must be a string."),
        ({"value": 1, "customFields": []}, "[0].customFields", "JSON object"),
        ({"value": 1, "customFields": {"a": "x" * 4096}}, "[0].customFields", "4096 bytes"),
        ([{"value": 1}], "[0]", "Must be an object."),
    ],
)
def test_thresholds_parse_names_what_is_wrong(item, path, problem):
    if problem is None:
        (threshold,) = thresholds_parse([item])
        assert threshold.to_wire()[threshold.kind] == threshold.number
        return
    with pytest.raises(ThresholdsInvalid) as raised:
        thresholds_parse([item])
    assert any(p == path and problem in message for p, message in raised.value.problems), (
        raised.value.problems
    )


def test_thresholds_parse_checks_the_list_as_a_whole():
    with pytest.raises(ThresholdsInvalid) as raised:
        thresholds_parse([{"value": 1}] * 6)
    assert raised.value.problems == [("", "At most 5 thresholds are allowed.")]
    with pytest.raises(ThresholdsInvalid) as raised:
        thresholds_parse([{"value": 1, "name": "A"}, {"capacityPercentage": 5, "name": "A"}])
    assert raised.value.problems == [("[1].name", "Another threshold in this list has this name.")]
    with pytest.raises(ThresholdsInvalid):
        thresholds_parse({"value": 1})


def test_stored_thresholds_read_back_as_they_were_parsed():
    parsed = thresholds_parse(
        [
            {"name": "EMAIL", "capacityPercentage": 90, "customFields": {"action": "EMAIL"}},
            {"value": Decimal("10000.50")},
        ]
    )
    stored = thresholds_to_stored(parsed)
    assert stored == [
        {
            "kind": "capacityPercentage",
            "number": "90",
            "name": "EMAIL",
            "customFields": {"action": "EMAIL"},
        },
        {"kind": "absoluteValue", "number": "10000.5"},
    ]
    assert [Threshold.from_stored(item) for item in stored] == parsed
    assert [t.key for t in parsed] == ["capacityPercentage:90#EMAIL", "absoluteValue:10000.5"]
