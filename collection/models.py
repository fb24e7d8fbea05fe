from __future__ import annotations

import uuid

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q
from django.utils import timezone

from common.json import ExactJSONDecoder, ExactJSONEncoder
from tenants.models import Operator


class CollectorQuerySet(models.QuerySet):
    def live(self) -> CollectorQuerySet:
        """Collectors that have not been deleted."""
        return self.filter(deleted_at__isnull=True)


class Collector(models.Model):
    """An online collector: an operator's ingestion endpoint (a connection of the
    `online-collection` connector).

    A new collector is CREATING until the provisioning task has made sure its records
    have a partition to go to; then it is ACTIVE and accepts data. Deleting one stamps
    `deleted_at`: the API no longer sees it (404, no more ingestion), while its records,
    rollups and ingestions stay for reporting.
    """

    class Status(models.TextChoices):
        CREATING = "CREATING", "Creating"
        ACTIVE = "ACTIVE", "Active"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="collectors")
    name = models.CharField(max_length=80)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = CollectorQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            # Names are unique among an operator's live collectors; a deleted one frees it.
            models.UniqueConstraint(
                fields=["operator", "name"],
                condition=models.Q(deleted_at__isnull=True),
                name="collector_unique_live_name",
            ),
        ]
        indexes = [models.Index(fields=["operator", "created_at"], name="collector_created_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class Ingestion(models.Model):
    """One accepted ingestion request: what arrived and what became of it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="ingestions")
    collector = models.ForeignKey(Collector, on_delete=models.CASCADE, related_name="ingestions")
    received_at = models.DateTimeField()
    size_bytes = models.PositiveIntegerField()
    record_count = models.PositiveIntegerField()
    accepted = models.PositiveIntegerField()
    duplicates = models.PositiveIntegerField()
    rejected = models.PositiveIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["collector", "-received_at"], name="ingestion_collector_idx"),
            models.Index(fields=["operator", "-received_at"], name="ingestion_operator_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.received_at:%Y-%m-%d %H:%M:%S} · {self.record_count} records"


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` a client sent with an ingestion request.

    The row is written (in its own statement) before the request does any work, so a
    second request with the key sees it in flight (409). The answer is stored in the
    same transaction as the records, so a stored answer means stored records.
    """

    collector = models.ForeignKey(
        Collector, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
    body_digest = models.CharField(max_length=64)
    response = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["collector", "key"], name="idempotencykey_unique"),
        ]
        indexes = [BrinIndex(fields=["created_at"], name="idempotencykey_created_brin")]

    def __str__(self) -> str:
        return self.key


class RecordKey(models.Model):
    """The idempotency guard: one row per (collector, record id) seen in the last 32 days.

    The record table is partitioned by receipt month, and PostgreSQL only allows unique
    constraints on a partitioned table that include the partition key, so "this id once
    per collector, whatever the month" needs this separate, unpartitioned table. The key
    is the MD5 of the collector id and the record id (16 bytes instead of ~50): a false
    duplicate would need an MD5 collision, about n²/2¹²⁹ for n keys. Rows older than the
    window are swept by `record_keys_sweep`; BRIN keeps the sweep cheap without a second
    B-tree on a table written in time order.
    """

    key_hash = models.UUIDField(primary_key=True)
    seen_at = models.DateTimeField()

    class Meta:
        indexes = [BrinIndex(fields=["seen_at"], name="recordkey_seen_brin")]

    def __str__(self) -> str:
        return str(self.key_hash)


class Record(models.Model):
    """One usage event as received: the envelope in columns, every other field in
    `payload` (exactly as sent; JSON numbers are stored as exact numerics).

    The table is created by migration 0001 as a PostgreSQL table partitioned by month of
    `received_at` (with a default partition so an insert never fails), hence
    `managed = False`. Indexes: `id`; the work queue, partial on UNPROCESSED and
    IN_PROGRESS rows (collector, status, received_at), so it stays small; reporting
    (operator, type, event_time).
    """

    class Status(models.IntegerChoices):
        UNPROCESSED = 1, "UNPROCESSED"
        IN_PROGRESS = 2, "IN_PROGRESS"
        PROCESSED = 3, "PROCESSED"
        FAILED = 4, "FAILED"

    id = models.BigIntegerField(primary_key=True)
    received_at = models.DateTimeField()
    event_time = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    operator = models.ForeignKey(
        Operator, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    collector = models.ForeignKey(
        Collector, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    ingestion_id = models.UUIDField()
    status = models.SmallIntegerField(choices=Status.choices, default=Status.UNPROCESSED)
    record_id = models.TextField()
    type = models.TextField(blank=True, default="")
    customer_id = models.TextField(blank=True, default="")
    account_id = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, encoder=ExactJSONEncoder, decoder=ExactJSONDecoder)
    failure_reason = models.TextField(null=True, blank=True)  # noqa: DJ001 - NULL: not failed

    class Meta:
        managed = False
        db_table = "collection_record"

    def __str__(self) -> str:
        return f"{self.record_id} · {self.type}" if self.type else self.record_id


class EventRollup(models.Model):
    """Record counts per operator, collector, type, status and event hour.

    Writers never update these rows directly (a hot row would serialise every ingestion
    of a collector): they append `EventRollupDelta` rows in their own transaction, and
    `rollups_fold` moves deltas in here. Readers add both (`selectors.rollup_counts`), so
    counts are exact at every moment.
    """

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    collector = models.ForeignKey(Collector, on_delete=models.CASCADE, related_name="+")
    type = models.TextField(blank=True, default="")
    status = models.SmallIntegerField(choices=Record.Status.choices)
    hour = models.DateTimeField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "collector", "type", "status", "hour"],
                name="eventrollup_unique_bucket",
            ),
        ]
        indexes = [
            models.Index(fields=["operator", "hour"], name="eventrollup_operator_hour_idx"),
            models.Index(fields=["collector", "status"], name="eventrollup_collector_idx"),
            # Buckets a status change emptied, removed after each fold.
            models.Index(fields=["hour"], name="eventrollup_empty_idx", condition=Q(count=0)),
        ]

    def __str__(self) -> str:
        what = f"{self.type} " if self.type else ""
        return f"{what}{self.get_status_display()} · {self.hour:%Y-%m-%d %H}:00 UTC: {self.count}"


