"""Realtime streams end to end: records over HTTP, processed by Celery workers through a
stream into 10,000 meters, against `usage_apply` alone on the same updates.

    .venv/bin/python bench/stream_e2e.py [--records 200000] [--meters 10000]
        [--rate 10000] [--lag-seconds 20] [--workers 2] [--no-script]

Creates a scratch database (`tally_bench_stream`) on the DATABASE_URL server, migrates it,
and sets the scene with the services: an operator, an application, an ACTIVE collector,
a Sum meter type in category "Printing", the stream `online collection → map → script
→ meter` (map → meter while `transforms/script` is not registered, or with --no-script),
enabled, and one meter per printer. Then gunicorn serves the project on a free loopback
port (rate limits raised through TALLY_RATE_LIMITS) and `--workers` Celery workers
(`--pool solo`, one process each) consume the broker on REDIS_URL. Figures, each beside
its target:

1. Throughput: `--records` records are sent over HTTP in batches of 1,000 while no worker
   runs; then the workers start, one `records_process` task per worker is queued (what
   ingestion signals or the Beat sweep give) and the clock runs until no record of the
   collector is UNPROCESSED or IN_PROGRESS. Processed records/s.
2. Baseline: the same records as UsageUpdate objects (built before the clock starts),
   in batches of TALLY_PROCESS_BATCH_SIZE, through `usage_apply` from as many processes
   as there are workers. Step 1 over this is the "≥ 50 % of usage_apply alone" ratio.
3. Lag: `--rate` records/s offered over HTTP for `--lag-seconds` (batches of 500 on a
   fixed schedule from 4 clients) with the workers running. A watcher polls the records
   still queued, per ingestion, every ~20 ms; a record's lag is the end of the poll that
   first finds it gone from the queue minus its ingestion's `received_at` (the server's
   clock when the request was taken). So the figure is an upper bound, too high by at
   most one poll interval (printed); the PROCESSED status and the meter update commit in
   one transaction, so "gone from the queue" is "meter updated".
4. Profile: with the workers stopped, a few batches are sent and processed in this
   process by `records_process_batch`, first timed plain (wall, CPU, SQL), then under
   cProfile; printed as milliseconds per batch for each step of the worker path.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import itertools
import multiprocessing
import os
import pstats
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_http import Server, percentile, run_clients  # noqa: E402
from bench.support.scratch import create_scratch_database, drop_scratch_database  # noqa: E402

BENCH_DB = "tally_bench_stream"
AUDIENCE = "http://bench.local"
CATEGORY = "Printing"
HTTP_BATCH = 1000
LAG_BATCH = 500
SCRIPT = "payload.value = Number(payload.sheets);\nawait push(payload);\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records in step 1")
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--http-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--rate", type=int, default=10_000, help="records/s offered in step 3")
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--profile-batches", type=int, default=8, help="batches in step 4")
    parser.add_argument("--no-script", action="store_true", help="map → meter only")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    bench_url, base_url = create_scratch_database(BENCH_DB)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=bench_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        TALLY_API_AUDIENCE=AUDIENCE,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        TALLY_RATE_LIMITS=msgspec.json.encode(
            {"ingestion": {"rate": 1e9, "burst": 1e9}, "token": {"rate": 1e6, "burst": 1e6}}
        ).decode(),
    )
    os.environ.update(env)
    server = workers = None
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        import django

        django.setup()
        from django.db import connections

        scene = scene_create(meters=args.meters, script=not args.no_script)
        connections.close_all()
        print(
            f"stream: {' → '.join(scene.shape)}; {args.meters:,} meters; "
            f"{args.workers} workers (--pool solo); claim batches of {scene.batch_size:,}",
            flush=True,
        )
        server = Server(env, args.http_workers, "gthread", 2)
        client = Client(server.port, scene)
        targets = Targets()

        # 1. Throughput from a backlog.
        sent = client.backlog_send(args.records)
        broker_purge()  # the signals of the backlog: the clock starts with known tasks
        workers = Workers(env, args.workers)
        rate, seconds, cpu = throughput(scene, workers, sent)
        failed = failures_report(scene)

        # 2. usage_apply alone, same updates, same batches, as many processes as workers.
        base_rate, base_seconds = baseline(scene, client.phase1_rows, args.workers)

        # 3. Lag at an offered rate.
        lag = lag_measure(scene, client, args.rate, args.lag_seconds)
        failed += failures_report(scene)
        workers.stop()
        workers = None

        print(f"\n1. throughput, {sent:,} records queued, {args.workers} workers")
        targets.check("processed end to end", rate, "records/s", 20_000, f"({seconds:.1f} s)")
        print(
            f"   CPU per record: workers {cpu['workers'] / sent * 1e6:,.0f} µs, "
            f"everything else on the machine {cpu['rest'] / sent * 1e6:,.0f} µs "
            f"(machine busy {cpu['busy']:.0%} of {os.cpu_count()} cores)"
        )
        print(f"2. usage_apply alone, same {sent:,} updates, {args.workers} processes")
        print(f"   usage_apply          {base_rate:>10,.0f} updates/s ({base_seconds:.1f} s)")
        targets.check("end to end / usage_apply", rate / base_rate * 100, "%", 50)
        print(
            f"3. lag, {lag.offered:,.0f} records/s offered for {lag.seconds:.1f} s "
            f"({lag.records:,} records; target rate {args.rate:,})"
        )
        targets.check("lag p50", lag.p50, "s", None)
        targets.check("lag p99", lag.p99, "s", 1.0, lower=True)
        print(
            f"   max {lag.worst:.2f} s; drained {lag.drain:.1f} s after the last request; "
            f"poll interval mean {lag.poll * 1000:.0f} ms (the lag's overestimate bound)"
        )
        if failed:
            print(f"   !! {failed:,} records FAILED (see the reasons above)")

        # 4. Where a worker's time goes.
        profile(scene, client, args.profile_batches, missed=targets.missed)
        print(f"\ntargets missed: {', '.join(targets.missed) or 'none'}")
    finally:
        if workers is not None:
            workers.stop()
        if server is not None:
            server.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: S110 - Django may not be set up yet
            pass
        if not args.keep:
            drop_scratch_database(base_url, BENCH_DB)


class Targets:
    """Prints a figure beside its target and remembers the ones missed."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def check(self, name, value, unit, target, note="", *, lower=False) -> None:
        shown = f"{value:>10,.2f}" if unit == "s" else f"{value:>10,.0f}"
        if target is None:
            print(f"   {name:<26} {shown} {unit} {note}")
            return
        met = value <= target if lower else value >= target
        if not met:
            self.missed.append(name)
        sign = "≤" if lower else "≥"
        print(
            f"   {name:<26} {shown} {unit}   target {sign} {target:,} {unit}: "
            f"{'met' if met else 'MISSED'} {note}"
        )


