"""Ingestion: storing a batch of records durably in one statement, and counting requests."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from collection.models import Collector
from collection.parsing import NDJSON, PreparedBatch, TooManyRecords, parse_body, prepare_records
from collection.rules import IDEMPOTENCY_KEY_MAX_LENGTH, MAX_BATCH_RECORDS, MAX_BODY_BYTES
from collection.services.idempotency import body_digest, idempotency_begin, idempotency_release
from collection.services.work_queue import records_signal
from common.errors import ServiceConflict
from common.json import encode
from tenants.accounting import EVENT, GATEWAY_REQUEST, TEXT_MAX_LENGTH, usage_count
from tenants.models import UsageCounterDelta

logger = logging.getLogger(__name__)

# The connector a collector's requests are counted under.
CONNECTOR = "online-collection"


class CollectorGone(Exception):
    """The collector was deleted before the batch was stored; nothing was stored (404)."""


class CollectorNotReady(ServiceConflict):
    """Data sent to a collector that is still being created (409)."""


class IdempotencyMismatch(Exception):
    """The Idempotency-Key was used with another body (422)."""


class IdempotencyInFlight(ServiceConflict):
    """A request with this Idempotency-Key is still running (409)."""


class BodyTooLarge(Exception):
    """More bytes or records than one request may carry (413)."""


class UnsupportedContentType(Exception):
    """A body that is neither JSON nor NDJSON (415)."""


class IdempotencyKeyInvalid(ValueError):
    """An Idempotency-Key header of the wrong length (400)."""


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

# One statement stores the batch, if the collector is still live (the caller may have
# found it in a per-process cache): 1. claim each record id in the key table (in key order,
# so concurrent batches sharing ids cannot deadlock; a key another transaction holds makes
# this wait for it, then count as a duplicate); 2. insert the records whose key was new;
# 3. append their rollup deltas; 4. write the ingestion row with the counts; 5. count the
# gateway request and the events stored, by type (usage counter deltas, the rows
# `tenants.services.usage_counter_add` appends, inlined to stay in this statement: exact,
# and only for what was stored); 6. store the answer on the Idempotency-Key, if any.
# Steps 4-6 are the same in every ingestion statement (_TAIL_SQL); step 5's events come
# from `{events}`, grouped by type except for the one-record statement.
_TAIL_SQL = """
), ingestion AS (
    INSERT INTO collection_ingestion (
        id, operator_id, collector_id, received_at, size_bytes, record_count, accepted,
        duplicates, rejected
    )
    SELECT %(ingestion)s, %(operator)s, %(collector)s, %(now)s, %(size)s, %(record_count)s,
        a.n, %(candidates)s - a.n + %(batch_duplicates)s, %(rejected_count)s
    FROM (SELECT coalesce(sum(count), 0)::integer AS n FROM deltas) a
    WHERE EXISTS (SELECT FROM live)
    RETURNING accepted, duplicates
), counted AS (
    INSERT INTO {usage_table} (operator_id, hour, kind, key, connection, count)
    SELECT %(operator)s, date_trunc('hour', %(now)s::timestamptz), %(usage_kind)s,
        %(usage_key)s, %(collector_text)s, 1
    WHERE EXISTS (SELECT FROM live)
    UNION ALL
    SELECT %(operator)s, date_trunc('hour', %(now)s::timestamptz), %(event_kind)s,
        {events}
), answered AS (
    UPDATE collection_idempotencykey k SET response = jsonb_build_object(
        'ingestionId', %(ingestion_text)s, 'accepted', i.accepted,
        'duplicates', i.duplicates, 'rejected', %(rejected)s::jsonb)
    FROM ingestion i WHERE k.id = %(key_id)s
)
SELECT accepted, duplicates FROM ingestion
"""

_INGEST_SQL = (
    """
