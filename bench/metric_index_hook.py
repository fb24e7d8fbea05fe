"""What indexed metrics cost the work queue: a batch processed without the hook, with it
for an operator that has no indexed metric, and with it keeping one.

    .venv/bin/python bench/metric_index_hook.py [--batches 20] [--customers 200]

Creates a scratch database (`tally_bench_metric_hook`) on the DATABASE_URL server and an
operator with a collector whose processor does nothing, so what is timed is the work
queue itself: `records_process_batch` (claim, process, mark PROCESSED, rollup deltas)
of 500 records, the median over `--batches` batches, in three rounds that take turns:

1. baseline: reporting's processed hook unregistered (the work queue as it was);
2. the hook, and the operator has no indexed metric (every operator pays this: the
   shared index lock and one query for its indexed metrics);
3. the hook keeping one READY indexed SUM metric over every record (its rollups upserted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

BENCH_DB = "tally_bench_metric_hook"
BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.support.scratch import django_on_scratch_database

    with django_on_scratch_database(BENCH_DB):
        run(args)


class DoNothing:
    """A processor that processes: the records simply become PROCESSED."""

    def process(self, records) -> dict[int, str]:
        return {}


def run(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from collection import processing
    from collection.services import collector_create, collector_provision, work_queue
    from reporting import definitions
    from reporting.models import INDEXED_EVERYTHING, MetricDefinition, MetricRollup
    from reporting.services import metric_create, metrics_index_batch
    from tenants.services import operator_create

    call_command("migrate", verbosity=0)
    operator = operator_create(name="Bench")
    collector = collector_create(operator=operator, name="bench")
    collector_provision(collector_id=collector.pk)
    processing.register_resolver(lambda found: DoNothing())

    metric = metric_create(
        operator=operator,
        name="calls",
        query_type=definitions.INDEXED,
        aggregation_type=definitions.SUM,
        event_name="call",
        value_property="$.n",
    )
    # Ready at once: the rounds time the live upserts, not a backfill.
    MetricDefinition.objects.filter(pk=metric.pk).update(
        index_status=MetricDefinition.IndexStatus.READY, indexed_through=INDEXED_EVERYTHING
    )
    # The three rounds take turns, batch by batch, so the growing table weighs on each
    # alike: the queue holds blocks of 500 in claim order, of type "other" (no metric
    # reads it) for rounds 1 and 2 and "call" for round 3.
    rounds = ("other", "other", "call")
    turns = 3 * (args.batches + 2)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO collection_record (received_at, event_time, operator_id,
                collector_id, ingestion_id, status, record_id, type, customer_id, payload)
            SELECT now() - make_interval(secs => %s - n / %s),
                now() - make_interval(mins => n %% 600),
                %s, %s, gen_random_uuid(), 1, 'r' || n, (%s::text[])[(n / %s) %% 3 + 1],
                'c' || (n %% %s), jsonb_build_object('n', n %% 97)
            FROM generate_series(0, %s - 1) AS n
            """,
            [turns, BATCH, operator.pk, collector.pk, list(rounds), BATCH, args.customers,
             turns * BATCH],
        )  # fmt: skip
        cursor.execute("ANALYZE collection_record")

    times: list[list[float]] = [[], [], []]
    for turn in range(turns):
        kind = turn % 3
        if kind == 0:
            processing._processed_hooks.remove(metrics_index_batch)
        started = time.perf_counter()
        assert work_queue.records_process_batch(collector_id=str(collector.pk)) == BATCH
        times[kind].append((time.perf_counter() - started) * 1000)
        if kind == 0:
            processing.register_processed_hook(metrics_index_batch)
    # The first two of each warm caches and plans.
    baseline, without_metric, with_metric = (statistics.median(each[2:]) for each in times)
    stored = MetricRollup.objects.filter(metric=metric).count()

    print(f"records_process_batch of {BATCH} records, {args.customers} customers, median of "
          f"{args.batches} batches")  # fmt: skip
    print(f"1. baseline, no hook                  {baseline:7.1f} ms")
    print(f"2. hook, no indexed metric            {without_metric:7.1f} ms   "
          f"{without_metric / baseline:4.2f}x baseline")  # fmt: skip
    print(f"3. hook, one indexed SUM metric       {with_metric:7.1f} ms   "
          f"{with_metric / baseline:4.2f}x baseline ({stored:,} hourly rollups)")  # fmt: skip


if __name__ == "__main__":
    main()