# -- The scene ---------------------------------------------------------------------------


@dataclass
class Scene:
    operator: object
    collector_id: str
    meter_type_id: uuid.UUID
    meter_key: str
    users: list[str]
    issued: object
    shape: list[str]
    batch_size: int


def stream_config(collector_id: str, *, script: bool) -> dict:
    """online collection → map → (script →) meter. With the script, map keeps `sheets`
    and the script turns it into the meter's `value`; without, map does both."""
    mappings = [{"userId": "printerId"}, {"timestamp": "timestamp"}]
    mappings.append({"sheets": "sheets"} if script else {"value": "sheets"})
    nodes = [
        {
            "id": "source",
            "name": "Collector",
            "type": "readers/online_collection",
            "params": {"collectorId": collector_id},
        },
        {"id": "map", "name": "Map", "type": "transforms/map", "params": {"mappings": mappings}},
        {
            "id": "meter",
            "name": "Meter",
            "type": "transforms/meter",
            "params": {
                "flushType": "TIMEOUT",
                "guidingRules": [
                    {
                        "customName": "Printing",
                        "matchCategory": CATEGORY,
                        "ignoreCondition": True,
                        "conditionRelation": "and",
                        "conditions": [],
                        "groupBy": [],
                        "otherOperations": [],
                    }
                ],
                "multiOutput": {
                    "fixed": {"reset": {"id": "out-reset"}, "threshold": {"id": "out-threshold"}}
                },
            },
        },
    ]
    chain = ["source", "map", "meter"]
    if script:
        nodes.insert(
            2,
            {
                "id": "script",
                "name": "Script",
                "type": "transforms/script",
                "params": {"transform": SCRIPT},
            },
        )
        chain = ["source", "map", "script", "meter"]
    edges = [
        {"id": f"e{index}", "from": source, "to": target}
        for index, (source, target) in enumerate(itertools.pairwise(chain))
    ]
    return {"name": "Printing usage", "nodes": nodes, "edges": edges}


