"""Benchmark: reset 100,000 due meters (target: at most 10 s).

    .venv/bin/python bench/meter_reset.py [--meters 100000] [--baseline-sample 2000]
                                          [--batch-size 1000] [--workers 1]

Creates a scratch database next to DATABASE_URL's (`tally_bench_reset`), migrates it,
makes the due meters in bulk, times `meters_reset_due`, and drops the database at the
end. The baseline is a naive per-meter ORM reset (lock, create the period, enqueue the
notification, save the meter: one transaction per meter) measured in the same run on a
sample and extrapolated. Notification delivery is not scheduled (no broker traffic):
the figure is the reset itself. `--workers 2` runs two resets at once (threads, each
with its own connection), as two Celery workers would share a large reset.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BENCH_DB = "tally_bench_reset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--baseline-sample", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="concurrent resets (threads), as several Celery workers",
    )
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.support.scratch import django_on_scratch_database

    with django_on_scratch_database(BENCH_DB):
        run(args)


def run(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    from metering import notifications

    call_command("migrate", verbosity=0)
    # The bench measures the reset; it sends no delivery tasks to anyone's broker.
    notifications._schedule_sweep = lambda: None
    notifications._schedule_delivery = lambda notification_id: None

    now, meter_type = make_meters(args.meters)
    print(f"{args.meters:,} due meters created")

    from metering.models import MeterPeriod

    started = time.perf_counter()
    closed = reset_concurrently(now, args.batch_size, args.workers)
    seconds = time.perf_counter() - started
    assert closed == args.meters, closed
    assert MeterPeriod.objects.count() == args.meters
    rate = closed / seconds
    print(f"meters_reset_due, {args.workers} worker(s): {closed:,} periods in {seconds:.2f} s")
    print(f"  {rate:,.0f} periods/s")

    sample = args.baseline_sample
    naive_seconds = naive_reset(meter_type, now, sample)
    extrapolated = naive_seconds * args.meters / sample
    print(
        f"baseline (per-meter ORM, {sample:,} sample): {naive_seconds:.2f} s "
        f"→ {extrapolated:.1f} s for {args.meters:,} (extrapolated)"
    )
    print(f"ratio: {extrapolated / seconds:.1f}x faster than the baseline")
    print(f"target ≤ 10 s: {'met' if seconds <= 10 else 'MISSED'}")


def reset_concurrently(now, batch_size: int, workers: int) -> int:
    """meters_reset_due in `workers` threads at once, each with its own connection."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from metering.resets import meters_reset_due

    if workers == 1:
        return meters_reset_due(now=now, batch_size=batch_size)

    def work() -> int:
        try:
            return meters_reset_due(now=now, batch_size=batch_size)
        finally:
            connection.close()

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(lambda _: work(), range(workers)))


def make_meters(count: int):
    """`count` hourly meters whose period ended a minute ago, with some usage each."""
    import datetime

    from django.db import connection
    from django.utils import timezone

    from metering.models import Meter, MeterType
    from metering.services import customers_ensure
    from tenants.models import Operator

    operator = Operator.objects.create(name="Bench")
    meter_type = MeterType.objects.create(
        operator=operator, name="requests", unit="calls", aggregation="Sum", reset_cron="0 * * * *"
    )
    customers = customers_ensure(operator=operator, external_ids=[f"c{n}" for n in range(1000)])
    now = timezone.now().replace(minute=1, second=0, microsecond=0)
    period_end = now.replace(minute=0)
    period_start = period_end - datetime.timedelta(hours=1)
    external_ids = sorted(customers)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Meter._meta.db_table}
                (id, operator_id, meter_type_id, customer_id, meter_key, user_id,
                 custom_fields, delete_on_reset, value, group_breakdowns, record_count,
                 period_start, period_end, created_at, updated_at)
            SELECT gen_random_uuid(), %s, %s, c.customer_id, 'k' || n, c.external_id,
                   '{{}}', false, n %% 997, jsonb_build_object('eu', (n %% 997)::text),
                   1 + n %% 13, %s, %s, now(), now()
            FROM generate_series(1, %s) AS n
            JOIN unnest(%s::uuid[], %s::text[]) WITH ORDINALITY
                AS c(customer_id, external_id, position)
                ON c.position = 1 + n %% %s
            """,  # noqa: S608 (the table name is ours, values are parameters)
            [
                operator.pk,
                meter_type.pk,
                period_start,
                period_end,
                count,
                [customers[external_id].pk for external_id in external_ids],
                external_ids,
                len(external_ids),
            ],
        )
        cursor.execute("ANALYZE")
    return now, meter_type


def naive_reset(meter_type, now, sample: int) -> float:
    """Per-meter ORM reset of `sample` meters, moved back into a due period first."""
    import datetime

    from django.db import transaction

    from metering.models import Meter, MeterPeriod, Notification
    from metering.notifications import notification_enqueue
    from metering.schedule import next_fire

    hour = datetime.timedelta(hours=1)
    ids = list(Meter.objects.values_list("pk", flat=True)[:sample])
    Meter.objects.filter(pk__in=ids).update(
        period_start=now.replace(minute=0) - hour, period_end=now.replace(minute=0)
    )
    MeterPeriod.objects.filter(meter_id__in=ids).delete()

    started = time.perf_counter()
    for meter_id in ids:
        with transaction.atomic():
            meter = Meter.objects.select_related("meter_type").select_for_update().get(pk=meter_id)
            while meter.period_end <= now:
                MeterPeriod.objects.create(
                    operator_id=meter.operator_id,
                    meter=meter,
                    meter_type_id=meter.meter_type_id,
                    meter_key=meter.meter_key,
                    user_id=meter.user_id,
                    period_start=meter.period_start,
                    period_end=meter.period_end,
                    value=meter.value,
                    group_breakdowns=meter.group_breakdowns,
                    record_count=meter.record_count,
                )
                notification_enqueue(
                    operator_id=meter.operator_id,
                    kind=Notification.Kind.PERIOD_CLOSED,
                    payload={"meterId": str(meter.pk), "value": str(meter.value)},
                )
                meter.period_start, meter.period_end = (
                    meter.period_end,
                    next_fire(meter.meter_type.reset_cron, meter.meter_type.timezone, now),
                )
                meter.value, meter.group_breakdowns, meter.record_count = 0, {}, 0
                meter.save()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
