"""Data migrations keep what was stored: thresholds move to their stored form."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("metering", "0003_hot_update_fillfactor")]
AFTER = [("metering", "0004_threshold_wire_format")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_thresholds_and_alert_keys_move_to_the_new_form():
    apps = migrate(BEFORE)
    operator = apps.get_model("tenants", "Operator").objects.create(name="Old")
    MeterType = apps.get_model("metering", "MeterType")
    Meter = apps.get_model("metering", "Meter")
    Customer = apps.get_model("metering", "Customer")
    Alert = apps.get_model("metering", "Alert")
    moment = datetime.datetime(2026, 5, 1, tzinfo=datetime.UTC)
    api_written = MeterType.objects.create(
        operator=operator,
        name="API",
        unit="u",
        aggregation="Sum",
        reset_cron="0 0 1 * *",
        thresholds=[{"capacityPercentage": "80"}, {"value": "19000.50"}],
    )
    orm_written = MeterType.objects.create(
        operator=operator,
        name="ORM",
        unit="u",
        aggregation="Max",
        reset_cron="0 0 * * *",
        thresholds=[{"value": 800}],
    )
    customer = Customer.objects.create(operator=operator, external_id="alice")
    meter = Meter.objects.create(
        operator=operator,
        meter_type=api_written,
        customer=customer,
        meter_key="k",
        user_id="alice",
        thresholds=[{"value": 5}],
        period_start=moment,
        period_end=moment + datetime.timedelta(days=30),
    )
    inheriting = Meter.objects.create(
        operator=operator,
        meter_type=orm_written,
        customer=customer,
        meter_key="k",
        user_id="alice",
        thresholds=None,
        period_start=moment,
        period_end=moment + datetime.timedelta(days=1),
    )
    Alert.objects.create(
        operator=operator,
        meter=meter,
        period_start=moment,
        threshold_key="value:5",
        threshold_value=5,
        meter_value=6,
    )

    try:
        apps = migrate(AFTER)
        MeterType = apps.get_model("metering", "MeterType")
        Meter = apps.get_model("metering", "Meter")
        Alert = apps.get_model("metering", "Alert")
        assert MeterType.objects.get(pk=api_written.pk).thresholds == [
            {"kind": "capacityPercentage", "number": "80"},
            {"kind": "absoluteValue", "number": "19000.5"},
        ]
        assert MeterType.objects.get(pk=orm_written.pk).thresholds == [
            {"kind": "absoluteValue", "number": "800"}
        ]
        assert Meter.objects.get(pk=meter.pk).thresholds == [
            {"kind": "absoluteValue", "number": "5"}
        ]
        assert Meter.objects.get(pk=inheriting.pk).thresholds is None
        alert = Alert.objects.get()
        assert alert.threshold_key == "absoluteValue:5"
        assert alert.threshold == {"kind": "absoluteValue", "number": "5"}

        # What was migrated fires like anything created now: the key matches, so the
        # threshold that already fired this period does not fire again.
        from metering.thresholds import thresholds_from_stored

        (threshold,) = thresholds_from_stored(Meter.objects.get(pk=meter.pk).thresholds)
        assert threshold.key == alert.threshold_key
    finally:
        migrate(executor_leaf())


def executor_leaf():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_the_per_type_rollup_starts_with_the_per_customer_ones():
    apps = migrate([("metering", "0005_pricing")])
    operator = apps.get_model("tenants", "Operator").objects.create(name="Old rollups")
    MeterType = apps.get_model("metering", "MeterType")
    UsageRollup = apps.get_model("metering", "UsageRollup")
    hour = datetime.datetime(2026, 5, 1, 10, tzinfo=datetime.UTC)
    kinds = {}
    for name, aggregation in (("Calls", "Sum"), ("Peak", "Max"), ("Low", "Min")):
        kinds[name] = MeterType.objects.create(
            operator=operator, name=name, unit="u", aggregation=aggregation, reset_cron="0 0 1 * *"
        )
        for user, value in (("alice", 3), ("bob", 5)):
            UsageRollup.objects.create(
                operator=operator,
                meter_type=kinds[name],
                user_id=user,
                hour=hour,
                value=value,
                record_count=2,
            )
    try:
        apps = migrate([("metering", "0006_revenue_rollups")])
        TypeRollup = apps.get_model("metering", "UsageTypeRollup")
        found = {
            row.meter_type.name: (row.hour, row.value, row.record_count, row.revenue)
            for row in TypeRollup.objects.select_related("meter_type")
        }
        assert found == {
            "Calls": (hour, 8, 4, 0),
            "Peak": (hour, 5, 4, 0),
            "Low": (hour, 3, 4, 0),
        }
        UsageRollup = apps.get_model("metering", "UsageRollup")
        assert set(UsageRollup.objects.values_list("account_id", flat=True)) == {""}
    finally:
        migrate(executor_leaf())