def scene_create(*, meters: int, script: bool) -> Scene:
    """Everything a user would provision, through the services; the meters in bulk
    (10,000 API calls would only slow the setup)."""
    from django.conf import settings
    from django.utils import timezone

    from collection.services import collector_create, collector_provision
    from metering.models import Meter, MeterType
    from metering.schedule import next_fire
    from metering.services import customers_ensure, meter_type_create
    from streams.models import StreamKey
    from streams.runtime.base import REGISTRY
    from streams.services import solution_default, stream_import, stream_update
    from tenants.services import application_access_create, operator_create

    if script and "transforms/script" not in REGISTRY:
        print("transforms/script is not registered yet: the stream is map → meter")
        script = False
    operator = operator_create(name="Bench")
    issued = application_access_create(operator=operator, name="bench")
    collector = collector_create(operator=operator, name="printers")
    collector_provision(collector_id=collector.pk)
    meter_type = meter_type_create(
        operator=operator,
        name="Pay-Per-Print",
        unit="sheets",
        category=CATEGORY,
        aggregation=MeterType.Aggregation.SUM,
        reset_cron="0 0 1 * *",
    )
    actor = {"type": "bench", "id": "bench", "name": "bench"}
    imported = stream_import(
        operator=operator,
        solution=solution_default(operator=operator),
        config=stream_config(str(collector.pk), script=script),
        actor=actor,
    )
    stream_update(stream=imported.stream, actor=actor, enabled=True)
    meter_key = str(StreamKey.objects.get(stream=imported.stream, node_id="meter").value)

    users = [f"p{index:05d}" for index in range(meters)]
    customers = customers_ensure(operator=operator, external_ids=users)
    now = timezone.now()
    end = next_fire(meter_type.reset_cron, meter_type.timezone, now)
    Meter.objects.bulk_create(
        [
            Meter(
                operator=operator,
                meter_type=meter_type,
                customer=customers[user],
                meter_key=meter_key,
                user_id=user,
                period_start=now,
                period_end=end,
                created_at=now,
                updated_at=now,
            )
            for user in users
        ],
        batch_size=2_000,
    )
    shape = ["online collection", "map", *(["script"] if script else []), "meter"]
    return Scene(
        operator=operator,
        collector_id=str(collector.pk),
        meter_type_id=meter_type.pk,
        meter_key=meter_key,
        users=users,
        issued=issued,
        shape=shape,
        batch_size=settings.TALLY["COLLECTION"]["PROCESS_BATCH_SIZE"],
    )


# -- HTTP ------------------------------------------------------------------------------


class Client:
    """Builds printer records and sends them; remembers what step 1 sent, for the
    baseline."""

    def __init__(self, port: int, scene: Scene) -> None:
        self.port = port
        self.scene = scene
        self.random = random.Random(7)
        self.next_id = 0
        self.phase1_rows: list[tuple[str, Decimal, datetime]] = []
        self.path = f"/online-collection/v1/collectors/{scene.collector_id}/data"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request(
            "POST",
            "/oauth/token",
            body=msgspec.json.encode(
                {
                    "client_id": scene.issued.client_id,
                    "client_secret": scene.issued.client_secret,
                    "grant_type": "client_credentials",
                    "audience": AUDIENCE,
                }
            ),
            headers={"Content-Type": "application/json"},
        )
        token = msgspec.json.decode(connection.getresponse().read())["access_token"]
        connection.close()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def records(self, count: int) -> tuple[bytes, list[tuple[str, Decimal, datetime]]]:
        """A request body of `count` records on random printers, and the (user, value,
        event time) of each."""
        now = datetime.now(UTC)
        stamp = now.isoformat(timespec="milliseconds")
        at = datetime.fromisoformat(stamp)
        data, rows = [], []
        for _ in range(count):
            self.next_id += 1
            user = self.random.choice(self.scene.users)
            sheets = self.random.randint(1, 20)
            data.append(
                {
                    "id": f"r{self.next_id}",
                    "type": "print",
                    "timestamp": stamp,
                    "printerId": user,
                    "sheets": sheets,
                }
            )
            rows.append((user, Decimal(sheets), at))
        return msgspec.json.encode({"data": data}), rows

    def backlog_send(self, total: int) -> int:
        bodies = []
        for start in range(0, total, HTTP_BATCH):
            body, rows = self.records(min(HTTP_BATCH, total - start))
            bodies.append(body)
            self.phase1_rows += rows
        seconds, _, statuses = run_clients(
            self.port, [(self.path, body, self.headers) for body in bodies], 4
        )
        assert statuses == {202: len(bodies)}, statuses
        print(f"backlog: {total:,} records sent in {seconds:.1f} s", flush=True)
        return total


