"""Data aggregation through a realtime stream: records folded by Celery workers into
10,000 stored sessions, against one SQL GROUP BY over the same stored records.

    .venv/bin/python bench/aggregate.py [--records 1000000] [--sessions 10000]
        [--workers 2] [--batch-size N] [--profile-batches 8] [--profile-out FILE]
        [--redis-db 13] [--keep]

A quick run: `--records 50000 --sessions 1000`.

Creates a scratch database (`tally_bench_aggregate`) on the DATABASE_URL server, migrates
it, and sets the scene with the services: an operator, an ACTIVE collector and the stream
`online collection → data aggregate → noop`, enabled. The aggregator groups on the
payload field `customer` (operationType NONE) with NUMERIC_SUM, GENERAL_COUNT and
NUMERIC_AVERAGE of the payload field `v`, flushType TIMEOUT after 1 day: every group is a
session of the node's aggregation store, locked, merged and written back in the
transaction of the batch that changes it, and none is flushed during the run. Celery's
broker and the cache use Redis database `--redis-db` on the REDIS_URL server, so the
queue purged and the workers started here touch no other bench's or developer's.

1. Load: `--records` records (`v` a number with cents, `customer` one of `--sessions`
   customers at random) are stored through the ingestion service the HTTP endpoint
   calls (`ingestion_receive`, bodies of 10,000 records, so COPY), in this process and
   with no worker running: the collector's queue holds them all. Untimed set-up.
2. Baseline: `SELECT customer, sum(v), count(*), avg(v) … GROUP BY customer` over the
   stored records (the JSON payload as stored, `payload->>'v'` cast to numeric), three
   times after a VACUUM ANALYZE; the median is the baseline, records / seconds.
3. Stream: `--workers` Celery workers (`--pool solo`, one process each) start, one
   `records_process` task per worker is queued (what ingestion signals or the Beat sweep
   give), and the clock runs until no record of the collector is UNPROCESSED or
   IN_PROGRESS (an EXISTS on the queue's index every 50 ms). Processed records/s; the
   ratio to step 2 has a target of ≥ 30 %. Beside it: CPU per record of the workers,
   of the PostgreSQL backends serving the scratch database and of the rest of the
   machine (other sessions' work included: the load average is printed), and what the
   workers' connections were doing, sampled from pg_stat_activity every 0.25 s (in a
   transaction with the client working, running SQL, waiting on another's lock).
4. Profile: with the workers stopped, `--profile-batches` more batches are stored and
   processed in this process by `records_process_batch`, the first half timed plainly
   (wall, CPU, SQL, the SQL time by statement), the rest under cProfile; µs per record
   for each step of the worker path, then the top functions by own time.
5. Check: the GROUP BY again over every stored record (steps 1 and 4) against the stored
   sessions: each customer's sum and count (`count_v` and the session's meta count) must
   be equal, exactly; the average within 1e-9. Exits 1 on a mismatch or failed records.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stream_e2e import (  # noqa: E402
    Targets,
    Workers,
    _callees,
    _cumulative,
    _where,
    broker_purge,
    queued_count,
)
from bench.support.scratch import create_scratch_database, drop_scratch_database  # noqa: E402

BENCH_DB = "tally_bench_aggregate"
INGEST_BATCH = 10_000  # MAX_BATCH_RECORDS: one request's worth
TARGET_PERCENT = 30
AGGREGATE_NODE = "aggregate"
OPERATIONS = [("NUMERIC_SUM", "sum_v"), ("GENERAL_COUNT", "count_v"), ("NUMERIC_AVERAGE", "avg_v")]
GROUP_BY_SQL = """
    SELECT payload->>'customer', sum((payload->>'v')::numeric), count(*),
           avg((payload->>'v')::numeric)
    FROM collection_record WHERE collector_id = %s
    GROUP BY payload->>'customer'
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=10_000, help="customers = sessions")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument(
        "--batch-size", type=int, help="claim batch (TALLY_PROCESS_BATCH_SIZE; default as set)"
    )
    parser.add_argument("--profile-batches", type=int, default=8, help="batches in step 4")
    parser.add_argument(
        "--redis-db", type=int, default=13, help="Redis database for the broker and cache"
    )
    parser.add_argument("--profile-out", help="also write step 4's cProfile stats here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    os.environ.setdefault("SECRET_KEY", "bench")
    redis = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    bench_url, base_url = create_scratch_database(BENCH_DB)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=bench_url,
        REDIS_URL=urlunsplit(redis._replace(path=f"/{args.redis_db}")),
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        LOG_LEVEL="WARNING",
    )
    env.pop("CELERY_BROKER_URL", None)
    if args.batch_size:
        env["TALLY_PROCESS_BATCH_SIZE"] = str(args.batch_size)
    os.environ.update(env)
    workers = None
    failed, ok = 0, False
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        import django

        django.setup()
        from django.conf import settings
        from django.db import connection, connections

        scene = scene_create()
        batch_size = settings.TALLY["COLLECTION"]["PROCESS_BATCH_SIZE"]
        print(
            "stream: online collection → data aggregate (TIMEOUT 1 day; sum, count, avg "
            f"of v by customer) → noop; {args.workers} workers (--pool solo); claim "
            f"batches of {batch_size:,}",
            flush=True,
        )
        records = Records(scene, args.sessions)

        # 1. Load the queue.
        started = time.perf_counter()
        loaded = records.load(args.records)
        print(
            f"loaded: {loaded:,} records over {args.sessions:,} customers through "
            f"ingestion_receive in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE collection_record")

        # 2. The baseline: one GROUP BY over the stored records.
        times = [group_by(scene)[1] for _ in range(3)]
        base_seconds = statistics.median(times)
        base_rate = loaded / base_seconds
        connections.close_all()

        # 3. The stream, from a backlog.
        broker_purge()  # the ingestion signals: the clock starts with known tasks
        workers = Workers(env, args.workers)
        load = os.getloadavg()[0]
        rate, seconds, cpu = drain(scene, workers, loaded, BENCH_DB)
        failed = failures_report(scene)
        workers.stop()
        workers = None

        targets = Targets()
        print(f"\n1. stream, {loaded:,} records queued, {args.workers} workers")
        targets.check("aggregated by the stream", rate, "records/s", None, f"({seconds:.1f} s)")
        print(
            f"   CPU per record: workers {cpu['workers'] / loaded * 1e6:,.0f} µs, their "
            f"PostgreSQL backends {cpu['postgres'] / loaded * 1e6:,.0f} µs, everything "
            f"else on the machine {cpu['rest'] / loaded * 1e6:,.0f} µs (machine busy "
            f"{cpu['busy']:.0%} of {os.cpu_count()} cores; load average {load:.1f} before)"
        )
        sampled = sum(cpu["activity"].values())
        print(
            "   workers' connections, sampled every 0.25 s: "
            + ", ".join(
                f"{state} {count / sampled:.0%}" for state, count in cpu["activity"].most_common()
            )
        )
        print(f"2. one SQL GROUP BY over the same {loaded:,} stored records")
        print(
            f"   {'GROUP BY customer':<26} {base_rate:>10,.0f} records/s "
            f"({base_seconds:.2f} s, median of {', '.join(f'{t:.2f}' for t in times)} s)"
        )
        ratio = rate / base_rate * 100
        met = ratio >= TARGET_PERCENT
        if not met:
            targets.missed.append("stream / GROUP BY")
        print(
            f"   {'stream / GROUP BY':<26} {ratio:>10,.2f} %   target ≥ {TARGET_PERCENT} %: "
            f"{'met' if met else 'MISSED'} (needs {base_rate * TARGET_PERCENT / 100:,.0f} "
            "records/s)"
        )
        if failed:
            print(f"   !! {failed:,} records FAILED (see the reasons above)")

        # 4. Where a worker's time goes.
        if args.profile_batches:
            profile(scene, records, args.profile_batches, batch_size, args.profile_out)
            failed = failures_report(scene)

        # 5. The sessions against the GROUP BY.
        ok = verify(scene)
        print(f"\ntargets missed: {', '.join(targets.missed) or 'none'}")
    finally:
        if workers is not None:
            workers.stop()
        try:
            from django.db import connections

            broker_purge()  # the signals of step 4's ingestions: leave the queue empty
            connections.close_all()
        except Exception:  # noqa: S110 - Django may not be set up yet
            pass
        if not args.keep:
            drop_scratch_database(base_url, BENCH_DB)
    if failed or not ok:
        sys.exit(1)


