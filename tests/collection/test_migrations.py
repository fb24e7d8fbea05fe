"""Data migrations keep what was stored: records already stored are counted per customer
and account when that rollup is created."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_stored_records_are_counted_per_customer_and_account():
    apps = migrate([("collection", "0002_queue_index_in_claim_order")])
    operator = apps.get_model("tenants", "Operator").objects.create(name="Old records")
    collector = apps.get_model("collection", "Collector").objects.create(
        operator=operator, name="Old", status="ACTIVE"
    )
    moment = datetime.datetime(2026, 5, 1, 10, 30, tzinfo=datetime.UTC)
    rows = [
        ("r1", "call", "alice", "acc-a", 3),
        ("r2", "call", "alice", "acc-a", 3),
        ("r3", "call", "alice", "acc-a", 4),
        ("r4", "seat", "bob", "", 1),
        ("r5", "seat", "", "", 3),  # neither: not counted per customer
    ]
    with connection.cursor() as cursor:
        for index, (record_id, kind, customer, account, status) in enumerate(rows):
            cursor.execute(
                """
                INSERT INTO collection_record (id, received_at, event_time, operator_id,
                    collector_id, ingestion_id, status, record_id, type, customer_id,
                    account_id, payload)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '{}')
                """,
                [
                    index + 1,
                    moment,
                    moment,
                    operator.pk,
                    collector.pk,
                    uuid.uuid4(),
                    status,
                    record_id,
                    kind,
                    customer,
                    account,
                ],
            )
        # A record of an operator deleted since (records keep no foreign key).
        cursor.execute(
            """
            INSERT INTO collection_record (id, received_at, event_time, operator_id,
                collector_id, ingestion_id, status, record_id, type, customer_id, payload)
            VALUES (99, %s, %s, %s, %s, %s, 3, 'orphan', 'call', 'alice', '{}')
            """,
            [moment, moment, uuid.uuid4(), collector.pk, uuid.uuid4()],
        )
    try:
        apps = migrate([("collection", "0003_customer_event_rollups")])
        Rollup = apps.get_model("collection", "CustomerEventRollup")
        found = {
            (row.customer_id, row.account_id, row.type, row.status, row.hour, row.count)
            for row in Rollup.objects.filter(operator_id=operator.pk)
        }
        assert not Rollup.objects.exclude(operator_id=operator.pk).exists()
        hour = moment.replace(minute=0)
        assert found == {
            ("alice", "acc-a", "call", 3, hour, 2),
            ("alice", "acc-a", "call", 4, hour, 1),
            ("bob", "", "seat", 1, hour, 1),
        }
    finally:
        executor = MigrationExecutor(connection)
        migrate(executor.loader.graph.leaf_nodes())