# -- Workers -------------------------------------------------------------------------------


def celery_app():
    from config.celery import app

    return app


def broker_purge() -> None:
    celery_app().control.purge()


class Workers:
    """`count` Celery workers, one process each (`--pool solo`)."""

    def __init__(self, env: dict[str, str], count: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.processes = [
            subprocess.Popen(
                [
                    str(ROOT / ".venv/bin/celery"),
                    "-A",
                    "config",
                    "worker",
                    "--pool",
                    "solo",
                    "-n",
                    f"bench{index}-{tag}@%h",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,  # the banner; warnings and errors stay on stderr
            )
            for index in range(count)
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replies = celery_app().control.ping(timeout=0.5)
            if sum(1 for reply in replies for name in reply if tag in name) >= count:
                return
        raise RuntimeError("the Celery workers did not answer")

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for process in self.processes:
            times = psutil.Process(process.pid).cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(timeout=60)


def queued_count(cursor, collector_id: str) -> int:
    # The work queue's partial index holds exactly these rows, so this stays cheap.
    cursor.execute(
        "SELECT count(*) FROM collection_record WHERE collector_id = %s AND status IN (1, 2)",
        [collector_id],
    )
    return cursor.fetchone()[0]


def throughput(scene: Scene, workers: Workers, total: int) -> tuple[float, float, dict]:
    """Queue one pass per worker and time the backlog until it is gone."""
    import psutil
    from django.db import connection

    from collection.tasks import records_process

    machine = psutil.cpu_times()
    worker_cpu = workers.cpu_seconds()
    started = time.perf_counter()
    for _ in workers.processes:
        records_process.delay(scene.collector_id)
    with connection.cursor() as cursor:
        while queued_count(cursor, scene.collector_id):
            time.sleep(0.05)
    seconds = time.perf_counter() - started
    after = psutil.cpu_times()
    busy = (after.user + after.system) - (machine.user + machine.system)
    spent = workers.cpu_seconds() - worker_cpu
    cpu = {
        "workers": spent,
        "rest": busy - spent,
        "busy": busy / (seconds * (os.cpu_count() or 1)),
    }
    return total / seconds, seconds, cpu


def failures_report(scene: Scene) -> int:
    from collection.models import Record

    failed = Record.objects.filter(collector_id=scene.collector_id, status=Record.Status.FAILED)
    count = failed.count()
    if count:
        reasons = failed.values_list("failure_reason", flat=True)[:3]
        print(f"!! {count:,} records failed, e.g. {list(reasons)}")
        failed.delete()  # counted once, even when reported after a later step again
    return count


# -- Baseline --------------------------------------------------------------------------------


def _baseline_worker(operator_id, meter_type_id, meter_key, batches, barrier, results) -> None:
    """One process's share of the batches through usage_apply, timed on the shared
    monotonic clock so the parent can take the span over all processes."""
    import django

    django.setup()
    from django.utils import timezone

    from metering.usage import UsageUpdate, usage_apply
    from tenants.models import Operator

    operator = Operator.objects.get(pk=operator_id)
    prepared = [
        [
            UsageUpdate(
                meter_type_id=meter_type_id,
                category=None,
                meter_key=meter_key,
                user_id=user,
                value=value,
                event_time=at,
            )
            for user, value, at in batch
        ]
        for batch in batches
    ]
    barrier.wait()
    started = time.monotonic()
    for updates in prepared:
        usage_apply(operator=operator, updates=updates, now=timezone.now())
    results.put((started, time.monotonic()))


def baseline(scene: Scene, rows, processes: int) -> tuple[float, float]:
    """The updates step 1 made, batch for batch, straight into usage_apply."""
    size = scene.batch_size
    batches = [rows[start : start + size] for start in range(0, len(rows), size)]
    # Spawned, not forked: this process has broker and client threads whose locks a
    # fork would copy held.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    children = [
        context.Process(
            target=_baseline_worker,
            args=(
                scene.operator.pk,
                scene.meter_type_id,
                scene.meter_key,
                batches[index::processes],
                barrier,
                results,
            ),
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    spans = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join()
        assert child.exitcode == 0, child.exitcode
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return len(rows) / seconds, seconds


# -- Lag -------------------------------------------------------------------------------------


@dataclass
class Lag:
    offered: float
    seconds: float
    records: int
    p50: float
    p99: float
    worst: float
    drain: float
    poll: float


class QueueWatch(threading.Thread):
    """Polls the queued records per ingestion; notes when each ingestion's records
    leave the queue (see the module docstring, step 3)."""

    def __init__(self, dsn: str, collector_id: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.collector_id = collector_id
        self.sent: list[tuple[str, int]] = []  # (ingestion id, records), appended by clients
        self.done: list[tuple[str, int, float]] = []  # (ingestion id, records, seen at)
        self.polls: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        waiting: dict[str, int] = {}
        known = 0
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            while True:
                # What was sent is registered before the snapshot: a record acknowledged
                # before the poll starts is either still queued in it or done.
                fresh = self.sent[known:]
                known += len(fresh)
                waiting.update(fresh)
                last = self.stopping.is_set()
                started = time.time()
                queued = dict(
                    connection.execute(
                        "SELECT ingestion_id::text, count(*) FROM collection_record "
                        "WHERE collector_id = %s AND status IN (1, 2) GROUP BY ingestion_id",
                        [self.collector_id],
                    ).fetchall()
                )
                seen = time.time()
                self.polls.append(seen - started)
                for ingestion_id, before in list(waiting.items()):
                    now_queued = queued.get(ingestion_id, 0)
                    if now_queued < before:
                        self.done.append((ingestion_id, before - now_queued, seen))
                        waiting[ingestion_id] = now_queued
                    if not now_queued:
                        del waiting[ingestion_id]
                if last and not waiting:
                    return
                time.sleep(0.02)


def lag_measure(scene: Scene, client: Client, rate: int, seconds: float) -> Lag:
    from django.db import connection

    from bench.ingest_http import bench_dsn

    count = max(1, round(rate * seconds / LAG_BATCH))
    bodies = [client.records(LAG_BATCH)[0] for _ in range(count)]
    watch = QueueWatch(bench_dsn(), scene.collector_id)
    watch.start()
    interval = LAG_BATCH / rate
    cursor_lock = threading.Lock()
    cursor = iter(range(count))
    late = [0]

    def sender() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=60)
        while True:
            with cursor_lock:
                index = next(cursor, None)
            if index is None:
                return
            due = started + index * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            else:
                late[0] += 1
            connection.request("POST", client.path, body=bodies[index], headers=client.headers)
            response = connection.getresponse()
            answer = msgspec.json.decode(response.read())
            assert response.status == 202, answer
            watch.sent.append((answer["ingestionId"], answer["accepted"]))

    threads = [threading.Thread(target=sender) for _ in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent_seconds = time.perf_counter() - started
    ended = time.time()
    watch.stopping.set()
    watch.join(timeout=600)
    drain = max(at for _, _, at in watch.done) - ended

    ids = list({ingestion_id for ingestion_id, _, _ in watch.done})
    with connection.cursor() as db:
        db.execute(
            "SELECT id::text, received_at FROM collection_ingestion WHERE id = ANY(%s::uuid[])",
            [ids],
        )
        received = {ingestion_id: at.timestamp() for ingestion_id, at in db.fetchall()}
    lags: list[float] = []
    for ingestion_id, records, seen in watch.done:
        lags += [seen - received[ingestion_id]] * records
    if late[0] > count // 10:
        print(f"   (the clients fell behind the schedule on {late[0]} of {count} requests)")
    return Lag(
        offered=count * LAG_BATCH / sent_seconds,
        seconds=sent_seconds,
        records=len(lags),
        p50=percentile(lags, 0.5),
        p99=percentile(lags, 0.99),
        worst=max(lags),
        drain=drain,
        poll=sum(watch.polls) / len(watch.polls) + 0.02,
    )


# -- Profile ----------------------------------------------------------------------------------

# Steps of the worker path: (label, file suffix, function name). Cumulative times, so a
# step includes what it calls; "meter node" is reported without usage_apply.
STEPS = [
    ("find collector + processor", "collection/processing.py", "processor_for"),
    ("claim (UPDATE … RETURNING)", "work_queue.py", "records_claim"),
    ("  of which payload decode", "common/json.py", "loads"),
    ("record → stream payload", "streams/runtime/runner.py", "_record_payload"),
    ("states load", "streams/runtime/runner.py", "states_load"),
    # map is the stream's only per-item node: PerItem.process runs it
    ("map node", "streams/runtime/base.py", "process"),
    ("script node", "streams/runtime/functions/script.py", "process"),
    ("meter node (w/o usage_apply)", "streams/runtime/functions/meter.py", "process"),
    ("usage_apply", "metering/usage.py", "usage_apply"),
    ("counters, errors, logs", "streams/runtime/runner.py", "_outcome_save"),
    ("node states save", "streams/runtime/runner.py", "_states_save"),
    ("finish (UPDATE statuses)", "work_queue.py", "claim_finish"),
    ("commit", "django/db/backends/base/base.py", "commit"),
]


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    total = 0.0
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():
        if function == name and filename.endswith(suffix):
            total += cumulative
    return total


def _callees(stats: pstats.Stats, suffix: str, name: str, count: int = 4):
    """What a step's time is made of: the calls it spends most in (cumulative)."""
    stats.calc_callees()
    for key in stats.stats:
        if key[2] == name and key[0].endswith(suffix):
            calls = [(callee, timing[3]) for callee, timing in stats.all_callees[key].items()]
            return sorted(calls, key=lambda pair: pair[1], reverse=True)[:count]
    return []


def _where(key) -> str:
    filename, line, function = key
    return f"{filename.split('/site-packages/')[-1].replace(str(ROOT) + '/', '')}:{line} {function}"


def profile(scene: Scene, client: Client, batches: int, *, missed: list[str]) -> None:
    """Send `batches` claim batches (workers stopped) and process them here: half timed
    plainly with SQL counted, half under cProfile."""
    from django.db import connection

    from collection.services import records_process_batch

    plain = max(1, batches // 2)
    for _ in range(batches):
        body, _ = client.records(scene.batch_size)
        _, _, statuses = run_clients(client.port, [(client.path, body, client.headers)], 1)
        assert statuses == {202: 1}, statuses

    queries = [0, 0.0]

    def counting(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries[0] += 1
            queries[1] += time.perf_counter() - started

    # Warm up this process (imports, compiled graph) on a batch that is not counted.
    records_process_batch(collector_id=scene.collector_id)
    wall = cpu = 0.0
    done = 0
    with connection.execute_wrapper(counting):
        for _ in range(plain - 1):
            started, started_cpu = time.perf_counter(), time.process_time()
            done += records_process_batch(collector_id=scene.collector_id)
            wall += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
    profiler = cProfile.Profile()
    profiled = 0
    profiler.enable()
    while claimed := records_process_batch(collector_id=scene.collector_id):
        profiled += claimed
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = _cumulative(stats, "work_queue.py", "records_process_batch")

    head = "4. where a worker's time goes" + (
        f" (targets missed: {', '.join(missed)})" if missed else ""
    )
    print(f"\n{head}")
    if done:
        per = done / max(1, plain - 1)
        print(
            f"   plain: {wall / done * 1e6:,.0f} µs wall, {cpu / done * 1e6:,.0f} µs CPU in "
            f"Python per record; {queries[0] / (plain - 1):.0f} SQL statements per batch of "
            f"{per:,.0f}, {queries[1] / done * 1e6:,.0f} µs per record waiting on them "
            f"(= {done / wall:,.0f} records/s for one worker)"
        )
    if not profiled:
        return
    usage = _cumulative(stats, "metering/usage.py", "usage_apply")
    print(f"   under cProfile, {profiled:,} records (inflates Python, not SQL):")
    print(f"   {'step':<30} {'µs/record':>10} {'share':>7}")
    for label, suffix, name in STEPS:
        spent = _cumulative(stats, suffix, name)
        if name == "process" and suffix.endswith("meter.py"):
            spent -= usage
        if spent <= 0 and "script" in label:
            continue
        print(f"   {label:<30} {spent / profiled * 1e6:>10,.0f} {spent / total:>7.1%}")
        if name in ("records_claim", "process") and suffix.endswith(("work_queue.py", "meter.py")):
            for key, cumulative in _callees(stats, suffix, name):
                print(f"   {'':<6}{cumulative / profiled * 1e6:>8,.0f} µs  {_where(key)}")
    print(f"   {'records_process_batch':<30} {total / profiled * 1e6:>10,.0f} {1:>7.0%}")
    print("   top functions by own time:")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:15]
    for key, (_, calls, own, cumulative, _) in rows:
        print(
            f"   {own / profiled * 1e6:>8,.1f} µs/rec own {cumulative / profiled * 1e6:>8,.1f} "
            f"cum {calls:>8,} calls  {_where(key)}"
        )


if __name__ == "__main__":
    main()