# -- The scene ---------------------------------------------------------------------------


@dataclass
class Scene:
    operator: object
    collector: object
    store_id: object


def stream_config(collector_id: str) -> dict:
    return {
        "name": "Usage by customer",
        "nodes": [
            {
                "id": "source",
                "name": "Collector",
                "type": "readers/online_collection",
                "params": {"collectorId": collector_id},
            },
            {
                "id": AGGREGATE_NODE,
                "name": "By customer",
                "type": "transforms/data_aggregate",
                "params": {
                    "groupKeys": [{"field": "customer", "operationType": "NONE"}],
                    "operations": [{"field": "v", "type": kind} for kind, _ in OPERATIONS],
                    "flushType": "TIMEOUT",
                    "timeout": {"value": 1, "unit": "DAYS"},
                },
            },
            {"id": "sink", "name": "Drop", "type": "writers/noop", "params": {}},
        ],
        "edges": [
            {"id": "e0", "from": "source", "to": AGGREGATE_NODE},
            {"id": "e1", "from": AGGREGATE_NODE, "to": "sink"},
        ],
    }


def scene_create() -> Scene:
    """What a user would provision, through the services."""
    from collection.models import Collector
    from collection.services import collector_create, collector_provision
    from streams.models import AggregationStore, StreamKey
    from streams.services import solution_default, stream_import, stream_update
    from tenants.services import operator_create

    operator = operator_create(name="Bench")
    collector = collector_create(operator=operator, name="usage")
    collector_provision(collector_id=collector.pk)
    collector = Collector.objects.get(pk=collector.pk)
    actor = {"type": "bench", "id": "bench", "name": "bench"}
    imported = stream_import(
        operator=operator,
        solution=solution_default(operator=operator),
        config=stream_config(str(collector.pk)),
        actor=actor,
    )
    stream_update(stream=imported.stream, actor=actor, enabled=True)
    store_id = StreamKey.objects.get(stream=imported.stream, node_id=AGGREGATE_NODE).value
    assert AggregationStore.objects.filter(pk=store_id).exists(), "no aggregation store"
    return Scene(operator=operator, collector=collector, store_id=store_id)


