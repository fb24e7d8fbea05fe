"""Thresholds: fire when the value reaches them, once per meter, period and threshold."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from metering.models import Alert, Meter, MeterType, Notification
from metering.resets import meters_reset_due
from metering.thresholds import threshold_problem, thresholds_evaluate
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
    assert fired(meter, 800) == ["value:800"]  # >=: reaching it is enough
    assert fired(meter, 900) == []  # once per period

    alert = Alert.objects.get()
    assert (alert.meter_id, alert.period_start) == (meter.pk, meter.period_start)
    assert (alert.threshold_value, alert.meter_value) == (800, 800)


def test_a_min_threshold_fires_when_the_value_falls_to_it(acme):
    meter_type = make_type(acme.operator, aggregation=MIN, thresholds=[{"value": 10}])
    meter = make_meter(meter_type, at=NOW)

    assert fired(meter, 0, records=0) == []  # no record yet: no value, nothing reached
    assert fired(meter, "10.5") == []
    assert fired(meter, 10) == ["value:10"]  # <=
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

    assert fired(meter, 55) == ["value:50"]
    assert fired(meter, 60) == ["value:60"]
    assert fired(silent, 100) == []


def test_each_threshold_fires_once_even_when_several_are_crossed_at_once(acme):
    thresholds = [{"value": 10}, {"value": 20}, {"value": 20.0}, {"value": 30}]
    meter_type = make_type(acme.operator, thresholds=[{"value": 10}])
    meter = make_meter(meter_type, at=NOW, thresholds=thresholds)

    assert fired(meter, 25) == ["value:10", "value:20"]  # 20 and 20.0 are one threshold
    assert fired(meter, 25) == []
    assert Alert.objects.count() == 2


def test_a_threshold_fires_again_after_a_reset(acme):
    meter_type = make_type(acme.operator, cron="0 * * * *", thresholds=[{"value": 3}])
    meter = make_meter(meter_type, at=NOW)

    assert fired(meter, 3) == ["value:3"]
    meters_reset_due(now=NOW + datetime.timedelta(hours=1))
    assert fired(meter, 2, now=NOW + datetime.timedelta(hours=1)) == []
    assert fired(meter, 4, now=NOW + datetime.timedelta(hours=1)) == ["value:3"]

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
    assert [alert.threshold_key for alert in record(10, at=today, now=today).alerts] == ["value:10"]
    assert Alert.objects.get().period_start == utc(2026, 5, 2)


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"value": 800}, None),
        ({"value": 0}, None),
        ({"value": Decimal("0.5")}, None),
        ({"capacityPercentage": 80}, None),
        ({"capacityPercentage": 120.5}, None),
        ({"value": -1}, '"value" must be 0 or more.'),
        ({"value": "800"}, '"value" must be a number.'),
        ({"value": True}, '"value" must be a number.'),
        ({"value": float("nan")}, '"value" must be a number.'),
        ({"capacityPercentage": 0}, '"capacityPercentage" must be more than 0.'),
        ({"capacityPercentage": None}, '"capacityPercentage" must be a number.'),
        ({}, "exactly one key"),
        ({"value": 1, "capacityPercentage": 2}, "exactly one key"),
        ({"percent": 2}, "exactly one key"),
        ([{"value": 1}], "exactly one key"),
    ],
)
def test_threshold_problem_explains_what_is_wrong(item, problem):
    found = threshold_problem(item)
    if problem is None:
        assert found is None
    else:
        assert problem in found
