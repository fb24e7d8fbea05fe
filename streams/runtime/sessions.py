"""Aggregation sessions in the database: keys, locking, saving and once-only flushes.

Aggregator nodes keep their groups as `AggregationSession` rows of their store. Every
change happens in the transaction of the batch that makes it (the Streams rule: a
record's effects commit with its new status or not at all):

* `sessions_lock` makes sure a row exists for each key (INSERT ... ON CONFLICT DO
  NOTHING, so two workers creating the same session meet on the unique key instead of
  overwriting each other), then locks the rows in key order (no deadlock between two
  batches touching the same keys) and returns them.
* `sessions_save` writes the changed rows back in one statement.
* `sessions_flush` removes flushed rows and records each flush in `AggregationFlush`,
  whose unique session id lets only one transaction emit a given session: a racing
  worker or a retried batch finds the row taken and emits nothing.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection

from common.json import encode, format_datetime, loads_lenient
from streams.models import AggregationFlush, AggregationSession
from streams.runtime.paths import MISSING, to_text

_SEPARATOR = "|"


def key_part(value: Any) -> str:
    """One group value as it goes into a session key: its text as templates write it
    (numbers without trailing zeros, true/false, "" for null or missing)."""
    text = "" if value is MISSING else to_text(value)
    return text.replace("\\", "\\\\").replace(_SEPARATOR, "\\" + _SEPARATOR)


def session_key(values: list[Any]) -> str:
    """The session key of a list of group values, in the order of the group fields:
    their texts joined by "|" (a "|" or "\\" inside a value is escaped), so the lookup
    endpoint computes the same key from the values a client sends."""
    return _SEPARATOR.join(key_part(value) for value in values)


@dataclass
class StoredSession:
    """A session row as the runtime works on it."""

    id: int | None
    key: str
    key_values: list[Any]
    data: dict[str, Any]
    meta: dict[str, Any]
    created_at: datetime.datetime
    timeout_at: datetime.datetime | None

    @classmethod
    def of(cls, row: AggregationSession) -> StoredSession:
        return cls(
            row.id, row.key, row.key_values, row.data, row.meta, row.created_at, row.timeout_at
        )


def sessions_lock(
    *,
    operator_id: uuid.UUID,
    store_id: uuid.UUID,
    keys: dict[str, list[Any]],
    now: datetime.datetime,
    timeout: datetime.timedelta | None,
) -> dict[str, StoredSession]:
    """The sessions of `keys` ({key: group values}), created where missing (empty, with
    `timeout` from now) and locked until the transaction ends."""
    if not keys:
        return {}
    # Milliseconds, as sessions show their times (and scripts hand them back).
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    ordered = sorted(keys)
    table = AggregationSession._meta.db_table
    timeout_at = now + timeout if timeout is not None else None
    # One JSON document per statement: psycopg escapes each element of a text[] in
    # Python, which cost more than the rest of the batch's session work together.
    wanted = encode([{"key": key, "key_values": keys[key]} for key in ordered]).decode()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table}
                (operator_id, store_id, key, key_values, data, meta,
                 created_at, updated_at, timeout_at)
            SELECT %s, %s, k.key, k.key_values, '{{}}'::jsonb,
                   '{{"count": 0}}'::jsonb, %s, %s, %s
            FROM jsonb_to_recordset(%s::jsonb) AS k(key text, key_values jsonb)
            ORDER BY k.key
            ON CONFLICT (store_id, key) DO NOTHING
            """,  # noqa: S608 (our table)
            [operator_id, store_id, now, now, timeout_at, wanted],
        )
        cursor.execute(
            f"""
            SELECT id, key, key_values::text, data::text, meta::text, created_at, timeout_at
            FROM {table}
            WHERE store_id = %s AND key = ANY(%s)
            ORDER BY key
            FOR UPDATE
            """,  # noqa: S608 (our table)
            [store_id, ordered],
        )
        rows = cursor.fetchall()
    return {row[1]: _stored(row) for row in rows}