WITH live AS MATERIALIZED (
    SELECT 1 FROM collection_collector
    WHERE id = %(collector)s AND deleted_at IS NULL AND status = %(active)s
), incoming AS MATERIALIZED (
    SELECT md5(%(key_prefix)s || s.record_id)::uuid AS key_hash, s.*
    FROM {source}
    WHERE EXISTS (SELECT FROM live)
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
    RETURNING type, customer_id, account_id, event_time
), deltas AS (
    INSERT INTO collection_eventrollupdelta (
        operator_id, collector_id, type, customer_id, account_id, status, hour, count
    )
    SELECT %(operator)s, %(collector)s, type, customer_id, account_id, 1,
        date_trunc('hour', event_time), count(*)
    FROM stored GROUP BY type, customer_id, account_id, date_trunc('hour', event_time)
    RETURNING count
""".rstrip()
    + _TAIL_SQL
)
# Big batches are copied into a temporary table first. Small ones travel as arrays in the
# statement itself, which then is the whole write: one round trip in autocommit, without
# the COPY, BEGIN and COMMIT round trips or the temporary table's truncation at commit (a
# file operation that dominated single-record requests).
# Events by type; a type longer than a counter key is counted under its first
# TEXT_MAX_LENGTH characters.
_EVENTS_GROUPED = (
    f"left(type, {TEXT_MAX_LENGTH}), %(collector_text)s, count(*) "
    f"FROM stored GROUP BY left(type, {TEXT_MAX_LENGTH})"
)
_FROM_STAGING = _INGEST_SQL.format(
    source="collection_staging s",
    usage_table=UsageCounterDelta._meta.db_table,
    events=_EVENTS_GROUPED,
)
_FROM_ARRAYS = _INGEST_SQL.format(
    source="unnest(%(record_ids)s::text[], %(event_times)s::timestamptz[], %(types)s::text[], "
    "%(customer_ids)s::text[], %(account_ids)s::text[], %(payloads)s::text[]) "
    "AS s(record_id, event_time, type, customer_id, account_id, payload)",
    usage_table=UsageCounterDelta._meta.db_table,
    events=_EVENTS_GROUPED,
)
# One record, what a live client sends, has a statement of its own that does the same
# with plain parameters: no arrays to write and unnest, no sort, no grouping (about a
# third less work for PostgreSQL, and for the client, than the array statement).
_ONE_SQL = (
    """
WITH live AS MATERIALIZED (
    SELECT 1 FROM collection_collector
    WHERE id = %(collector)s AND deleted_at IS NULL AND status = %(active)s
), fresh AS (
    INSERT INTO collection_recordkey (key_hash, seen_at)
    SELECT md5(%(key_prefix)s || %(record_id)s)::uuid, %(now)s
    WHERE EXISTS (SELECT FROM live)
    ON CONFLICT (key_hash) DO NOTHING
    RETURNING key_hash
), stored AS (
    INSERT INTO collection_record (
        received_at, event_time, operator_id, collector_id, ingestion_id, record_id, type,
        customer_id, account_id, payload
    )
    SELECT %(now)s, %(event_time)s, %(operator)s, %(collector)s, %(ingestion)s,
        %(record_id)s, %(type)s, %(customer_id)s, %(account_id)s, %(payload)s::jsonb
    FROM fresh
    RETURNING type, customer_id, account_id, event_time
), deltas AS (
    INSERT INTO collection_eventrollupdelta (
        operator_id, collector_id, type, customer_id, account_id, status, hour, count
    )
    SELECT %(operator)s, %(collector)s, type, customer_id, account_id, 1,
        date_trunc('hour', event_time), 1
    FROM stored
    RETURNING count
""".rstrip()
    + _TAIL_SQL
)
_FROM_ONE = _ONE_SQL.format(
    usage_table=UsageCounterDelta._meta.db_table,
    events=f"left(type, {TEXT_MAX_LENGTH}), %(collector_text)s, 1 FROM stored",
)
_ONE_NAMES = ("record_id", "event_time", "type", "customer_id", "account_id", "payload")
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
    request and event counts and the Idempotency-Key's answer. Batches above
    COPY_THRESHOLD first COPY their rows into a temporary table, inside a transaction
    with a statement timeout; smaller ones pass them as arrays, and the statement is its
    own transaction. A database error leaves nothing behind. The processing side is
    signalled once committed.
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
        "event_kind": EVENT,
        "key_id": idempotency_key_id,
        "active": Collector.Status.ACTIVE,
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
            row = cursor.fetchone()
    elif len(batch.rows) == 1:
        params.update(zip(_ONE_NAMES, batch.rows[0], strict=True))
        with connection.cursor() as cursor:
            cursor.execute(_FROM_ONE, params)
            row = cursor.fetchone()
    else:
        columns = list(zip(*batch.rows, strict=True)) or [()] * len(_ARRAY_NAMES)
        for name, values in zip(_ARRAY_NAMES, columns, strict=True):
            params[name] = list(values)
        with connection.cursor() as cursor:
            cursor.execute(_FROM_ARRAYS, params)
            row = cursor.fetchone()
    if row is None:
        raise CollectorGone("The collector was deleted; nothing was stored.")
    accepted, duplicates = row
    if accepted:
        collector_id = str(collector.pk)
        transaction.on_commit(lambda: records_signal(collector_id=collector_id))
    return IngestionResult(ingestion_id, accepted, duplicates, batch.rejected)


def ingestion_count_gateway_request(*, collector: Collector, at: datetime | None = None) -> None:
    """Count one gateway request through the collector's connection (the
    `online-collection` connector) in Redis, for the next usage fold. Never raises."""
    usage_count(
        operator_id=collector.operator_id,
        kind=GATEWAY_REQUEST,
        key=CONNECTOR,
        connection=str(collector.pk),
        at=at,
    )


def ingestion_count_refused_request(*, collector: Collector) -> None:
    """Count a request that reached the collector but stored nothing (a bad body, a
    replay, a conflict): no database write for a request that wrote nothing, and a
    Redis that cannot be reached loses the count, never the answer."""
    ingestion_count_gateway_request(collector=collector)


@dataclass(frozen=True)
class IngestionAnswer:
    """What to answer (the result, or the first answer again for a replay), and whether
    this request stored its records (and so was counted with them)."""

    body: dict[str, Any]
    stored: bool


def ingestion_receive(
    *,
    collector: Collector,
    body: bytes,
    content_type: str,
    idempotency_key: str | None = None,
    collector_cached: bool = False,
    now: datetime | None = None,
) -> IngestionAnswer:
    """Receive one ingestion request: read the body, honour the Idempotency-Key, and
    store the records durably before returning.

    1. The collector must be ACTIVE; the body JSON or NDJSON within its byte limit and
       readable as records (BodyError names the record; BodyTooLarge,
       UnsupportedContentType, CollectorNotReady otherwise).
    2. An Idempotency-Key seen before replays its stored answer, refuses another body
       (IdempotencyMismatch) or a request still running (IdempotencyInFlight).
    3. The records are checked in one pass and stored in one statement (`ingest`); a
       failure releases the key so a retry can run.
    A request that stored nothing is still counted as a gateway request. When the
    caller took the collector from its process cache (`collector_cached`), a refused
    request first checks that the collector still exists: one deleted meanwhile is
    CollectorGone (404), uncounted, as the statement itself makes it for a stored one.
    """
    try:
        answer = _receive(collector, body, content_type, idempotency_key, now)
    except CollectorGone:
        raise
    except BaseException:
        _count_refused(collector, collector_cached)
        raise
    if not answer.stored:
        _count_refused(collector, collector_cached)
    return answer


def _count_refused(collector: Collector, collector_cached: bool) -> None:
    if collector_cached and not Collector.objects.live().filter(pk=collector.pk).exists():
        raise CollectorGone("The collector was deleted.")
    ingestion_count_refused_request(collector=collector)


def _receive(collector, body, content_type, idempotency_key, now) -> IngestionAnswer:
    if collector.status != Collector.Status.ACTIVE:
        raise CollectorNotReady("The collector is still being created; try again shortly.")
    if content_type not in ("application/json", NDJSON):
        raise UnsupportedContentType(content_type)
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        records = parse_body(body, content_type)
    except TooManyRecords:
        raise BodyTooLarge(f"A batch may hold at most {MAX_BATCH_RECORDS} records.") from None

    key_id = None
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
            raise IdempotencyKeyInvalid(f"Must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters.")
        state = idempotency_begin(
            collector=collector, key=idempotency_key, digest=body_digest(body, content_type)
        )
        if state.response is not None:
            # A replay stores nothing new but answers as the first request did.
            return IngestionAnswer(state.response, stored=False)
        if state.conflict == "mismatch":
            raise IdempotencyMismatch(
                "This Idempotency-Key was used with another body; use a new key."
            )
        if state.conflict == "in_flight":
            raise IdempotencyInFlight("A request with this Idempotency-Key is still in progress.")
        key_id = state.key_id

    now = now or timezone.now()
    try:
        result = ingest(
            collector=collector,
            batch=prepare_records(records, now),
            record_count=len(records),
            size_bytes=len(body),
            now=now,
            idempotency_key_id=key_id,
        )
    except Exception:
        if key_id is not None:
            idempotency_release(key_id=key_id)
        raise
    return IngestionAnswer(result.as_response(), stored=True)
