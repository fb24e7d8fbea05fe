"""Reporting reads the rollups the other apps keep (collection's event rollups,
metering's usage, revenue and cycle rollups). It stores metric definitions and the
hourly rollups of its indexed metrics."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from common.json import ExactJSONDecoder, ExactJSONEncoder
from reporting import definitions
from tenants.models import Operator


class ExactNumericField(models.Field):
    """PostgreSQL `numeric` with no precision or scale: a sum keeps exactly the digits
    of its values, so an average divides the same numbers whichever way it was summed
    (a fixed scale would pad every total and change the division's scale)."""

    description = "Exact decimal number"

    def db_type(self, connection) -> str:
        return "numeric"


# Indexed metrics count a processed record once its id is at or below `indexed_through`:
# this value once the backfill has covered every record stored before it.
INDEXED_EVERYTHING = 2**63 - 1


class MetricDefinitionQuerySet(models.QuerySet):
    def live(self) -> MetricDefinitionQuerySet:
        """Definitions that have not been deleted."""
        return self.filter(deleted_at__isnull=True)


class MetricDefinition(models.Model):
    """How to compute a number from an operator's records (`/v1/metrics`).

    `simple` metrics aggregate the records when asked; `indexed` ones keep hourly
    rollups (`MetricRollup`, `MetricDistinctRollup`) written as records are processed
    and, for the records stored before the metric, by a backfill; `complex` ones run
    their SQL in the sandbox (`reporting.sandbox`). See `reporting.definitions` for what
    a metric reads.

    Backfill of an indexed metric: the processing of the operator's records counts a
    record only if its id is at most `indexed_through`; the backfill walks the record
    ids upward, counting the processed records of each step and raising
    `indexed_through` in the same transaction, under a lock that processing takes
    shared. Every record is then counted exactly once, by one or the other. When the
    walk passes the newest record, `indexed_through` becomes INDEXED_EVERYTHING and
    the metric is READY.
    """

    class IndexStatus(models.TextChoices):
        NONE = "", "—"
        BACKFILLING = "BACKFILLING", "Backfilling"
        READY = "READY", "Ready"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=definitions.MAX_NAME_LENGTH)
    description = models.TextField(blank=True, default="")
    query_type = models.CharField(
        max_length=16, choices=[(each, each) for each in definitions.QUERY_TYPES]
    )
    aggregation_type = models.CharField(
        max_length=16,
        blank=True,
        default="",
        choices=[(each, each) for each in definitions.AGGREGATIONS],
    )
    event_name = models.CharField(
        max_length=definitions.MAX_EVENT_NAME_LENGTH, blank=True, default=""
    )
    value_type = models.CharField(
        max_length=16,
        choices=[(each, each) for each in definitions.VALUE_TYPES],
        default=definitions.NUMERIC,
    )
    value_property = models.CharField(
        max_length=definitions.MAX_PATH_LENGTH, blank=True, default=""
    )
    filters = models.JSONField(
        default=list, blank=True, encoder=ExactJSONEncoder, decoder=ExactJSONDecoder
    )
    sql = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Indexed metrics only.
    index_status = models.CharField(
        max_length=16, choices=IndexStatus.choices, blank=True, default="", editable=False
    )
    indexed_through = models.BigIntegerField(default=0, editable=False)
    # The record ids the backfill walks when it starts (from the one before the oldest
    # to the newest; its progress is measured between them), and when it finished.
    backfill_from = models.BigIntegerField(default=0, editable=False)
    backfill_target = models.BigIntegerField(default=0, editable=False)
    backfill_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    backfill_finished_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = MetricDefinitionQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # Names are unique among an operator's live metrics; a deleted one frees it.
            models.UniqueConstraint(
                fields=["operator", "name"],
                condition=Q(deleted_at__isnull=True),
                name="metricdefinition_live_name",
            ),
        ]
        indexes = [
            models.Index(
                fields=["operator", "created_at"],
                name="metricdef_operator_idx",
                condition=Q(deleted_at__isnull=True),
            ),
            models.Index(
                fields=["index_status"],
                name="metricdef_backfill_idx",
                condition=Q(index_status="BACKFILLING", deleted_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def spec(self) -> definitions.MetricSpec:
        """What the stored definition computes (checked again: the rules may have
        tightened since it was stored)."""
        return definitions.definition_from(
            {field: getattr(self, field) for field in definitions.COMPUTING_FIELDS}
        )

    def backfill_steps(self) -> tuple[int, int] | None:
        """(record ids walked, record ids to walk) of a running backfill: from the first
        record it started at to the newest when it began. None unless BACKFILLING."""
        if self.index_status != self.IndexStatus.BACKFILLING:
            return None
        total = max(0, self.backfill_target - self.backfill_from)
        done = min(total, max(0, self.indexed_through - self.backfill_from))
        return done, total

    def backfill_percent(self) -> int | None:
        """The progress in whole percent, rounded down (100 only once READY)."""
        if self.index_status == self.IndexStatus.READY:
            return 100
        steps = self.backfill_steps()
        if steps is None:
            return None
        done, total = steps
        return min(99, done * 100 // total) if total else 0

    @property
    def backfill_progress(self) -> float | None:
        """How far the backfill has come, 0 to 1; None for metrics without one."""
        if self.index_status == self.IndexStatus.READY:
            return 1.0
        steps = self.backfill_steps()
        if steps is None:
            return None
        done, total = steps
        return done / total if total else 0.0


class MetricRollup(models.Model):
    """One hour of an indexed metric for one customer: what the metric's records of
    that hour add up to. Only the columns its aggregation needs are filled: `count`
    always (the records counted, or with a property, the values), `total` for SUM and
    AVG, `smallest`/`largest` for MIN/MAX, the `latest_*` columns for LATEST (the value
    of the record with the latest event time; of two, the higher record id)."""

    id = models.BigAutoField(primary_key=True)
    metric = models.ForeignKey(MetricDefinition, on_delete=models.CASCADE, related_name="+")
    customer_id = models.TextField()
    hour = models.DateTimeField()
    count = models.BigIntegerField(default=0)
    total = ExactNumericField(null=True, blank=True)
    smallest = ExactNumericField(null=True, blank=True)
    largest = ExactNumericField(null=True, blank=True)
    latest_at = models.DateTimeField(null=True, blank=True)
    latest_record = models.BigIntegerField(null=True, blank=True)
    latest_value = models.JSONField(
        null=True, blank=True, encoder=ExactJSONEncoder, decoder=ExactJSONDecoder
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["metric", "customer_id", "hour"], name="metricrollup_unique_hour"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} · {self.hour:%Y-%m-%d %H}:00 UTC"


class MetricDistinctRollup(models.Model):
    """The distinct values an indexed UNIQUE_COUNT metric saw in one hour for one
    customer (`value_key`: the value as text, numbers without trailing zeros), so the
    distinct count of any range of hours is exact."""

    id = models.BigAutoField(primary_key=True)
    metric = models.ForeignKey(MetricDefinition, on_delete=models.CASCADE, related_name="+")
    customer_id = models.TextField()
    hour = models.DateTimeField()
    value_key = models.TextField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["metric", "customer_id", "hour", "value_key"],
                name="metricdistinct_unique_value",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} · {self.hour:%Y-%m-%d %H}:00 UTC · {self.value_key}"
