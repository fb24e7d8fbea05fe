"""Housekeeping: folding rollup deltas and forgetting record ids past the dedup window."""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from collection.models import CustomerEventRollup, EventRollup, EventRollupDelta
from collection.rules import DEDUP_WINDOW
from common.db import deltas_fold


def rollups_fold() -> int:
    """Move rollup deltas into both sets of buckets (per collector, and per customer and
    account); returns how many deltas were folded. Buckets left at zero (every record
    passes through UNPROCESSED and IN_PROGRESS) are removed, so reports read only counts."""
    with transaction.atomic():
        folded = _fold()
        with connection.cursor() as cursor:
            for model in (EventRollup, CustomerEventRollup):
                # Served by the partial index on empty buckets.
                cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE count = 0")  # noqa: S608
    return folded


def _fold() -> int:
    return deltas_fold(
        deltas_table=EventRollupDelta._meta.db_table,
        buckets_table=EventRollup._meta.db_table,
        keys=["operator_id", "collector_id", "type", "status", "hour"],
        also=[
            (
                CustomerEventRollup._meta.db_table,
                ["operator_id", "customer_id", "account_id", "type", "status", "hour"],
                ["customer_id", "account_id"],
            )
        ],
    )


def record_keys_sweep(*, now: datetime | None = None, batch_size: int = 50_000) -> int:
    """Forget record ids older than the deduplication window; returns rows deleted."""
    cutoff = (now or timezone.now()) - DEDUP_WINDOW
    deleted = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                DELETE FROM collection_recordkey WHERE key_hash IN (
                    SELECT key_hash FROM collection_recordkey WHERE seen_at < %s LIMIT %s
                )
                """,
                [cutoff, batch_size],
            )
            deleted += cursor.rowcount
            if cursor.rowcount < batch_size:
                return deleted
