"""Writes for collectors, ingestion, the record work queue and the event rollups."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from collection.models import (
    Collector,
    EventRollup,
    EventRollupDelta,
    IdempotencyKey,
    Record,
)
from collection.parsing import PreparedBatch
from collection.processing import processor_for
from collection.rules import DEDUP_WINDOW, MAX_COLLECTORS_PER_OPERATOR
from common.db import deltas_fold
from common.json import encode
from common.tasks import enqueue, enqueue_on_commit
from tenants.models import Operator, UsageCounterDelta
from tenants.services import GATEWAY_REQUEST, usage_counter_add

logger = logging.getLogger(__name__)

CONNECTOR = "online-collection"


class CollectorConflict(Exception):
    """The write would break a uniqueness or quota rule, or the collector is not ready
    (answered as 409)."""


# Collectors


def collector_create(*, operator: Operator, name: str) -> Collector:
    """Create a CREATING collector and queue its provisioning once committed.

    A duplicate live name, or a sixth live collector, is a CollectorConflict.
    """
    with transaction.atomic():
        # The operator row serialises concurrent creates, so the quota cannot be overrun.
        Operator.objects.select_for_update().filter(pk=operator.pk).first()
        if Collector.objects.live().filter(operator=operator).count() >= (
            MAX_COLLECTORS_PER_OPERATOR
        ):
            raise CollectorConflict(
                f"An operator may have at most {MAX_COLLECTORS_PER_OPERATOR} collectors."
            )
        collector = Collector(operator=operator, name=name)
        try:
            with transaction.atomic():
                collector.save(force_insert=True)
        except IntegrityError:
            raise CollectorConflict(f"A collector named {name!r} already exists.") from None
        enqueue_on_commit("collection.tasks.collector_provision", str(collector.pk))
    return collector


def collector_rename(*, collector: Collector, name: str) -> Collector:
    """Change the name (the only field that may change); a taken name is a conflict."""
    collector.name = name
    collector.updated_at = timezone.now()
    try:
        with transaction.atomic():
            collector.save(update_fields=["name", "updated_at"])
    except IntegrityError:
        raise CollectorConflict(f"A collector named {name!r} already exists.") from None
    return collector


def collector_delete(*, collector: Collector) -> int:
    """Stop the collector at once; its records, rollups and ingestions stay."""
    now = timezone.now()
    return Collector.objects.filter(pk=collector.pk, deleted_at__isnull=True).update(
        deleted_at=now, updated_at=now
    )


def record_partitions_ensure(*, now: datetime | None = None, months_ahead: int = 2) -> int:
    """Make sure the record table has a partition for this month and the next ones.

    Returns how many partitions were created. Idempotent.
    """
    now = now or timezone.now()
    first = now.astimezone(UTC).date().replace(day=1)
    created = 0
    with connection.cursor() as cursor:
        for offset in range(months_ahead + 1):
            year, month = divmod(first.month - 1 + offset, 12)
            cursor.execute(
                "SELECT collection_record_partition_ensure(%s)",
                [first.replace(year=first.year + year, month=month + 1)],
            )
            created += bool(cursor.fetchone()[0])
    return created


def collector_provision(*, collector_id: uuid.UUID | str, now: datetime | None = None) -> bool:
    """Give a CREATING collector what it needs to take data, then make it ACTIVE.

    True when this call activated it; running it again changes nothing.
    """
    record_partitions_ensure(now=now)
    changed = Collector.objects.filter(
        pk=collector_id, status=Collector.Status.CREATING, deleted_at__isnull=True
    ).update(status=Collector.Status.ACTIVE, updated_at=timezone.now())
    return changed == 1


# Ingestion


def record_key_hash(collector_id: uuid.UUID | str, record_id: str) -> uuid.UUID:
    """The RecordKey of a record id on a collector (the SQL below computes the same)."""
    return uuid.UUID(hashlib.md5(f"{collector_id}:{record_id}".encode()).hexdigest())  # noqa: S324


@dataclass(frozen=True)
class IngestionResult:
    ingestion_id: uuid.UUID
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_response(self) -> dict[str, Any]:
        return {
            "ingestionId": str(self.ingestion_id),
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }


_STAGING_SQL = """
SET LOCAL statement_timeout = {timeout};
CREATE TEMP TABLE IF NOT EXISTS collection_staging (
    record_id text, event_time timestamptz, type text, customer_id text, account_id text,
    payload text
) ON COMMIT DELETE ROWS;
DELETE FROM collection_staging;
"""

_COPY_SQL = (
    "COPY collection_staging (record_id, event_time, type, customer_id, account_id, payload) "
    "FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["text", "timestamptz", "text", "text", "text", "text"]

# One statement stores the batch: 1. claim each record id in the key table (in key order,
# so concurrent batches sharing ids cannot deadlock; a key another transaction holds makes
# this wait for it, then count as a duplicate); 2. insert the records whose key was new;
# 3. append their rollup deltas; 4. write the ingestion row with the counts; 5. count the
# gateway request (the same row `tenants.services.usage_counter_add` appends, inlined to
# stay in this statement); 6. store the answer on the Idempotency-Key, if any.
_INGEST_SQL = """
WITH incoming AS MATERIALIZED (
    SELECT md5(%(key_prefix)s || s.record_id)::uuid AS key_hash, s.*
    FROM {source}
), fresh AS (
    INSERT INTO collection_recordkey (key_hash, seen_at)
    SELECT key_hash, %(now)s FROM incoming ORDER BY key_hash
    ON CONFLICT (key_hash) DO NOTHING
    RETURNING key_hash
), stored AS (
    INSERT INTO collection_record (
        received_at, event_time, operator_id, collector_id, ingestion_id, record_id, type,
        customer_id, account_id, payload
    )
    SELECT %(now)s, i.event_time, %(operator)s, %(collector)s, %(ingestion)s, i.record_id,
        i.type, i.customer_id, i.account_id, i.payload::jsonb
    FROM incoming i JOIN fresh f ON f.key_hash = i.key_hash
    RETURNING type, event_time
), deltas AS (
    INSERT INTO collection_eventrollupdelta (operator_id, collector_id, type, status, hour, count)
    SELECT %(operator)s, %(collector)s, type, 1, date_trunc('hour', event_time), count(*)
    FROM stored GROUP BY type, date_trunc('hour', event_time)
    RETURNING count
), ingestion AS (
    INSERT INTO collection_ingestion (
        id, operator_id, collector_id, received_at, size_bytes, record_count, accepted,
        duplicates, rejected
    )
    SELECT %(ingestion)s, %(operator)s, %(collector)s, %(now)s, %(size)s, %(record_count)s,
        a.n, %(candidates)s - a.n + %(batch_duplicates)s, %(rejected_count)s
    FROM (SELECT coalesce(sum(count), 0)::integer AS n FROM deltas) a
    RETURNING accepted, duplicates
), counted AS (
    INSERT INTO {usage_table} (operator_id, hour, kind, key, connection, count)
    VALUES (%(operator)s, date_trunc('hour', %(now)s::timestamptz), %(usage_kind)s,
        %(usage_key)s, %(collector_text)s, 1)
), answered AS (
    UPDATE collection_idempotencykey k SET response = jsonb_build_object(
        'ingestionId', %(ingestion_text)s, 'accepted', i.accepted,
        'duplicates', i.duplicates, 'rejected', %(rejected)s::jsonb)
    FROM ingestion i WHERE k.id = %(key_id)s
)
SELECT accepted, duplicates FROM ingestion
"""
# Big batches are copied into a temporary table first. Small ones travel as arrays in the
# statement itself, which then is the whole write: one round trip in autocommit, without
# the COPY, BEGIN and COMMIT round trips or the temporary table's truncation at commit (a
# file operation that dominated single-record requests).
_FROM_STAGING = _INGEST_SQL.format(
    source="collection_staging s", usage_table=UsageCounterDelta._meta.db_table
)
_FROM_ARRAYS = _INGEST_SQL.format(
    source="unnest(%(record_ids)s::text[], %(event_times)s::timestamptz[], %(types)s::text[], "
    "%(customer_ids)s::text[], %(account_ids)s::text[], %(payloads)s::text[]) "
    "AS s(record_id, event_time, type, customer_id, account_id, payload)",
    usage_table=UsageCounterDelta._meta.db_table,
)
COPY_THRESHOLD = 100
_ARRAY_NAMES = ("record_ids", "event_times", "types", "customer_ids", "account_ids", "payloads")


def ingest(
    *,
    collector: Collector,
    batch: PreparedBatch,
    record_count: int,
    size_bytes: int,
    now: datetime,
    idempotency_key_id: int | None = None,
) -> IngestionResult:
    """Store a prepared batch durably, all or nothing, and count the request.

    One statement writes keys, records, rollup deltas, the ingestion row, the gateway
    count and the Idempotency-Key's answer. Batches above COPY_THRESHOLD first COPY their
    rows into a temporary table, inside a transaction with a statement timeout; smaller
    ones pass them as arrays, and the statement is its own transaction. A database error
    leaves nothing behind. The processing side is signalled once committed.
    """
    ingestion_id = uuid.uuid4()
    params: dict[str, Any] = {
        "key_prefix": f"{collector.pk}:",
        "now": now,
        "operator": collector.operator_id,
        "collector": collector.pk,
        "collector_text": str(collector.pk),
        "ingestion": ingestion_id,
        "ingestion_text": str(ingestion_id),
        "size": size_bytes,
        "record_count": record_count,
        "candidates": len(batch.rows),
        "batch_duplicates": batch.duplicates,
        "rejected_count": len(batch.rejected),
        "rejected": encode(batch.rejected).decode(),
        "usage_kind": GATEWAY_REQUEST,
        "usage_key": CONNECTOR,
        "key_id": idempotency_key_id,
    }
    if len(batch.rows) > COPY_THRESHOLD:
        timeout = int(settings.TALLY["COLLECTION"]["INGEST_STATEMENT_TIMEOUT_MS"])
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_STAGING_SQL.format(timeout=timeout))
            with cursor.copy(_COPY_SQL) as copy:
                copy.set_types(_COPY_TYPES)
                write_row = copy.write_row
                for row in batch.rows:
                    write_row(row)
            cursor.execute(_FROM_STAGING, params)
            accepted, duplicates = cursor.fetchone()
    else:
        columns = list(zip(*batch.rows, strict=True)) or [()] * len(_ARRAY_NAMES)
        for name, values in zip(_ARRAY_NAMES, columns, strict=True):
            params[name] = list(values)
        with connection.cursor() as cursor:
            cursor.execute(_FROM_ARRAYS, params)
            accepted, duplicates = cursor.fetchone()
    if accepted:
        collector_id = str(collector.pk)
        transaction.on_commit(lambda: records_signal(collector_id=collector_id))
    return IngestionResult(ingestion_id, accepted, duplicates, batch.rejected)


def ingestion_count_gateway_request(*, collector: Collector, at: datetime | None = None) -> None:
    """Count one gateway request through the collector's connection (the
    `online-collection` connector) in the operator's hourly usage counters."""
    usage_counter_add(
        operator_id=collector.operator_id,
        kind=GATEWAY_REQUEST,
        key=CONNECTOR,
        connection=str(collector.pk),
        at=at,
    )


