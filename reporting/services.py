"""Writes of reporting: metric definitions and the rollups of indexed metrics."""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from collection.models import Record
from collection.processing import ClaimedRecord
from common.tasks import enqueue_on_commit
from reporting import definitions, measures
from reporting.models import (
    INDEXED_EVERYTHING,
    MetricDefinition,
    MetricDistinctRollup,
    MetricRollup,
)
from tenants.models import Operator

BACKFILL_TASK = "reporting.tasks.metric_backfill"

# Fields a definition keeps for life: changing them would make it another metric.
IMMUTABLE_FIELDS = ("query_type", "aggregation_type", "value_type")
# Fields that change what an indexed metric counts: its rollups are built again.
RECOUNTING_FIELDS = ("event_name", "value_property", "filters", "sql")
EDITABLE_FIELDS = ("name", "description", *RECOUNTING_FIELDS)


class MetricNameTaken(ValueError):
    pass


class MetricImmutable(ValueError):
    def __init__(self, fields: list[str]) -> None:
        super().__init__(", ".join(fields))
        self.fields = fields


# -- The index lock ------------------------------------------------------------------------

# pg_advisory_xact_lock's first key: this lock's class (the second is the operator).
_INDEX_LOCK_CLASS = 1_702_017


def _index_lock(operator_id: uuid.UUID, *, shared: bool) -> None:
    """Processing takes this lock shared before it reads the operator's indexed
    metrics and holds it to commit; a backfill step and a change of an indexed metric
    take it exclusive. Its own statement, so the caller's next statement sees every
    transaction that held it before."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {function}(%s, hashtext(%s))", [_INDEX_LOCK_CLASS, str(operator_id)]
        )


def _next_record_id(after: int) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT min(id) FROM {Record._meta.db_table} WHERE id > %s",  # noqa: S608
            [after],
        )
        return cursor.fetchone()[0]


def _newest_record_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {Record._meta.db_table}")  # noqa: S608
        return cursor.fetchone()[0]


# -- Definitions ---------------------------------------------------------------------------


def _definition_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Stored form of the computing fields (empty strings and lists for "none"). A
    complex metric keeps only its SQL: the fields it ignores are not stored."""
    if values.get("query_type") == definitions.COMPLEX:
        return {
            "aggregation_type": "",
            "event_name": "",
            "value_type": definitions.NUMERIC,
            "value_property": "",
            "filters": [],
            "sql": values.get("sql") or "",
        }
    return {
        "aggregation_type": values.get("aggregation_type") or "",
        "event_name": values.get("event_name") or "",
        "value_type": values.get("value_type") or definitions.NUMERIC,
        "value_property": values.get("value_property") or "",
        "filters": values.get("filters") or [],
        "sql": values.get("sql") or "",
    }


def _backfill_start(metric: MetricDefinition, now: datetime.datetime) -> None:
    metric.index_status = MetricDefinition.IndexStatus.BACKFILLING
    metric.indexed_through = 0
    oldest = _next_record_id(0)
    metric.backfill_from = 0 if oldest is None else oldest - 1
    metric.backfill_target = _newest_record_id()
    metric.backfill_started_at = now
    metric.backfill_finished_at = None
    enqueue_on_commit(BACKFILL_TASK, str(metric.pk))


def metric_create(
    *,
    operator: Operator,
    name: str,
    query_type: str,
    description: str = "",
    **computing: Any,
) -> MetricDefinition:
    """Store a definition (DefinitionInvalid if it is not one, MetricNameTaken if a live
    metric of the operator has the name). An indexed metric starts backfilling."""
    definitions.definition_from({"query_type": query_type, **computing})
    now = timezone.now()
    metric = MetricDefinition(
        operator=operator,
        name=name,
        description=description or "",
        query_type=query_type,
        created_at=now,
        updated_at=now,
        **_definition_fields({"query_type": query_type, **computing}),
    )
    try:
        with transaction.atomic():
            if query_type == definitions.INDEXED:
                _backfill_start(metric, now)
            metric.save(force_insert=True)
    except IntegrityError as error:
        raise MetricNameTaken(name) from error
    return metric