class CustomerEventRollup(models.Model):
    """Record counts per operator, customer id, account id, type, status and event hour:
    what the EVENTS metric reads when it is filtered or grouped by customer or account.

    Filled by the same fold as `EventRollup`, from the same deltas (records with neither
    a customer nor an account id have no row here); readers add the pending deltas.
    """

    # The composite indexes lead with the operator: no index of its own to maintain.
    operator = models.ForeignKey(
        Operator, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    customer_id = models.TextField(blank=True, default="")
    account_id = models.TextField(blank=True, default="")
    type = models.TextField(blank=True, default="")
    status = models.SmallIntegerField(choices=Record.Status.choices)
    hour = models.DateTimeField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # A customer's counts over a window are one index range, read from the index
            # alone (the count is included); only the fold writes here.
            models.UniqueConstraint(
                fields=["operator", "customer_id", "hour", "account_id", "type", "status"],
                name="customereventrollup_unique_bucket",
                include=["count"],
            ),
        ]
        indexes = [
            models.Index(
                fields=["operator", "account_id", "hour"],
                name="customerevent_account_idx",
                include=["customer_id", "type", "status", "count"],
            ),
            # Buckets a status change emptied, removed after each fold.
            models.Index(fields=["hour"], name="customerevent_empty_idx", condition=Q(count=0)),
        ]

    def __str__(self) -> str:
        who = self.customer_id or self.account_id
        return f"{who} · {self.type} {self.get_status_display()} · {self.hour:%Y-%m-%d %H}:00 UTC"


class EventRollupDelta(models.Model):
    """A change to an `EventRollup` (and `CustomerEventRollup`) bucket not folded in yet
    (append-only)."""

    id = models.BigAutoField(primary_key=True)
    operator = models.ForeignKey(
        Operator, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    collector = models.ForeignKey(
        Collector, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    type = models.TextField(blank=True, default="")
    customer_id = models.TextField(blank=True, default="")
    account_id = models.TextField(blank=True, default="")
    status = models.SmallIntegerField(choices=Record.Status.choices)
    hour = models.DateTimeField()
    count = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["collector", "status"], name="rollupdelta_collector_idx")]

    def __str__(self) -> str:
        return f"{self.type} {self.get_status_display()} {self.count:+d}"