# -- Records -----------------------------------------------------------------------------


class Records:
    """Builds usage records and stores them through the ingestion service."""

    def __init__(self, scene: Scene, customers: int) -> None:
        self.scene = scene
        self.random = random.Random(7)
        self.customers = [f"c{index:06d}" for index in range(customers)]
        self.next_id = 0
        self.encoder = msgspec.json.Encoder(decimal_format="number")

    def body(self, count: int) -> bytes:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        data = []
        for _ in range(count):
            self.next_id += 1
            data.append(
                {
                    "id": f"r{self.next_id}",
                    "timestamp": stamp,
                    "type": "usage",
                    "customer": self.random.choice(self.customers),
                    "v": Decimal(self.random.randint(1, 100_000)) / 100,
                }
            )
        return self.encoder.encode({"data": data})

    def load(self, total: int, size: int = INGEST_BATCH) -> int:
        from collection.services.ingestion import ingestion_receive

        accepted = 0
        for start in range(0, total, size):
            answer = ingestion_receive(
                collector=self.scene.collector,
                body=self.body(min(size, total - start)),
                content_type="application/json",
            )
            assert answer.stored and not answer.body["rejected"], answer.body
            accepted += answer.body["accepted"]
        assert accepted == total, (accepted, total)
        return accepted


# -- Measures ----------------------------------------------------------------------------


def group_by(scene: Scene) -> tuple[list[tuple], float]:
    """The grouping in one statement, every row fetched; its rows and seconds."""
    from django.db import connection

    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(GROUP_BY_SQL, [scene.collector.pk])
        rows = cursor.fetchall()
        return rows, time.perf_counter() - started


def queue_busy(cursor, collector_id: str) -> bool:
    """Whether any record of the collector is still UNPROCESSED or IN_PROGRESS: the first
    entry of the queue's partial index. (Counting them all, as the polls of stream_e2e
    do, is a parallel scan of a million index entries every 50 ms at this size.)"""
    cursor.execute(
        "SELECT EXISTS (SELECT FROM collection_record "
        "WHERE collector_id = %s AND status IN (1, 2))",
        [collector_id],
    )
    return cursor.fetchone()[0]


ACTIVITY_SQL = """
    SELECT CASE
        WHEN state = 'active' AND wait_event_type = 'Lock' THEN 'waiting on a lock'
        WHEN state = 'active' THEN 'running SQL'
        WHEN state LIKE 'idle in transaction%%' THEN 'in a transaction, client working'
        ELSE 'no transaction (claim done, Celery, idle)'
    END, count(*)
    FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend'
      AND pid <> pg_backend_pid()
    GROUP BY 1
"""


def activity_sample(cursor, activity: Counter) -> None:
    """What the workers' connections are doing right now, tallied."""
    cursor.execute(ACTIVITY_SQL)
    activity.update(dict(cursor.fetchall()))


