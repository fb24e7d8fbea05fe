"""Benchmark: usage_apply throughput (target: >= 100,000 updates/s and >= 20x naive).

    .venv/bin/python bench/usage_apply.py [--updates 1000000] [--meters 10000]
        [--batch-size 1000] [--naive-sample 20000]

Creates a scratch database next to DATABASE_URL's (`tally_bench_usage`), migrates it and
drops it at the end. One Sum meter type; its meters (1,000 users x 10 meter keys by
default) are created by a first untimed pass, then `--updates` updates, spread uniformly
over the meters with one small record each, go through `usage_apply` in batches. Only
the `usage_apply` calls are timed; building the UsageUpdate objects is the caller's work.

Printed in the same run:
- usage_apply: the full service (locking, folding, carries, metadata, rollups, threshold
  check) in updates per second;
- naive: per update, lock the meter with the ORM, `meter.value += …; meter.save()`
  (one transaction per batch, no rollups), measured on a sample and extrapolated;
- physical reference: the same batches folded into the meters by one SQL
  `INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE` per batch (value and record count
  only), the floor for "one statement per batch".
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

BENCH_DB = "tally_bench_usage"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1_000_000)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--naive-sample", type=int, default=20_000)
    parser.add_argument("--profile", help="write a pyinstrument profile (.html or .txt)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.support.scratch import django_on_scratch_database

    with django_on_scratch_database(BENCH_DB, keep=args.keep):
        run(args)


class Workload:
    """A repeatable stream of updates over `meters` meters of one meter type.

    The same seed gives the same batches, so a run can be replayed to check its total.
    """

    KEYS_PER_USER = 4

    def __init__(self, meter_type, meters: int, now, seed: int) -> None:
        self.type_id = meter_type.pk
        self.now = now
        self.random = random.Random(seed)
        self.users = [
            f"user{index}@bench.example"
            for index in range(max(1, -(-meters // self.KEYS_PER_USER)))
        ]
        self.identities = [
            (f"key-{index % self.KEYS_PER_USER}", self.users[index // self.KEYS_PER_USER])
            for index in range(meters)
        ]

    def every_meter(self) -> list[tuple]:
        """One update of 1 for every meter: creates them all."""
        return [(self.type_id, key, user, Decimal(1), self.now) for key, user in self.identities]

    def batch(self, size: int) -> list[tuple]:
        """`size` updates on random meters, values with cents, times within the last hour."""
        updates = []
        for _ in range(size):
            key, user = self.random.choice(self.identities)
            value = Decimal(self.random.randint(1, 100_000)) / 100
            at = self.now - timedelta(seconds=self.random.randint(0, 3_599))
            updates.append((self.type_id, key, user, value, at))
        return updates


def as_updates(batch):
    from metering.usage import UsageUpdate

    return [
        UsageUpdate(type_id, None, key, user, value, at, None, {"n": i})
        for i, (type_id, key, user, value, at) in enumerate(batch)
    ]


def run(args) -> None:
    import django

    django.setup()
    import datetime

    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import Sum

    from metering.models import Meter, MeterType, UsageRollup
    from metering.usage import usage_apply
    from tenants.services import operator_create

    call_command("migrate", verbosity=0)
    operator = operator_create(name="Bench")
    meter_type = MeterType.objects.create(
        operator=operator,
        name="api-calls",
        unit="calls",
        aggregation=MeterType.Aggregation.SUM,
        reset_cron="0 0 1 * *",
    )
    # Mid-month, so the whole run stays in one period.
    now = datetime.datetime(2026, 3, 15, 12, tzinfo=datetime.UTC)

    # 1. Create the meters (untimed).
    workload = Workload(meter_type, args.meters, now, seed=1)
    everything = workload.every_meter()
    for start in range(0, len(everything), args.batch_size):
        chunk = as_updates(everything[start : start + args.batch_size])
        usage_apply(operator=operator, updates=chunk, now=now)
    meters = Meter.objects.count()
    print(f"{meters:,} meters, {len(workload.users):,} users; batches of {args.batch_size:,}")

    # 2. usage_apply, timed call by call.
    def apply_all(workload: Workload, total: int) -> tuple[float, float]:
        spent = cpu = 0.0
        done = 0
        step, mark, mark_spent = max(total // 10, 1), 0, 0.0
        while done < total:
            updates = as_updates(workload.batch(min(args.batch_size, total - done)))
            started, started_cpu = time.perf_counter(), time.process_time()
            usage_apply(operator=operator, updates=updates, now=now)
            spent += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
            done += len(updates)
            if done - mark >= step:
                rate = (done - mark) / (spent - mark_spent)
                print(f"  {done:>10,} updates: {rate:>9,.0f} updates/s", flush=True)
                mark, mark_spent = done, spent
        return spent, cpu

    before = Meter.objects.aggregate(total=Sum("value"))["total"]
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    workload = Workload(meter_type, args.meters, now, seed=2)
    seconds, cpu = apply_all(workload, args.updates)
    if profiler is not None:
        profiler.stop()
        text = args.profile.endswith(".txt")
        Path(args.profile).write_text(profiler.output_text() if text else profiler.output_html())
    replay = Workload(meter_type, args.meters, now, seed=2)
    expected = sum(_values(replay, args.updates, args.batch_size))
    after = Meter.objects.aggregate(total=Sum("value"))["total"]
    assert after - before == expected, (after - before, expected)
    rollup_count = UsageRollup.objects.aggregate(n=Sum("record_count"))["n"]
    assert rollup_count == meters + args.updates, rollup_count
    service_rate = args.updates / seconds
    print(
        f"usage_apply:        {service_rate:>12,.0f} updates/s ({seconds:.2f} s,"
        f" of which {cpu:.2f} s CPU in this process)"
    )

    # 3. Naive: one ORM read and save per update, on a sample.
    sample = min(args.naive_sample, args.updates)
    workload = Workload(meter_type, args.meters, now, seed=3)
    spent, done = 0.0, 0
    while done < sample:
        batch = workload.batch(min(args.batch_size, sample - done))
        started = time.perf_counter()
        with transaction.atomic():
            for type_id, key, user, value, at in batch:
                meter = Meter.objects.select_for_update().get(
                    meter_type_id=type_id, meter_key=key, user_id=user
                )
                meter.value += value
                meter.record_count += 1
                meter.last_event_at = at
                meter.save()
        spent += time.perf_counter() - started
        done += len(batch)
    naive_rate = sample / spent
    print(f"naive ORM save():   {naive_rate:>12,.0f} updates/s ({sample:,} sampled)")

    # 4. Physical reference: one INSERT … GROUP BY … ON CONFLICT DO UPDATE per batch.
    import json

    reference = f"""
        INSERT INTO {Meter._meta.db_table} AS m (
            id, operator_id, meter_type_id, customer_id, meter_key, user_id, custom_fields,
            delete_on_reset, value, group_breakdowns, record_count, period_start,
            period_end, created_at, updated_at
        )
        SELECT gen_random_uuid(), %s, u.t, c.id, u.k, u.u, '{{}}', false, sum(u.v), '{{}}',
               count(*), %s, %s, now(), now()
        FROM json_to_recordset(%s::json) AS u(t uuid, k text, u text, v numeric)
        JOIN metering_customer c ON c.operator_id = %s AND c.external_id = u.u
        GROUP BY u.t, u.k, u.u, c.id
        ORDER BY u.t, u.k, u.u
        ON CONFLICT (meter_type_id, meter_key, user_id) DO UPDATE SET
            value = m.value + EXCLUDED.value,
            record_count = m.record_count + EXCLUDED.record_count,
            updated_at = EXCLUDED.updated_at
    """  # noqa: S608 (the table name is ours, values are parameters)
    workload = Workload(meter_type, args.meters, now, seed=2)
    spent, done = 0.0, 0
    while done < args.updates:
        batch = workload.batch(min(args.batch_size, args.updates - done))
        started = time.perf_counter()
        rows = [{"t": str(t), "k": k, "u": u, "v": str(v)} for t, k, u, v, _ in batch]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(reference, [operator.pk, now, now, json.dumps(rows), operator.pk])
        spent += time.perf_counter() - started
        done += len(batch)
    reference_rate = args.updates / spent
    print(f"physical reference: {reference_rate:>12,.0f} updates/s ({spent:.2f} s)")

    print(
        f"usage_apply / naive: {service_rate / naive_rate:.1f}x (target >= 20x); "
        f"usage_apply / reference: {service_rate / reference_rate:.2f}; "
        f"target 100,000 updates/s: {'met' if service_rate >= 100_000 else 'missed'}"
    )


def _values(workload: Workload, total: int, batch_size: int):
    done = 0
    while done < total:
        batch = workload.batch(min(batch_size, total - done))
        done += len(batch)
        for *_, value, _at in batch:
            yield value


if __name__ == "__main__":
    main()
