"""A scene helper for metric tests: records written straight into the record store, in
any status, at any event time, without a collector request or a worker.

    records_insert(operator=acme.operator, collector=collector, records=[
        {"type": "api_call", "customer_id": "c1", "event_time": at(1), "payload": {"n": 2}},
    ])
"""

from __future__ import annotations

import uuid

from django.db import connection
from django.utils import timezone

from collection.models import Record
from common.json import dumps_text

_COLUMNS = (
    "received_at, event_time, operator_id, collector_id, ingestion_id, status, record_id, "
    "type, customer_id, account_id, payload"
)
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"


def records_insert(*, operator, collector, records: list[dict]) -> list[int]:
    """Insert `records` for the operator's collector and return their ids, in order.

    Each record: `type`, `customer_id`, `event_time` (aware), `payload` (a dict; Decimals
    are stored as exact JSON numbers), and optionally `account_id` (""), `status`
    (PROCESSED) and `record_id` (random). All share one receipt time and ingestion id.
    """
    if not records:
        return []
    received_at = timezone.now()
    ingestion_id = uuid.uuid4()
    params: list = []
    for record in records:
        params += [
            received_at,
            record["event_time"],
            operator.pk,
            collector.pk,
            ingestion_id,
            record.get("status", Record.Status.PROCESSED),
            record.get("record_id") or uuid.uuid4().hex,
            record["type"],
            record["customer_id"],
            record.get("account_id", ""),
            dumps_text(record["payload"]),
        ]
    rows = ", ".join([_ROW] * len(records))
    with connection.cursor() as cursor:
        # RETURNING gives the rows in the order of VALUES.
        cursor.execute(
            f"INSERT INTO collection_record ({_COLUMNS}) VALUES {rows} RETURNING id",  # noqa: S608
            params,
        )
        return [row[0] for row in cursor.fetchall()]