def ingestion_count_refused_request(*, collector: Collector) -> None:
    """Count a request that reached the collector but stored nothing (a bad body, a
    replay, a conflict). Never fails the request it counts: a lost count is logged."""
    try:
        ingestion_count_gateway_request(collector=collector)
    except Exception:
        logger.exception("Could not count a gateway request for collector %s", collector.pk)


# Idempotency keys


@dataclass(frozen=True)
class IdempotencyState:
    """What an Idempotency-Key says about a request: go on (`key_id`), replay
    (`response`), or refuse (`conflict`: "in_flight" or "mismatch")."""

    key_id: int | None = None
    response: dict[str, Any] | None = None
    conflict: str | None = None


def body_digest(body: bytes, content_type: str) -> str:
    return hashlib.sha256(content_type.encode() + b"\n" + body).hexdigest()


def idempotency_begin(
    *, collector: Collector, key: str, digest: str, now: datetime | None = None
) -> IdempotencyState:
    """Register the key as in flight (its own statement, visible to other requests at
    once), or say why the request must not run: a stored answer, another body, or a
    request with the key still running. A key in flight for longer than the in-flight
    timeout belongs to a request that died; this request takes it over."""
    now = now or timezone.now()
    table = IdempotencyKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (collector_id, key, body_digest, response, created_at)
            VALUES (%s, %s, %s, NULL, %s)
            ON CONFLICT (collector_id, key) DO NOTHING
            RETURNING id
            """,  # noqa: S608 - the table name is the model's own
            [collector.pk, key, digest, now],
        )
        row = cursor.fetchone()
    if row is not None:
        return IdempotencyState(key_id=row[0])
    existing = IdempotencyKey.objects.filter(collector=collector, key=key).first()
    if existing is None:  # swept between the two statements: try once more
        return idempotency_begin(collector=collector, key=key, digest=digest, now=now)
    if existing.body_digest != digest:
        return IdempotencyState(conflict="mismatch")
    if existing.response is not None:
        return IdempotencyState(response=existing.response)
    stale_before = now - timedelta(
        seconds=settings.TALLY["COLLECTION"]["IDEMPOTENCY_IN_FLIGHT_SECONDS"]
    )
    if existing.created_at < stale_before:
        taken = IdempotencyKey.objects.filter(
            pk=existing.pk, created_at=existing.created_at, response__isnull=True
        ).update(created_at=now)
        if taken == 1:
            return IdempotencyState(key_id=existing.pk)
    return IdempotencyState(conflict="in_flight")


def idempotency_release(*, key_id: int) -> None:
    """Forget an in-flight key whose request failed, so that a retry can run."""
    try:
        IdempotencyKey.objects.filter(pk=key_id, response__isnull=True).delete()
    except Exception:
        logger.exception("Could not release idempotency key %s", key_id)


# The work queue


# collector id -> when this process last signalled it (saves a Redis call per request).
_last_signal: dict[str, float] = {}


def records_signal(*, collector_id: str) -> None:
    """Tell the processing side that a collector has new records, at most once a second
    per collector across all processes (the worker looks again a second after each pass
    that did work, so records arriving in between do not wait for the Beat sweep)."""
    now = time.monotonic()
    if now - _last_signal.get(collector_id, -1.0) < 1.0:
        return
    _last_signal[collector_id] = now
    try:
        if cache.add(f"collection:signal:{collector_id}", 1, 1):
            enqueue("collection.tasks.records_process", collector_id)
    except Exception:
        # The records are stored; the Beat sweep will pick them up.
        logger.exception("Could not signal the processing of collector %s", collector_id)


class ClaimLost(Exception):
    """A claimed batch was claimed again by another worker (this one was too slow)."""


@dataclass(frozen=True)
class Claim:
    collector_id: str
    claimed_at: datetime
    records: list[Record]


_CLAIM_SQL = """
UPDATE collection_record r SET status = 2, claimed_at = %(now)s
FROM (
    SELECT id, received_at, status AS old_status FROM collection_record
    WHERE collector_id = %(collector)s AND status IN (1, 2)
      AND (status = 1 OR claimed_at < %(stale_before)s)
    ORDER BY received_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) c