def metric_update(*, metric: MetricDefinition, changes: dict[str, Any]) -> MetricDefinition:
    """Change a definition's name, description or what it reads. Immutable fields raise
    MetricImmutable. An indexed metric whose computing fields change drops its rollups
    and backfills again, under the index lock, so no batch adds to the old rollups."""
    immutable = [field for field in IMMUTABLE_FIELDS if field in changes]
    if immutable:
        raise MetricImmutable(immutable)
    if not changes:
        return metric
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    current = {field: getattr(metric, field) for field in definitions.COMPUTING_FIELDS}
    merged = {**current, **changes}
    definitions.definition_from(merged)
    stored = _definition_fields(merged)
    with transaction.atomic():
        if metric.query_type == definitions.INDEXED:
            _index_lock(metric.operator_id, shared=False)
        locked = MetricDefinition.objects.select_for_update().get(pk=metric.pk)
        if locked.is_deleted:
            raise MetricDefinition.DoesNotExist
        for field in ("name", "description"):
            if field in changes:
                setattr(locked, field, changes[field] or "")
        recount = any(getattr(locked, field) != stored[field] for field in RECOUNTING_FIELDS)
        for field in RECOUNTING_FIELDS:
            setattr(locked, field, stored[field])
        locked.updated_at = timezone.now()
        if recount and locked.query_type == definitions.INDEXED:
            _rollups_drop(locked.pk)
            _backfill_start(locked, locked.updated_at)
        try:
            with transaction.atomic():
                locked.save()
        except IntegrityError as error:
            raise MetricNameTaken(locked.name) from error
    return locked


def metric_delete(*, metric: MetricDefinition) -> None:
    """Soft delete: the definition is gone from the API (404), its name is free again,
    and an indexed metric's rollups are dropped (processing stops adding to them)."""
    with transaction.atomic():
        if metric.query_type == definitions.INDEXED:
            _index_lock(metric.operator_id, shared=False)
        updated = MetricDefinition.objects.filter(pk=metric.pk, deleted_at__isnull=True).update(
            deleted_at=timezone.now(), index_status=MetricDefinition.IndexStatus.NONE
        )
        if not updated:
            raise MetricDefinition.DoesNotExist
        _rollups_drop(metric.pk)


def _rollups_drop(metric_id: uuid.UUID) -> None:
    MetricRollup.objects.filter(metric_id=metric_id).delete()
    MetricDistinctRollup.objects.filter(metric_id=metric_id).delete()


# -- Indexing ----------------------------------------------------------------------------


def metrics_index_batch(records: list[ClaimedRecord]) -> None:
    """The processed hook: add a batch's newly PROCESSED records to the rollups of the
    operator's indexed metrics, in the batch's transaction. A metric counts only the
    records at or below its `indexed_through`; its backfill counts the others."""
    operator_id = records[0].operator_id
    _index_lock(operator_id, shared=True)
    types = sorted({record.type for record in records})
    metrics = list(
        MetricDefinition.objects.live()
        .filter(operator_id=operator_id, query_type=definitions.INDEXED, event_name__in=types)
        .exclude(indexed_through=0)
        .order_by("pk")
    )
    for metric in metrics:
        ids = [
            record.id
            for record in records
            if record.type == metric.event_name and record.id <= metric.indexed_through
        ]
        if ids:
            measures.rollups_add(
                metric.spec(), metric_id=metric.pk, operator_id=operator_id, ids=ids
            )


def metric_backfill_step(*, metric_id: uuid.UUID | str) -> bool:
    """Count one step of record ids into an indexed metric's rollups and move its
    `indexed_through` past them, in one transaction under the index lock. Returns
    whether there is more to do. Safe to run twice at once: the steps queue on the lock
    and each starts where the last one stopped."""
    metric = MetricDefinition.objects.filter(pk=metric_id).only("operator_id").first()
    if metric is None:
        return False
    chunk = settings.TALLY["METRICS"]["BACKFILL_CHUNK"]
    with transaction.atomic():
        _index_lock(metric.operator_id, shared=False)
        metric = MetricDefinition.objects.select_for_update().get(pk=metric_id)
        if metric.is_deleted or metric.index_status != MetricDefinition.IndexStatus.BACKFILLING:
            return False
        low = metric.indexed_through
        # Record ids have gaps (each connection takes a block of the sequence): a step
        # starts at the next id that exists, so no step is spent on empty ranges.
        following = _next_record_id(low)
        high = None if following is None else following - 1 + chunk
        last = high is None or high >= _newest_record_id()
        measures.rollups_add(
            metric.spec(),
            metric_id=metric.pk,
            operator_id=metric.operator_id,
            id_range=(low, None if last else high),
        )
        now = timezone.now()
        metric.indexed_through = INDEXED_EVERYTHING if last else high
        fields = ["indexed_through"]
        if last:
            metric.index_status = MetricDefinition.IndexStatus.READY
            metric.backfill_finished_at = now
            fields += ["index_status", "backfill_finished_at"]
        metric.save(update_fields=fields)
    return not last


def metric_backfill(*, metric_id: uuid.UUID | str, budget_seconds: float = 30.0) -> bool:
    """Run backfill steps for at most `budget_seconds`; returns whether more remain."""
    deadline = time.monotonic() + budget_seconds
    while metric_backfill_step(metric_id=metric_id):
        if time.monotonic() >= deadline:
            return True
    return False