class BackendCpu:
    """CPU spent by the PostgreSQL backends serving one database, from samples of the
    server's processes (their titles name the database): a backend's time is counted
    from when it was first seen, or from its start when it appeared after the first
    sample. A backend that ends between two samples loses its last interval."""

    def __init__(self, database: str) -> None:
        self.marker = f" {database} "
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.sample(initial=True)

    def sample(self, *, initial: bool = False) -> None:
        import psutil

        for process in psutil.process_iter(["cmdline"]):
            title = " ".join(process.info["cmdline"] or ()) + " "
            if not title.startswith("postgres:") or self.marker not in title:
                continue
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            spent = times.user + times.system
            self.first.setdefault(process.pid, spent if initial else 0.0)
            self.last[process.pid] = spent

    def seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def drain(scene: Scene, workers: Workers, total: int, database: str) -> tuple[float, float, dict]:
    """Queue one pass per worker and time the backlog until it is gone."""
    import psutil
    from django.db import connection

    from collection.tasks import records_process

    collector_id = str(scene.collector.pk)
    backends = BackendCpu(database)
    machine = psutil.cpu_times()
    worker_cpu = workers.cpu_seconds()
    started = time.perf_counter()
    for _ in workers.processes:
        records_process.delay(collector_id)
    shown = sampled = started
    activity: Counter = Counter()
    with connection.cursor() as cursor:
        while queue_busy(cursor, collector_id):
            time.sleep(0.05)
            if time.perf_counter() - sampled >= 0.25:
                sampled = time.perf_counter()
                backends.sample()
                activity_sample(cursor, activity)
            if time.perf_counter() - shown >= 30:
                shown = time.perf_counter()
                done = total - queued_count(cursor, collector_id)
                print(
                    f"   … {done:,} done in {shown - started:.0f} s "
                    f"({done / (shown - started):,.0f} records/s)",
                    flush=True,
                )
    seconds = time.perf_counter() - started
    backends.sample()
    after = psutil.cpu_times()
    busy = (after.user + after.system) - (machine.user + machine.system)
    spent = workers.cpu_seconds() - worker_cpu
    cpu = {
        "workers": spent,
        "postgres": backends.seconds(),
        "rest": busy - spent - backends.seconds(),
        "busy": busy / (seconds * (os.cpu_count() or 1)),
        "activity": activity,
    }
    return total / seconds, seconds, cpu


def failures_report(scene: Scene) -> int:
    from collection.models import Record

    failed = Record.objects.filter(collector_id=scene.collector.pk, status=Record.Status.FAILED)
    count = failed.count()
    if count:
        reasons = failed.values_list("failure_reason", flat=True)[:3]
        print(f"!! {count:,} records failed, e.g. {list(reasons)}")
    return count


def verify(scene: Scene) -> bool:
    """Every stored session against the GROUP BY over every stored record."""
    from streams.models import AggregationSession

    rows, seconds = group_by(scene)
    expected = {customer: (total, count, average) for customer, total, count, average in rows}
    sessions = {}
    for key_values, data, meta in AggregationSession.objects.filter(
        store_id=scene.store_id
    ).values_list("key_values", "data", "meta"):
        sessions[key_values[0]] = (
            Decimal(data["sum_v"]),
            data["count_v"],
            meta["count"],
            Decimal(data["avg_v"]),
        )
    problems = []
    for customer in sorted(expected.keys() | sessions.keys()):
        if customer not in sessions:
            problems.append(f"{customer}: no session")
            continue
        if customer not in expected:
            problems.append(f"{customer}: a session without records")
            continue
        total, count, average = expected[customer]
        got_total, got_count, meta_count, got_average = sessions[customer]
        if got_total != total:
            problems.append(f"{customer}: sum {got_total} != {total}")
        if got_count != count or meta_count != count:
            problems.append(f"{customer}: count {got_count} (meta {meta_count}) != {count}")
        if abs(got_average - average) > Decimal("1e-9"):
            problems.append(f"{customer}: avg {got_average} != {average}")
    records = sum(count for _, count, _ in expected.values())
    print(
        f"\n5. check: {len(sessions):,} sessions against GROUP BY over {records:,} records "
        f"({seconds:.2f} s): " + ("OK" if not problems else f"MISMATCH on {len(problems):,}")
    )
    for problem in problems[:10]:
        print(f"   {problem}")
    return not problems


# -- Profile ----------------------------------------------------------------------------------