WHERE r.id = c.id AND r.received_at = c.received_at
RETURNING r.*, c.old_status
"""


def _add_deltas(counts: Counter) -> None:
    """Append rollup deltas: `counts` maps (operator, collector, type, status, hour) to n."""
    rows = [
        EventRollupDelta(
            operator_id=operator_id,
            collector_id=collector_id,
            type=type_,
            status=status,
            hour=hour,
            count=count,
        )
        for (operator_id, collector_id, type_, status, hour), count in counts.items()
        if count
    ]
    if rows:
        EventRollupDelta.objects.bulk_create(rows)


def _hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def records_claim(
    *, collector_id: str, limit: int | None = None, now: datetime | None = None
) -> Claim:
    """Claim up to `limit` of the collector's oldest UNPROCESSED records (and IN_PROGRESS
    ones whose claim timed out: their worker died) with FOR UPDATE SKIP LOCKED, so that
    concurrent workers take disjoint batches. Committed on return."""
    now = now or timezone.now()
    options = settings.TALLY["COLLECTION"]
    limit = limit or options["PROCESS_BATCH_SIZE"]
    stale_before = now - timedelta(seconds=options["CLAIM_TIMEOUT_SECONDS"])
    with transaction.atomic():
        records = list(
            Record.objects.raw(
                _CLAIM_SQL,
                {
                    "now": now,
                    "collector": collector_id,
                    "stale_before": stale_before,
                    "limit": limit,
                },
            )
        )
        deltas: Counter = Counter()
        for record in records:
            bucket = (record.operator_id, record.collector_id, record.type)
            hour = _hour(record.event_time)
            if record.old_status != Record.Status.IN_PROGRESS:
                deltas[(*bucket, record.old_status, hour)] -= 1
                deltas[(*bucket, Record.Status.IN_PROGRESS, hour)] += 1
        _add_deltas(deltas)
    records.sort(key=lambda record: (record.received_at, record.id))
    return Claim(collector_id=collector_id, claimed_at=now, records=records)


def claim_finish(*, claim: Claim, failures: dict[int, str]) -> None:
    """Mark a claimed batch PROCESSED (or FAILED with a reason), in the caller's
    transaction. If any record is no longer held by this claim, raise ClaimLost so the
    caller's transaction, processor effects included, is rolled back: a batch is
    processed once even when a slow worker's claim was taken over."""
    ids = [record.id for record in claim.records]
    failed_ids = [record_id for record_id in ids if record_id in failures]
    reasons = [failures[record_id][:1000] for record_id in failed_ids]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE collection_record r
            SET status = CASE WHEN f.reason IS NULL THEN 3 ELSE 4 END,
                failure_reason = f.reason, claimed_at = NULL
            FROM unnest(%s::bigint[]) AS c(id)
            LEFT JOIN unnest(%s::bigint[], %s::text[]) AS f(id, reason) ON f.id = c.id
            WHERE r.id = c.id AND r.status = 2 AND r.claimed_at = %s
            """,
            [ids, failed_ids, reasons, claim.claimed_at],
        )
        if cursor.rowcount != len(ids):
            raise ClaimLost(
                f"{len(ids) - cursor.rowcount} of {len(ids)} records were claimed again."
            )
    deltas: Counter = Counter()
    for record in claim.records:
        bucket = (record.operator_id, record.collector_id, record.type)
        hour = _hour(record.event_time)
        final = Record.Status.FAILED if record.id in failures else Record.Status.PROCESSED
        deltas[(*bucket, Record.Status.IN_PROGRESS, hour)] -= 1
        deltas[(*bucket, final, hour)] += 1
    _add_deltas(deltas)


def records_process_batch(*, collector_id: str, now: datetime | None = None) -> int:
    """Claim one batch of the collector's records and run its processor over it.

    Returns how many records were claimed (0: nothing to do, or no processor: records
    of a collector nobody processes stay UNPROCESSED). The processor runs in the same
    transaction that marks the records, so its effects and the new statuses commit
    together. A processor that raises marks the whole batch FAILED with the error.
    """
    collector = Collector.objects.filter(pk=collector_id).first()
    processor = processor_for(collector) if collector is not None else None
    if processor is None:
        return 0
    claim = records_claim(collector_id=str(collector_id), now=now)
    if not claim.records:
        return 0
    try:
        with transaction.atomic():
            failures = processor.process(claim.records) or {}
            claim_finish(claim=claim, failures=failures)
    except ClaimLost:
        logger.warning("A batch of collector %s was claimed again; dropped", collector_id)
        return 0
    except Exception as exc:
        logger.exception("The processor of collector %s failed a batch", collector_id)
        reason = f"{type(exc).__name__}: {exc}"
        try:
            with transaction.atomic():
                claim_finish(claim=claim, failures={r.id: reason for r in claim.records})
        except ClaimLost:
            return 0
    return len(claim.records)


def records_requeue_failed(*, record_ids: list[int]) -> int:
    """Put FAILED records back in the queue (UNPROCESSED, reason cleared)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE collection_record SET status = 1, failure_reason = NULL, claimed_at = NULL
            WHERE id = ANY(%s) AND status = 4
            RETURNING operator_id, collector_id, type, event_time
            """,
            [list(record_ids)],
        )
        rows = cursor.fetchall()
        deltas: Counter = Counter()
        for operator_id, collector_id, type_, event_time in rows:
            deltas[(operator_id, collector_id, type_, Record.Status.FAILED, _hour(event_time))] -= 1
            deltas[
                (operator_id, collector_id, type_, Record.Status.UNPROCESSED, _hour(event_time))
            ] += 1
        _add_deltas(deltas)
        for collector_id in {row[1] for row in rows}:
            transaction.on_commit(lambda c=str(collector_id): records_signal(collector_id=c))
    return len(rows)


# Housekeeping


def rollups_fold() -> int:
    """Move rollup deltas into their buckets; returns how many deltas were folded."""
    return deltas_fold(
        deltas_table=EventRollupDelta._meta.db_table,
        buckets_table=EventRollup._meta.db_table,
        keys=["operator_id", "collector_id", "type", "status", "hour"],
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


def idempotency_keys_sweep(*, now: datetime | None = None) -> int:
    """Forget Idempotency-Keys older than their retention."""
    hours = settings.TALLY["COLLECTION"]["IDEMPOTENCY_KEY_HOURS"]
    cutoff = (now or timezone.now()) - timedelta(hours=hours)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
