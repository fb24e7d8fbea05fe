"""Aggregator nodes imported before aggregation stores existed get their stores."""

from __future__ import annotations

import uuid

import pytest

from tests.metering.test_migrations import executor_leaf, migrate

BEFORE = [("streams", "0002_runtime")]
AFTER = [("streams", "0003_aggregation_stores")]


@pytest.mark.django_db(transaction=True)
def test_existing_store_ids_become_stores():
    apps = migrate(BEFORE)
    try:
        operator = apps.get_model("tenants", "Operator").objects.create(name="Old")
        solution = apps.get_model("streams", "Solution").objects.create(
            operator=operator, name="Default", is_default=True
        )
        stream = apps.get_model("streams", "Stream").objects.create(
            operator=operator, solution=solution, name="Old stream"
        )
        StreamKey = apps.get_model("streams", "StreamKey")
        data_id, script_id = uuid.uuid4(), uuid.uuid4()
        for node_id, resource, value in (
            ("agg", "dataAggregationStore", data_id),
            ("script", "scriptAggregationStore", script_id),
            ("meter", "meterKey", uuid.uuid4()),
        ):
            StreamKey.objects.create(
                operator=operator,
                stream=stream,
                node_id=node_id,
                kind="meterKey" if resource == "meterKey" else "storeId",
                resource=resource,
                value=value,
            )

        apps = migrate(AFTER)
        stores = {
            store.id: (store.node_id, store.kind, store.stream_id, store.operator_id)
            for store in apps.get_model("streams", "AggregationStore").objects.all()
        }
        assert stores == {
            data_id: ("agg", "data", stream.pk, operator.pk),
            script_id: ("script", "script", stream.pk, operator.pk),
        }
    finally:
        # Back to the latest schema: the tests after this one need every later migration.
        migrate(executor_leaf())
