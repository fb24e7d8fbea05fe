"""Claiming a batch from a work queue that has processed many records, by the claim service.

    .venv/bin/python bench/queue_claim.py [--records 100000] [--queued 10000] [--claims 5]

Creates a scratch database (`tally_bench_claim`) on the DATABASE_URL server, migrates it,
and stores `--records` records for one collector; all but the newest `--queued` are then
marked PROCESSED the way workers do (an UPDATE). Their queue-index entries stay until
vacuum, and a second connection holds a snapshot from before the update, as concurrent
transactions do on a busy system, so PostgreSQL cannot mark them dead. Then, timing
`records_claim` (500 records each; each batch is then marked PROCESSED, untimed, as a
worker does):

1. from the queue's start: the claim as it was, reading the index from the oldest entry;
2. from the floor: the claim as it is, starting just before the last claim's newest record;
3. baseline: from the queue's start again after the snapshot ends and a VACUUM (what an
   idle, vacuumed queue costs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

BENCH_DB = "tally_bench_claim"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--claims", type=int, default=5)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.support.scratch import django_on_scratch_database

    with django_on_scratch_database(BENCH_DB):
        run(args)


def run(args) -> None:
    import django

    django.setup()
    import psycopg
    from django.core.management import call_command
    from django.db import connection, transaction

    from collection.services import collector_create, collector_provision, work_queue
    from tenants.services import operator_create

    call_command("migrate", verbosity=0)
    operator = operator_create(name="Bench")
    collector = collector_create(operator=operator, name="bench")
    collector_provision(collector_id=collector.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO collection_record (received_at, event_time, operator_id, collector_id,
                ingestion_id, status, record_id, payload)
            SELECT t, t, %s, %s, gen_random_uuid(), 1, 'r' || n, '{"sheets": 1}'
            FROM generate_series(1, %s) AS n,
                 LATERAL (SELECT now() - make_interval(secs => (%s - n) / 1000.0) AS t) AS m
            """,
            [operator.pk, collector.pk, args.records, args.records],
        )
        cursor.execute("VACUUM ANALYZE collection_record")
    settings = connection.settings_dict
    holder = psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
    )
    holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM collection_record").fetchone()
    processed = args.records - args.queued
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE collection_record SET status = 3 WHERE id IN (
                SELECT id FROM collection_record ORDER BY received_at, id LIMIT %s)
            """,
            [processed],
        )
    print(f"{args.records:,} records, {processed:,} processed behind {args.queued:,} queued")

    collector_id = str(collector.pk)

    def timed(from_start: bool) -> float:
        times = []
        for _ in range(args.claims):
            if from_start:
                work_queue._floors.pop(collector_id, None)
            started = time.perf_counter()
            claim = work_queue.records_claim(collector_id=collector_id, limit=500)
            times.append((time.perf_counter() - started) * 1000)
            assert len(claim.records) == 500
            with transaction.atomic():  # done, as a worker would be (not timed)
                work_queue.claim_finish(claim=claim, failures={})
        return statistics.median(times)

    start = timed(from_start=True)
    timed(from_start=False)  # sets the floor as a worker's first claim does
    floor = timed(from_start=False)
    holder.rollback()
    holder.close()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE collection_record")
    vacuumed = timed(from_start=True)

    print(f"1. claim from the queue's start   {start:8.1f} ms per 500 (median of {args.claims})")
    print(
        f"2. claim from the floor           {floor:8.1f} ms per 500   {start / floor:5.1f}x faster"
    )
    print(f"3. baseline, vacuumed, from start {vacuumed:8.1f} ms per 500   floor / baseline "
          f"{floor / vacuumed:4.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