# Steps of the worker path: (label, file suffix, function name). Cumulative times, so a
# step includes what it calls ("aggregate node" is shown without its store calls).
STEPS = [
    ("find collector + processor", "collection/processing.py", "processor_for"),
    ("claim (UPDATE … RETURNING)", "work_queue.py", "records_claim"),
    ("  of which payload decode", "common/json.py", "loads_lenient"),
    ("hold (SELECT … FOR UPDATE)", "work_queue.py", "_claim_hold"),
    ("record → stream payload", "streams/runtime/runner.py", "record_payload"),
    ("states load", "streams/runtime/runner.py", "states_load"),
    ("aggregate node (w/o store)", "streams/runtime/functions/aggregate.py", "process"),
    ("  sessions_lock", "streams/runtime/sessions.py", "sessions_lock"),
    ("  sessions_save", "streams/runtime/sessions.py", "sessions_save"),
    ("counters, errors, logs", "streams/runtime/runner.py", "_outcome_save"),
    ("node states save", "streams/runtime/runner.py", "_states_save"),
    ("finish (UPDATE statuses)", "work_queue.py", "claim_finish"),
    ("commit", "django/db/backends/base/base.py", "commit"),
]


def profile(scene: Scene, records: Records, batches: int, batch_size: int, out: str | None) -> None:
    """Store `batches` claim batches (workers stopped) and process them here: half timed
    plainly with SQL counted, half under cProfile."""
    from django.db import connection

    from collection.services import records_process_batch

    collector_id = str(scene.collector.pk)
    plain = max(1, batches // 2)
    records.load((batches + 1) * batch_size, size=batch_size)
    queries = [0, 0.0]
    statements: dict[str, list] = {}

    def counting(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent = time.perf_counter() - started
            queries[0] += 1
            queries[1] += spent
            entry = statements.setdefault(" ".join(sql.split())[:72], [0, 0.0])
            entry[0] += 1
            entry[1] += spent

    # Warm up this process (imports, compiled graph) on a batch that is not counted.
    records_process_batch(collector_id=collector_id)
    wall = cpu = 0.0
    done = 0
    with connection.execute_wrapper(counting):
        for _ in range(plain):
            started, started_cpu = time.perf_counter(), time.process_time()
            done += records_process_batch(collector_id=collector_id)
            wall += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
    profiler = cProfile.Profile()
    profiled = 0
    profiler.enable()
    while claimed := records_process_batch(collector_id=collector_id):
        profiled += claimed
    profiler.disable()
    if out:
        profiler.dump_stats(out)
    stats = pstats.Stats(profiler)
    total = _cumulative(stats, "work_queue.py", "records_process_batch")

    print("\n4. where a worker's time goes (one worker alone, in this process)")
    if done:
        print(
            f"   plain: {wall / done * 1e6:,.0f} µs wall, {cpu / done * 1e6:,.0f} µs CPU in "
            f"Python per record; {queries[0] / plain:.0f} SQL statements per batch of "
            f"{done / plain:,.0f}, {queries[1] / done * 1e6:,.0f} µs per record waiting on "
            f"them (= {done / wall:,.0f} records/s for one worker)"
        )
        print("   SQL statements by time (execute, parameters dumped included; rows not read):")
        ranked = sorted(statements.items(), key=lambda item: item[1][1], reverse=True)
        for text, (calls, spent) in ranked[:8]:
            print(f"   {spent / done * 1e6:>8,.1f} µs/rec {calls / plain:>4.0f}/batch  {text}")
    if not profiled:
        return
    store = _cumulative(stats, "streams/runtime/sessions.py", "sessions_lock") + _cumulative(
        stats, "streams/runtime/sessions.py", "sessions_save"
    )
    print(f"   under cProfile, {profiled:,} records (inflates Python, not SQL):")
    print(f"   {'step':<30} {'µs/record':>10} {'share':>7}")
    for label, suffix, name in STEPS:
        spent = _cumulative(stats, suffix, name)
        if suffix.endswith("aggregate.py"):
            spent -= store
        print(f"   {label:<30} {spent / profiled * 1e6:>10,.1f} {spent / total:>7.1%}")
        if suffix.endswith(("aggregate.py", "sessions.py")) or name == "records_claim":
            for key, cumulative in _callees(stats, suffix, name):
                print(f"   {'':<6}{cumulative / profiled * 1e6:>8,.1f} µs  {_where(key)}")
    print(f"   {'records_process_batch':<30} {total / profiled * 1e6:>10,.1f} {1:>7.0%}")
    print("   top functions by own time:")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:15]
    for key, (_, calls, own, cumulative, _) in rows:
        print(
            f"   {own / profiled * 1e6:>8,.1f} µs/rec own {cumulative / profiled * 1e6:>8,.1f} "
            f"cum {calls:>8,} calls  {_where(key)}"
        )


if __name__ == "__main__":
    main()