def _stored(row) -> StoredSession:
    # Tally wrote these documents itself: the lenient decoder skips the checks made on
    # what clients send.
    id_, key, key_values, data, meta, created_at, timeout_at = row
    return StoredSession(
        id_,
        key,
        loads_lenient(key_values),
        loads_lenient(data),
        loads_lenient(meta),
        created_at,
        timeout_at,
    )


def sessions_for(
    ctx, *, store_id: uuid.UUID, keys: dict[str, list[Any]], timeout: datetime.timedelta | None
) -> dict[str, StoredSession]:
    """A node's sessions for this batch: locked and created where missing in a real run,
    read as they are in a preview (which changes nothing)."""
    if ctx.side_effects:
        return sessions_lock(
            operator_id=ctx.operator_id, store_id=store_id, keys=keys, now=ctx.now, timeout=timeout
        )
    return sessions_read(store_id=store_id, keys=list(keys))


def sessions_read(*, store_id: uuid.UUID, keys: list[str]) -> dict[str, StoredSession]:
    """The stored sessions of `keys`, unlocked (for previews, which change nothing)."""
    rows = AggregationSession.objects.filter(store_id=store_id, key__in=list(keys))
    return {row.key: StoredSession.of(row) for row in rows}


def sessions_save(sessions: list[StoredSession], *, now: datetime.datetime) -> None:
    """Write back the data, meta and timeout of locked sessions, in one statement."""
    rows = [session for session in sessions if session.id is not None]
    if not rows:
        return
    table = AggregationSession._meta.db_table
    changed = encode(
        [
            {
                "id": session.id,
                "data": session.data,
                "meta": session.meta,
                "timeout_at": format_datetime(session.timeout_at),
            }
            for session in rows
        ]
    ).decode()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} AS s
            SET data = v.data, meta = v.meta, timeout_at = v.timeout_at, updated_at = %s
            FROM jsonb_to_recordset(%s::jsonb)
                AS v(id bigint, data jsonb, meta jsonb, timeout_at timestamptz)
            WHERE s.id = v.id
            """,  # noqa: S608 (our table)
            [now, changed],
        )


def sessions_insert(
    *, operator_id: uuid.UUID, store_id: uuid.UUID, sessions: list[StoredSession], now
) -> None:
    """Store sessions begun in this batch after their key's earlier session was flushed
    (the key is free again: the flush deleted its row in this transaction)."""
    if sessions:
        AggregationSession.objects.bulk_create(
            [
                AggregationSession(
                    operator_id=operator_id,
                    store_id=store_id,
                    key=session.key,
                    key_values=session.key_values,
                    data=session.data,
                    meta=session.meta,
                    created_at=session.created_at,
                    updated_at=now,
                    timeout_at=session.timeout_at,
                )
                for session in sessions
            ]
        )


def sessions_flush(
    *,
    operator_id: uuid.UUID,
    store_id: uuid.UUID,
    sessions: list[StoredSession],
    flush_type: str,
    now: datetime.datetime,
) -> set[int]:
    """Record the flush of stored sessions and delete them; returns the ids this
    transaction won (only those may be emitted). Sessions never stored are not here:
    they live and end inside one batch."""
    stored = [session for session in sessions if session.id is not None]
    if not stored:
        return set()
    table = AggregationFlush._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (operator_id, store_id, session_id, key, flush_type, flushed_at)
            SELECT %s, %s, f.session_id, f.key, %s, %s
            FROM unnest(%s::bigint[], %s::text[]) AS f(session_id, key)
            ORDER BY f.session_id
            ON CONFLICT (session_id) DO NOTHING
            RETURNING session_id
            """,  # noqa: S608 (our table)
            [
                operator_id,
                store_id,
                flush_type,
                now,
                [session.id for session in stored],
                [session.key for session in stored],
            ],
        )
        won = {row[0] for row in cursor.fetchall()}
    AggregationSession.objects.filter(id__in=[session.id for session in stored]).delete()
    return won
