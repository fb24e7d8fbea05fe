"""Database helpers shared by apps."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, transaction


def deltas_fold(*, deltas_table: str, buckets_table: str, keys: Sequence[str]) -> int:
    """Move append-only count deltas into their buckets; returns how many were folded.

    Writers append deltas instead of updating a hot bucket row (which would serialise
    every writer on it); readers add buckets and pending deltas. DELETE … RETURNING takes
    each delta exactly once even with two folds at a time, and one upsert adds the sums.
    Table and column names are the callers' own, never user input.
    """
    columns = ", ".join(keys)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH moved AS (
                DELETE FROM {deltas_table} RETURNING {columns}, count
            ), summed AS (
                SELECT {columns}, sum(count) AS count, count(*) AS deltas
                FROM moved GROUP BY {columns}
            ), upserted AS (
                INSERT INTO {buckets_table} ({columns}, count)
                SELECT {columns}, count FROM summed ORDER BY {columns}
                ON CONFLICT ({columns})
                DO UPDATE SET count = {buckets_table}.count + EXCLUDED.count
            )
            SELECT coalesce(sum(deltas), 0) FROM summed
            """  # noqa: S608
        )
        return int(cursor.fetchone()[0])
