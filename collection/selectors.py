"""Reads for collection that are more than one ORM call."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Max, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from collection.models import Collector, EventRollup, EventRollupDelta, Record

STATUS_NAMES = {status.value: status.label for status in Record.Status}


def collector_status_counts(*, collector_id: uuid.UUID | str) -> dict[str, int]:
    """Records of the collector by status, exact: folded rollups plus pending deltas."""
    counts = dict.fromkeys(STATUS_NAMES.values(), 0)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT status, sum(count) FROM (
                SELECT status, count FROM collection_eventrollup WHERE collector_id = %s
                UNION ALL
                SELECT status, count FROM collection_eventrollupdelta WHERE collector_id = %s
            ) c GROUP BY status
            """,
            [collector_id, collector_id],
        )
        for status, count in cursor.fetchall():
            counts[STATUS_NAMES[status]] = int(count)
    return counts


def collector_oldest_unprocessed(*, collector_id: uuid.UUID | str) -> datetime | None:
    """When the oldest UNPROCESSED record arrived (the queue index answers this)."""
    return (
        Record.objects.filter(collector_id=collector_id, status=Record.Status.UNPROCESSED)
        .order_by("received_at")
        .values_list("received_at", flat=True)
        .first()
    )


def collector_stats(*, collector: Collector, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    oldest = collector_oldest_unprocessed(collector_id=collector.pk)
    return {
        "collectorId": str(collector.pk),
        "counts": collector_status_counts(collector_id=collector.pk),
        "oldestUnprocessedAt": oldest,
        "oldestUnprocessedAgeSeconds": (
            round(max(0.0, (now - oldest).total_seconds()), 3) if oldest else None
        ),
    }


def collectors_with_queued_records() -> list[uuid.UUID]:
    """Collectors with UNPROCESSED or IN_PROGRESS records (one probe of the queue index
    per collector)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.id FROM collection_collector c
            WHERE EXISTS (
                SELECT 1 FROM collection_record r
                WHERE r.collector_id = c.id AND r.status IN (1, 2)
            )
            """
        )
        return [row[0] for row in cursor.fetchall()]


def _status_total(status: int):
    def total(model):
        return Coalesce(
            Subquery(
                model.objects.filter(collector_id=OuterRef("pk"), status=status)
                .order_by()
                .values("collector_id")
                .annotate(total=Sum("count"))
                .values("total")
            ),
            0,
        )

    return total(EventRollup) + total(EventRollupDelta)


def collectors_with_counts(queryset):
    """Annotate collectors with their record count per status and last ingestion."""
    from collection.models import Ingestion

    annotations = {
        f"count_{name.lower()}": _status_total(status) for status, name in STATUS_NAMES.items()
    }
    last_ingestion = (
        Ingestion.objects.filter(collector_id=OuterRef("pk"))
        .order_by()
        .values("collector_id")
        .annotate(last=Max("received_at"))
        .values("last")
    )
    return queryset.annotate(**annotations, last_ingestion_at=Subquery(last_ingestion))


class _LiveCollectors:
    """ACTIVE collectors the ingestion endpoint found, kept per process for
    TALLY["COLLECTION"]["COLLECTOR_CACHE_SECONDS"], keyed by operator and id (so one
    operator's cached collector is never another's).

    It only saves the lookup: the ingestion statement checks again that the collector
    is live and stores nothing when it is not, and a refused request looks it up again
    before answering, so a deleted collector is a 404 at once, as without the cache.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[float, Collector]] = {}

    def get(self, operator_id, collector_id: uuid.UUID) -> Collector | None:
        entry = self._entries.get((operator_id, collector_id))
        if entry is None:
            return None
        valid_until, collector = entry
        if time.monotonic() >= valid_until:
            self._entries.pop((operator_id, collector_id), None)
            return None
        return collector

    def put(self, collector: Collector) -> None:
        seconds = settings.TALLY["COLLECTION"]["COLLECTOR_CACHE_SECONDS"]
        if seconds <= 0 or collector.status != Collector.Status.ACTIVE:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[(collector.operator_id, collector.pk)] = (
            time.monotonic() + seconds,
            collector,
        )

    def evict(self, collector: Collector) -> None:
        self._entries.pop((collector.operator_id, collector.pk), None)


live_collectors = _LiveCollectors()
