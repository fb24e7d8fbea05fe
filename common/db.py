"""Database helpers shared by apps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import connection, transaction


def deltas_fold(
    *,
    deltas_table: str,
    buckets_table: str,
    keys: Sequence[str],
    also: Sequence[tuple[str, Sequence[str], Sequence[str]]] = (),
    computed: Mapping[str, str] | None = None,
) -> int:
    """Move append-only count deltas into their buckets; returns how many were folded.

    Writers append deltas instead of updating a hot bucket row (which would serialise
    every writer on it); readers add buckets and pending deltas. DELETE … RETURNING takes
    each delta exactly once even with two folds at a time, and one upsert adds the sums.
    `also` names more bucket tables filled from the same deltas, each as (table, keys,
    columns of which at least one must be non-empty text for a delta to count there).
    `computed` names key columns the deltas do not have, each with the SQL expression
    over a delta's columns that gives it (a coarser bucket: `{"day": "hour::date"}`).
    Table and column names and expressions are the callers' own, never user input.
    """
    computed = computed or {}
    targets = [(buckets_table, list(keys), [])] + [
        (table, list(columns), list(needed)) for table, columns, needed in also
    ]
    returned = ", ".join(
        f"{computed[column]} AS {column}" if column in computed else column
        for column in dict.fromkeys(column for _, columns, _ in targets for column in columns)
    )
    parts = []
    for index, (table, columns, needed) in enumerate(targets):
        names = ", ".join(columns)
        where = f"WHERE {' OR '.join(f'{c} <> %s' for c in needed)}" if needed else ""
        parts.append(
            f"""
            , summed_{index} AS (
                SELECT {names}, sum(count) AS count, count(*) AS deltas
                FROM moved {where} GROUP BY {names}
            ), upserted_{index} AS (
                INSERT INTO {table} ({names}, count)
                SELECT {names}, count FROM summed_{index} ORDER BY {names}
                ON CONFLICT ({names}) DO UPDATE SET count = {table}.count + EXCLUDED.count
            )"""  # noqa: S608 (names are the callers' own)
        )
    params = ["" for _, _, needed in targets for _ in needed]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH moved AS (
                DELETE FROM {deltas_table} RETURNING {returned}, count
            ){"".join(parts)}
            SELECT coalesce(sum(deltas), 0) FROM summed_0
            """,  # noqa: S608
            params,
        )
        return int(cursor.fetchone()[0])
