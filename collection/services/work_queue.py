"""The record work queue: signal, claim, process, finish, re-queue.

Records wait UNPROCESSED; a worker claims a batch (FOR UPDATE SKIP LOCKED, so workers
take disjoint batches), runs the collector's processor over it and marks it PROCESSED or
FAILED in the transaction that holds the processor's effects. Every status change
appends rollup deltas, so counts by status never need a scan.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from collection.models import Collector, EventRollupDelta, Record
from collection.processing import (
    ClaimedRecord,
    ProcessorRetry,
    processed_hooks,
    processor_for,
)
from common.json import loads_lenient
from common.tasks import enqueue

logger = logging.getLogger(__name__)


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
    records: list[ClaimedRecord]


_CLAIM_SQL = """
UPDATE collection_record r SET status = 2, claimed_at = %(now)s
FROM (
    SELECT id, received_at, status AS old_status FROM collection_record
    WHERE collector_id = %(collector)s AND status IN (1, 2)
      AND received_at >= %(floor)s
      AND (status = 1 OR claimed_at < %(stale_before)s)
    ORDER BY received_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) c
WHERE r.id = c.id AND r.received_at = c.received_at
RETURNING r.id, r.record_id, r.operator_id, r.collector_id, r.ingestion_id, r.type,
          r.customer_id, r.account_id, r.event_time, r.received_at, r.payload::text,
          c.old_status
"""


def _add_deltas(counts: Counter) -> None:
    """Append rollup deltas: `counts` maps (operator, collector, type, customer id,
    account id, status, hour) to n (the bucket keys of `_bucket`)."""
    rows = [
        EventRollupDelta(
            operator_id=operator_id,
            collector_id=collector_id,
            type=type_,
            customer_id=customer_id,
            account_id=account_id,
            status=status,
            hour=hour,
            count=count,
        )
        for (
            operator_id,
            collector_id,
            type_,
            customer_id,
            account_id,
            status,
            hour,
        ), count in counts.items()
        if count
    ]
    if rows:
        EventRollupDelta.objects.bulk_create(rows)


def _bucket(operator_id, collector_id, type_, customer_id, account_id) -> tuple:
    """A record's rollup bucket, less its status and hour."""
    return (operator_id, collector_id, type_, customer_id or "", account_id or "")


def _hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# Where a collector's next claim starts reading the queue, per process: just before the
# newest record it last claimed. Records behind it are processed (their index entries
# linger until vacuum, and under load every claim would walk them all), or stragglers: a
# record re-queued, a claim of a dead worker, a record whose ingestion committed late.
# Those are found by a full scan, made when the short scan comes back short and every
# FULL_SCAN_EVERY claims.
_floors: dict[str, tuple[datetime, int]] = {}
FULL_SCAN_EVERY = 20
FLOOR_MARGIN = timedelta(seconds=2)
_NO_FLOOR = datetime(1970, 1, 1, tzinfo=UTC)


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
    floor, since_full = _floors.get(collector_id, (_NO_FLOOR, FULL_SCAN_EVERY))
    if since_full >= FULL_SCAN_EVERY:
        floor = _NO_FLOOR
    with transaction.atomic():
        rows = _claim_rows(collector_id, now, stale_before, limit, floor)
        if floor is not _NO_FLOOR and len(rows) < limit:
            floor = _NO_FLOOR
            rows += _claim_rows(collector_id, now, stale_before, limit - len(rows), floor)
        # Payloads were checked when they were stored: decoded without checking again.
        records = [ClaimedRecord(*row[:10], loads_lenient(row[10]), row[11]) for row in rows]
        deltas: Counter = Counter()
        for record in records:
            bucket = _bucket(
                record.operator_id,
                record.collector_id,
                record.type,
                record.customer_id,
                record.account_id,
            )
            hour = _hour(record.event_time)
            if record.old_status != Record.Status.IN_PROGRESS:
                deltas[(*bucket, record.old_status, hour)] -= 1
                deltas[(*bucket, Record.Status.IN_PROGRESS, hour)] += 1
        _add_deltas(deltas)
    if records:
        newest = max(record.received_at for record in records)
        _floors[collector_id] = (newest - FLOOR_MARGIN, 0 if floor is _NO_FLOOR else since_full + 1)
    records.sort(key=lambda record: (record.received_at, record.id))
    return Claim(collector_id=collector_id, claimed_at=now, records=records)


def _claim_rows(collector_id, now, stale_before, limit, floor) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "now": now,
                "collector": collector_id,
                "stale_before": stale_before,
                "limit": limit,
                "floor": floor,
            },
        )
        return cursor.fetchall()


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
        bucket = _bucket(
            record.operator_id,
            record.collector_id,
            record.type,
            record.customer_id,
            record.account_id,
        )
        hour = _hour(record.event_time)
        final = Record.Status.FAILED if record.id in failures else Record.Status.PROCESSED
        deltas[(*bucket, Record.Status.IN_PROGRESS, hour)] -= 1
        deltas[(*bucket, final, hour)] += 1
    _add_deltas(deltas)
    processed = [record for record in claim.records if record.id not in failures]
    if processed:
        for hook in processed_hooks():
            hook(processed)


# Errors that say nothing about the records: the database, the cache or the broker was
# briefly unreachable. A batch that meets one is left to be claimed again, untouched.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
    KombuOperationalError,
    RedisConnectionError,
    RedisTimeoutError,
    ProcessorRetry,
)


def records_process_batch(*, collector_id: str, now: datetime | None = None) -> int:
    """Claim one batch of the collector's records and run its processor over it.

    Returns how many records were claimed (0: nothing to do, or no processor: records
    of a collector nobody processes stay UNPROCESSED). The processor runs in the same
    transaction that marks the records, so its effects and the new statuses commit
    together.

    1. The whole batch is processed at once; records the processor reports are FAILED
       with their reason.
    2. If the processor raises, the batch is processed again one record at a time, each
       in a savepoint: a record that raises fails alone, with the error as its reason,
       and its neighbours are processed.
    3. A transient error (database, cache or broker unreachable) fails no record: the
       claim is given back so the batch is claimed again (or, if even that cannot be
       written, the claim times out and another worker takes it).
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
            _claim_hold(claim)
            try:
                with transaction.atomic():
                    failures = processor.process(claim.records) or {}
            except TRANSIENT_ERRORS:
                raise
            except Exception:
                logger.exception(
                    "The processor of collector %s failed a batch; retrying it record by record",
                    collector_id,
                )
                failures = _process_one_by_one(processor, claim.records)
            claim_finish(claim=claim, failures=failures)
    except ClaimLost:
        logger.warning("A batch of collector %s was claimed again; dropped", collector_id)
        return 0
    except TRANSIENT_ERRORS:
        logger.warning(
            "A transient error stopped a batch of collector %s; it will be claimed again",
            collector_id,
            exc_info=True,
        )
        _claim_release(claim)
        return 0
    return len(claim.records)


def _claim_hold(claim: Claim) -> None:
    """Lock the claimed rows for the rest of the processing transaction. A batch that
    runs past the claim timeout (a slow HTTP node) is then skipped by other workers'
    claims (SKIP LOCKED) for as long as its worker lives; if the worker dies, its
    transaction ends, the locks go, and the timed-out claim is taken over."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT id FROM collection_record
            WHERE id = ANY(%s) AND status = 2 AND claimed_at = %s
            FOR UPDATE
            """,
            [[record.id for record in claim.records], claim.claimed_at],
        )
        held = len(cursor.fetchall())
    if held != len(claim.records):
        raise ClaimLost(
            f"{len(claim.records) - held} of {len(claim.records)} records were claimed again."
        )


def _process_one_by_one(processor, records: list[ClaimedRecord]) -> dict[int, str]:
    failures: dict[int, str] = {}
    for record in records:
        try:
            with transaction.atomic():
                failures.update(processor.process([record]) or {})
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            failures[record.id] = f"{type(exc).__name__}: {exc}"
    return failures


def _claim_release(claim: Claim) -> None:
    """Give a claimed batch back to the queue at once (best effort: when the database
    is what failed, the claim timeout does the same later)."""
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    UPDATE collection_record SET status = 1, claimed_at = NULL
                    WHERE id = ANY(%s) AND status = 2 AND claimed_at = %s
                    RETURNING operator_id, collector_id, type, customer_id, account_id,
                              event_time
                    """,
                    [[record.id for record in claim.records], claim.claimed_at],
                )
                rows = cursor.fetchall()
            deltas: Counter = Counter()
            for *identity, event_time in rows:
                bucket = _bucket(*identity)
                deltas[(*bucket, Record.Status.IN_PROGRESS, _hour(event_time))] -= 1
                deltas[(*bucket, Record.Status.UNPROCESSED, _hour(event_time))] += 1
            _add_deltas(deltas)
    except TRANSIENT_ERRORS:
        logger.warning("Could not give back a claim; its timeout will", exc_info=True)


def records_requeue_failed(*, record_ids: list[int]) -> int:
    """Put FAILED records back in the queue (UNPROCESSED, reason cleared)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE collection_record SET status = 1, failure_reason = NULL, claimed_at = NULL
            WHERE id = ANY(%s) AND status = 4
            RETURNING operator_id, collector_id, type, customer_id, account_id, event_time
            """,
            [list(record_ids)],
        )
        rows = cursor.fetchall()
        deltas: Counter = Counter()
        for *identity, event_time in rows:
            bucket = _bucket(*identity)
            deltas[(*bucket, Record.Status.FAILED, _hour(event_time))] -= 1
            deltas[(*bucket, Record.Status.UNPROCESSED, _hour(event_time))] += 1
        _add_deltas(deltas)
        for collector_id in {row[1] for row in rows}:
            transaction.on_commit(lambda c=str(collector_id): records_signal(collector_id=c))
    return len(rows)
