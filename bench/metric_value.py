"""The value of a metric definition over HTTP (`GET /v1/metrics/{id}/value`), the same
computation as a `simple`, an `indexed` and a `complex` metric, against a raw SQL
aggregate over the same records.

    .venv/bin/python bench/metric_value.py [--records 10000000] [--customers 1000]
        [--types 20] [--days 90] [--runs 30] [--warmup 5] [--baseline-runs 30]
        [--sql-timeout-ms 60000] [--keep] [--reuse] [--profile]

A quick run: `--records 200000` (well under a minute). `--keep` keeps the database;
`--reuse` then measures on it again (steps 4 to 6 only: the records, the metrics and the
indexed metric's rollups are the kept ones, the window the days the records span).

Creates a scratch database (`tally_bench_metric_value`) on the DATABASE_URL server,
migrates it, and sets the scene of `bench/metrics_query.py` (its `scene_create`): an
operator, an application allowed `metrics:read`, an ACTIVE collector, `--types` meter
types `metric-00`… and a record partition for every month of the window, the `--days`
days up to midnight UTC today.

1. Load: the records of `bench/metrics_query.py` (its `record_blocks`, the same seed):
   `--records` PROCESSED records COPYed into `collection_record`, evenly spread over the
   window, type one of the `--types` names, customer one of `--customers`, payload
   `{"value": <0.01 to 1000.00>}`. Then VACUUM ANALYZE of the records. Timed. (The
   rollups that bench builds are not built: no metric reads them.)
2. The subject: the record type `metric-00` and, of its customers, the busiest one in
   the window (the most records of that type; ties by id).
3. Metrics, created with `reporting.services.metric_create`, all computing the sum of
   `$.value` over the customer's `metric-00` records: `simple` (SUM of `$.value`),
   `indexed` (the same) and `complex`
       SELECT sum((payload->'value')::numeric) FROM events
       WHERE type = 'metric-00' AND jsonb_typeof(payload->'value') = 'number'
   The indexed metric's backfill runs here, in this process, step after step
   (`metric_backfill_step`, `TALLY_METRICS_BACKFILL_CHUNK` record ids a step) until it
   is READY, instead of through the Celery task (not queued); timed, with the records
   walked per second. Then VACUUM ANALYZE of the metric rollups.
4. Requests: gunicorn serves the project on a free loopback port (one worker, one
   thread; rate limits raised through TALLY_RATE_LIMITS); a token comes from
   `/oauth/token`. One keep-alive client sends
   `GET /v1/metrics/{id}/value?customerId=…&timeframe={"type":"RANGE",…}`, one request
   at a time, `--warmup` times and then `--runs` times, for each metric over the whole
   window (whole hours: an indexed metric reads only its rollups), then for the indexed
   metric over the window with partial-hour edges (start 37:12 past the first hour, end
   22:48 before the last: 89 days 23 hours, the edges read from the records),
   then for the simple and complex metrics once over that window (checked, not timed).
   Also `/bench/empty`, a view that does nothing: what Django costs per request.
   Latency is the client's, from sending the request to reading the body's last byte:
   median and p95. The server's TALLY_METRICS_SQL_TIMEOUT_MS is `--sql-timeout-ms`
   (60 s, not the product's 5 s, so that a slow complex metric is measured rather than
   refused; the report says when one took longer than 5 s).
5. Baseline (run before step 4, with no server up): the same sum by one hand-written
   statement over the records, through psycopg directly (`SELECT
   sum((payload->>'value')::numeric) FROM collection_record WHERE operator_id = … AND
   customer_id = … AND type = … AND status = PROCESSED AND event_time in the window`),
   `--baseline-runs` times per window after one untimed run:
   the median and p95, and each metric's ratio baseline median / metric median.
6. Check: every answer of step 4 (warm-ups included) against the baseline of its
   window, exactly (as Decimals); exits 1 on a mismatch or a request not answered 200.
   Targets: the indexed metric's median ≤ 20 ms over the whole window and ≥ 20x faster
   than the simple one's (median over median); missed targets are reported, not
   asserted. When one is missed, or with `--profile`: each metric's value computed in
   this process (the selector, no HTTP), its SQL alone, EXPLAIN (ANALYZE, BUFFERS) of
   each metric's statement (the complex one's SQL as the sandbox compiles it, with the
   same values), and the indexed request through Django's test client in this process
   with the time spent in each stage (authentication, throttle, the definition's
   lookup, the value's SQL, the renderer, the middleware around them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from unittest import mock
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_http import AUDIENCE, Server, percentile  # noqa: E402
from bench.metrics_query import (  # noqa: E402
    PROCESSED,
    Scene,
    records_copy,
    scene_create,
    token_issue,
)
from bench.support.kept import served_kept_database  # noqa: E402
from bench.support.scratch import drop_scratch_database, served_scratch_database  # noqa: E402

BENCH_DB = "tally_bench_metric_value"
TARGET_MS = 20
TARGET_RATIO = 20
SQL_TIMEOUT_DEFAULT_MS = 5_000  # TALLY_METRICS_SQL_TIMEOUT_MS's default
EDGE_START = timedelta(minutes=37, seconds=12)  # after the window's first hour starts
EDGE_END = timedelta(minutes=22, seconds=48)  # before the window's last hour ends
COMPLEX_SQL = (
    "SELECT sum((payload->'value')::numeric) FROM events "
    "WHERE type = '{type}' AND jsonb_typeof(payload->'value') = 'number'"
)
RAW_SQL = f"""
    SELECT sum((payload->>'value')::numeric) FROM collection_record
    WHERE operator_id = %s AND customer_id = %s AND type = %s AND status = {PROCESSED}
      AND event_time >= %s AND event_time < %s
"""  # noqa: S608 (a constant; values are parameters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--types", type=int, default=20, help="record types (meter types)")
    parser.add_argument("--days", type=int, default=90, help="the window, up to today")
    parser.add_argument("--runs", type=int, default=30, help="timed requests per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per case")
    parser.add_argument("--baseline-runs", type=int, default=30, help="raw SQL runs per window")
    parser.add_argument(
        "--sql-timeout-ms",
        type=int,
        default=60_000,
        help=f"complex metrics' timeout (the product's default: {SQL_TIMEOUT_DEFAULT_MS})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure on the database a --keep run left (steps 1-3 skipped; kept too)",
    )
    parser.add_argument("--profile", action="store_true", help="profile even if targets are met")
    args = parser.parse_args()
    if args.days < 1 or args.records < 1 or args.runs < 1:
        parser.error("--days, --records and --runs must be at least 1")

    limits = {"metrics": {"rate": 1e6, "burst": 1e6}, "token": {"rate": 1e6, "burst": 1e6}}
    extra = {
        "TALLY_API_AUDIENCE": AUDIENCE,
        "TALLY_METRICS_SQL_TIMEOUT_MS": str(args.sql_timeout_ms),
    }
    base_url = None
    if args.reuse:
        env, bench_url = served_kept_database(BENCH_DB, rate_limits=limits, extra=extra)
    else:
        env, bench_url, base_url = served_scratch_database(
            BENCH_DB, rate_limits=limits, extra=extra
        )
    server = None
    ok = False
    try:
        from django.db import connections

        if args.reuse:
            scene, metrics = scene_find()
            subject = subject_pick(scene)
        else:
            end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            scene = scene_create(args, end)
            print(
                f"scene: {args.types} record types, {args.customers:,} customers, window "
                f"{scene.start:%Y-%m-%d} → {scene.end:%Y-%m-%d} ({args.days} days, UTC); "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
                flush=True,
            )
            records_load(scene, args.records, bench_url)
            subject = subject_pick(scene)
            metrics = metrics_create(scene, subject)
            backfill(metrics["indexed"], args.records, bench_url)
        connections.close_all()

        windows = {
            "whole": (scene.start, scene.end),
            "edges": (scene.start + EDGE_START, scene.end - EDGE_END),
        }
        baselines = {key: baseline_runs(bench_url, subject, w, args) for key, w in windows.items()}

        server = Server(env, workers=1, threads=1)
        token = token_issue(server.port, scene.issued)
        load = os.getloadavg()[0]
        cases = http_cases(metrics, subject, windows)
        measured = [case_run(case, server.port, token, args) for case in cases]
        floor = empty_runs(server.port, args)
        server.stop()
        server = None

        ok, met = report(args, subject, windows, cases, measured, baselines, floor, load)
        if ok and (args.profile or not met):
            profile(metrics, subject, windows)
            view_profile(metrics, subject, windows, token)
    finally:
        if server is not None:
            server.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: S110 - Django may not be set up yet
            pass
        if base_url is not None and not args.keep:
            drop_scratch_database(base_url, BENCH_DB)
    if not ok:
        sys.exit(1)


# -- 1. Load -----------------------------------------------------------------------------


def records_load(scene: Scene, total: int, url: str) -> None:
    """The records of bench/metrics_query.py, COPYed by its own step 1, then VACUUM
    ANALYZE of the records (no roll-ups: no metric definition reads them)."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")  # set-up only
        records_copy(conn, scene, total)
        conn.autocommit = True
        begun = time.perf_counter()
        conn.execute("VACUUM ANALYZE collection_record")
        print(f"   VACUUM ANALYZE in {time.perf_counter() - begun:.1f} s", flush=True)


def scene_find() -> tuple[Scene, dict[str, object]]:
    """The scene and metrics of a kept database (`--reuse`), with a new application
    (a secret is shown only once). The window is the days its records span."""
    import uuid

    from django.db import connection

    from collection.models import Collector
    from metering.models import MeterType
    from reporting.models import MetricDefinition
    from tenants.models import Operator
    from tenants.services import application_access_create

    operator = Operator.objects.get(name="Bench")
    collector = Collector.objects.filter(operator=operator).first()
    issued = application_access_create(
        operator=operator, name=f"bench {uuid.uuid4().hex[:8]}", scopes=["metrics:read"]
    )
    types = sorted(MeterType.objects.filter(operator=operator).values_list("name", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT date_trunc('day', min(event_time), 'UTC'), "
            "date_trunc('day', max(event_time), 'UTC') + interval '1 day', count(*) "
            "FROM collection_record WHERE operator_id = %s",
            [operator.pk],
        )
        start, end, records = cursor.fetchone()
    metrics = {
        kind: MetricDefinition.objects.live().get(operator=operator, name=f"sum {kind}")
        for kind in ("simple", "indexed", "complex")
    }
    print(
        f"reused {BENCH_DB}: {records:,} records, {len(types)} record types, window "
        f"{start:%Y-%m-%d} → {end:%Y-%m-%d} ({(end - start).days} days, UTC); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    return Scene(operator, collector, issued, types, [], start, end), metrics


# -- 2 and 3. The subject and the metrics ------------------------------------------------


@dataclass(frozen=True)
class Subject:
    operator_id: object
    type: str
    customer: str
    records: int  # the customer's records of the type in the window
    type_records: int  # every customer's


def subject_pick(scene: Scene) -> Subject:
    from django.db import connection

    type_ = scene.types[0]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT customer_id, count(*), sum(count(*)) OVER () FROM collection_record
            WHERE operator_id = %s AND type = %s AND status = {PROCESSED}
              AND event_time >= %s AND event_time < %s
            GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1
            """,  # noqa: S608 (constants only; values are parameters)
            [scene.operator.pk, type_, scene.start, scene.end],
        )
        customer, count, every = cursor.fetchone()
    print(
        f"2. subject: type {type_} ({every:,} records), its busiest customer {customer} "
        f"({count:,} records in the window)",
        flush=True,
    )
    return Subject(scene.operator.pk, type_, customer, count, int(every))


def metrics_create(scene: Scene, subject: Subject) -> dict[str, object]:
    """The three metrics, by the service. The indexed one's backfill task is not queued:
    this process runs the backfill (step 3)."""
    from reporting import definitions, services

    same = {"aggregation_type": definitions.SUM, "event_name": subject.type}
    same |= {"value_type": definitions.NUMERIC, "value_property": "$.value"}
    with mock.patch.object(services, "enqueue_on_commit"):
        return {
            "simple": services.metric_create(
                operator=scene.operator, name="sum simple", query_type=definitions.SIMPLE, **same
            ),
            "indexed": services.metric_create(
                operator=scene.operator, name="sum indexed", query_type=definitions.INDEXED, **same
            ),
            "complex": services.metric_create(
                operator=scene.operator,
                name="sum complex",
                query_type=definitions.COMPLEX,
                sql=COMPLEX_SQL.format(type=subject.type),
            ),
        }


def backfill(metric, total: int, url: str) -> None:
    """The indexed metric's backfill, step after step until READY; timed."""
    import psycopg
    from django.conf import settings

    from reporting.models import MetricDefinition, MetricRollup
    from reporting.services import metric_backfill_step

    started = time.perf_counter()
    steps = 1
    while metric_backfill_step(metric_id=metric.pk):
        steps += 1
    seconds = time.perf_counter() - started
    metric.refresh_from_db()
    assert metric.index_status == MetricDefinition.IndexStatus.READY, metric.index_status
    rows = MetricRollup.objects.filter(metric_id=metric.pk).count()
    with psycopg.connect(url, autocommit=True) as conn:
        begun = time.perf_counter()
        conn.execute(f"VACUUM ANALYZE {MetricRollup._meta.db_table}")
        vacuum = time.perf_counter() - begun
    chunk = settings.TALLY["METRICS"]["BACKFILL_CHUNK"]
    print(
        f"3. backfill of the indexed metric: READY after {steps} steps of {chunk:,} ids in "
        f"{seconds:.1f} s ({total / seconds:,.0f} records walked/s), {rows:,} hourly rollups; "
        f"then VACUUM ANALYZE of the rollups in {vacuum:.1f} s",
        flush=True,
    )


# -- 4. Over HTTP ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    path: str  # with the query string
    window: str  # key of the window, for its baseline
    timed: bool = True


@dataclass
class Runs:
    latencies: list[float] = field(default_factory=list)
    answers: list[tuple[int, bytes]] = field(default_factory=list)  # status, body


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def http_cases(metrics: dict, subject: Subject, windows: dict) -> list[Case]:
    def path(kind: str, window: str) -> str:
        start, end = windows[window]
        timeframe = {"type": "RANGE", "start": iso(start), "end": iso(end)}
        query = urlencode({"customerId": subject.customer, "timeframe": json.dumps(timeframe)})
        return f"/v1/metrics/{metrics[kind].pk}/value?{query}"

    return [
        Case("simple", "simple", path("simple", "whole"), "whole"),
        Case("indexed", "indexed", path("indexed", "whole"), "whole"),
        Case("complex", "complex", path("complex", "whole"), "whole"),
        Case("indexed-edges", "indexed, partial-hour edges", path("indexed", "edges"), "edges"),
        Case("simple-edges", "simple, partial-hour edges", path("simple", "edges"), "edges", False),
        Case(
            "complex-edges", "complex, partial-hour edges", path("complex", "edges"), "edges", False
        ),
    ]


def requests(port: int, path: str, headers: dict, count: int) -> list[tuple[float, int, bytes]]:
    """`count` GETs of `path`, one at a time on one keep-alive connection; fewer when one
    is not answered 200 (the last one then), so that a broken case stops at once."""
    done = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        done.append((time.perf_counter() - started, response.status, body))
        if response.status != 200:
            break
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.close()
    return done


def case_run(case: Case, port: int, token: str, args) -> Runs:
    """`--warmup` then `--runs` requests (one, untimed, for a case only checked)."""
    count = args.warmup + args.runs if case.timed else 1
    done = requests(port, case.path, {"Authorization": f"Bearer {token}"}, count)
    runs = Runs(answers=[(status, body) for _, status, body in done])
    if case.timed:
        runs.latencies = [seconds for seconds, _, _ in done[args.warmup :]]
    return runs


def empty_runs(port: int, args) -> list[float]:
    done = requests(port, "/bench/empty", {}, args.warmup + args.runs)
    return [seconds for seconds, _, _ in done[args.warmup :]]


# -- 5. Baseline -------------------------------------------------------------------------


@dataclass
class Baseline:
    latencies: list[float]
    value: Decimal | None


def baseline_runs(url: str, subject: Subject, window: tuple, args) -> Baseline:
    """The raw statement through psycopg, one untimed run then `--baseline-runs` timed
    ones (planned every time, as Django's client-side binding does)."""
    import psycopg

    params = [subject.operator_id, subject.customer, subject.type, *window]
    latencies, values = [], set()
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for run in range(args.baseline_runs + 1):
            started = time.perf_counter()
            (value,) = conn.execute(RAW_SQL, params).fetchone()
            if run:
                latencies.append(time.perf_counter() - started)
            values.add(value)
    assert len(values) == 1, values
    return Baseline(latencies, values.pop())


# -- 6. Report and check -----------------------------------------------------------------


def answer_value(body: bytes) -> Decimal | None:
    value = json.loads(body, parse_float=Decimal, parse_int=Decimal)["value"]
    return None if value is None else Decimal(value)


def report(args, subject, windows, cases, measured, baselines, floor, load) -> tuple[bool, bool]:
    """Prints steps 4 to 6; returns (every answer matched, every target met)."""
    whole, edges = windows["whole"], windows["edges"]
    print(
        f"\n4-5. GET /v1/metrics/{{id}}/value over HTTP, one client, {args.runs} requests per "
        f"case after {args.warmup} warm-ups (client-side latency; load average {load:.1f} on "
        f"{os.cpu_count()} cores before); customer {subject.customer}, {subject.records:,} "
        f"records of {subject.type} in the window"
    )
    print(f"   whole window:          {iso(whole[0])} → {iso(whole[1])}")
    print(f"   partial-hour edges:    {iso(edges[0])} → {iso(edges[1])}")
    print(f"   {'case':<38} {'median':>9} {'p95':>9} {'raw/case':>9}")

    def row(title: str, latencies: list[float], base: Baseline | None) -> float:
        if not latencies:
            print(f"   {title:<38} {'—':>9} {'—':>9}  (not answered 200: see below)")
            return float("nan")
        median = statistics.median(latencies) * 1000
        p95 = percentile(latencies, 0.95) * 1000
        ratio = f"{statistics.median(base.latencies) * 1000 / median:>8,.1f}x" if base else ""
        print(f"   {title:<38} {median:>6.1f} ms {p95:>6.1f} ms {ratio:>9}")
        return median

    medians: dict[str, float] = {}
    for key, title in (("whole", "raw SQL (psycopg)"), ("edges", "raw SQL, partial-hour edges")):
        base = baselines[key]
        medians[f"raw-{key}"] = row(title, base.latencies, base)
    for case, runs in zip(cases, measured, strict=True):
        if case.timed:
            medians[case.key] = row(f"{case.title} (HTTP)", runs.latencies, baselines[case.window])
    row("/bench/empty (HTTP, Django's floor)", floor, None)

    indexed, simple = medians["indexed"], medians["simple"]
    speedup = simple / indexed  # nan when either failed: both targets then MISS
    met_ms, met_ratio = indexed <= TARGET_MS, speedup >= TARGET_RATIO
    print(
        f"\n   indexed median {indexed:.1f} ms: target ≤ {TARGET_MS} ms "
        f"{'PASS' if met_ms else 'MISS'}; indexed vs simple {speedup:,.1f}x faster: "
        f"target ≥ {TARGET_RATIO}x {'PASS' if met_ratio else 'MISS'}; indexed with partial-hour "
        f"edges {medians['indexed-edges']:.1f} ms ({simple / medians['indexed-edges']:,.1f}x "
        "faster than simple)"
    )
    complex_runs = next(
        runs for case, runs in zip(cases, measured, strict=True) if case.key == "complex"
    )
    slowest = max(complex_runs.latencies, default=0) * 1000
    if slowest > SQL_TIMEOUT_DEFAULT_MS:
        print(
            f"   !! the complex metric took up to {slowest:,.0f} ms: over the "
            f"default TALLY_METRICS_SQL_TIMEOUT_MS ({SQL_TIMEOUT_DEFAULT_MS:,} ms), it would "
            "answer 400 (this run's timeout: --sql-timeout-ms)"
        )

    problems = []
    for case, runs in zip(cases, measured, strict=True):
        wanted = baselines[case.window].value
        for status, body in runs.answers:
            if status != 200:
                problems.append(f"{case.title}: HTTP {status} {body[:300]!r}")
            elif (got := answer_value(body)) != wanted:
                problems.append(f"{case.title}: {got} ≠ {wanted} (raw SQL)")
    if problems:
        print(f"!! 6. {len(problems)} answers differ from the raw SQL's:")
        for problem in problems[:10]:
            print(f"   {problem}")
        return False, met_ms and met_ratio
    answers = sum(len(runs.answers) for runs in measured)
    print(
        f"6. every answer ({answers} over HTTP, warm-ups included) equals the raw SQL's: "
        f"{baselines['whole'].value} over the whole window, {baselines['edges'].value} with "
        "partial-hour edges"
    )
    return True, met_ms and met_ratio


# -- Profile ----------------------------------------------------------------------------


def profile(metrics: dict, subject: Subject, windows: dict, runs: int = 20) -> None:
    """Each metric's value in this process (the selector: no HTTP, no DRF, no auth), the
    SQL it sends alone, and EXPLAIN (ANALYZE, BUFFERS) of the simple and indexed ones."""
    from django.db import connection

    from reporting import measures
    from reporting.models import MetricDefinition
    from reporting.selectors import metric_value

    def median_ms(call: Callable[[], object]) -> float:
        call()
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            call()
            timings.append(time.perf_counter() - started)
        return statistics.median(timings) * 1000

    print(f"\nprofile: in this process, median of {runs} after one untimed call")
    cases = [
        ("simple", "whole"),
        ("indexed", "whole"),
        ("complex", "whole"),
        ("indexed", "edges"),
    ]
    for kind, window_key in cases:
        metric = MetricDefinition.objects.get(pk=metrics[kind].pk)
        spec = metric.spec()
        window = measures.Window(*windows[window_key])

        def value(metric=metric, spec=spec, window=window):
            return metric_value(
                operator_id=subject.operator_id,
                spec=spec,
                customer_id=subject.customer,
                window=window,
                metric=metric,
            )

        statements: list[tuple[str, object]] = []

        def capture(execute, sql, params, many, context, statements=statements):
            statements.append((sql, params))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(capture):
            value()
        title = f"{kind}{', partial-hour edges' if window_key == 'edges' else ''}"
        print(
            f"   {title:<30} metric_value() {median_ms(value):>7.2f} ms; {len(statements)} "
            f"statements; spec() {median_ms(metric.spec):.3f} ms"
        )
        if kind == "complex":
            complex_explain(spec, subject, window)
            continue
        ((sql, params),) = statements

        def alone(sql=sql, params=params):
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                cursor.fetchall()

        print(f"      its statement alone {median_ms(alone):.2f} ms; EXPLAIN (ANALYZE, BUFFERS):")
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
            for (line,) in cursor.fetchall():
                print(f"      | {line}")


def complex_explain(spec, subject: Subject, window) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the SQL the sandbox runs for the complex metric,
    as this process's role (the plan is the one the sandbox role gets: the same view and
    the same values), with the scope row it reads, all rolled back."""
    from django.db import connection, transaction

    from reporting.sandbox import SCOPE_TABLE, _sql_compile

    sql = _sql_compile(spec.sql, start=window.start is not None, end=window.end is not None)
    print(f"      its SQL, compiled: {sql}")
    print("      EXPLAIN (ANALYZE, BUFFERS) of it, with the values:")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SCOPE_TABLE} (pid, operator_id) VALUES (pg_backend_pid(), %s)",  # noqa: S608
            [subject.operator_id],
        )
        cursor.execute(f"PREPARE bench_complex (uuid, text, timestamptz, timestamptz) AS {sql}")
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_complex (%s, %s, %s, %s)",
            [subject.operator_id, subject.customer, window.start, window.end],
        )
        for (line,) in cursor.fetchall():
            print(f"      | {line}")
        cursor.execute("DEALLOCATE bench_complex")
        transaction.set_rollback(True)


def view_profile(
    metrics: dict, subject: Subject, windows: dict, token: str, runs: int = 50
) -> None:
    """The indexed metric's request in this process through Django's test client (every
    middleware, DRF, the renderer; no socket, no gunicorn): the median of the whole and
    of the stages it goes through, by wrapping them with timers."""
    from django.test import Client

    from common.api.renderers import DecimalJSONRenderer
    from common.api.throttling import TokenBucketThrottle
    from reporting.api import views
    from tenants.api.authentication import OperatorTokenAuthentication
    from tenants.api.permissions import OperatorScopePermission
    from tenants.middleware import ApiCallAccountingMiddleware

    start, end = windows["whole"]
    timeframe = json.dumps({"type": "RANGE", "start": iso(start), "end": iso(end)})
    path = f"/v1/metrics/{metrics['indexed'].pk}/value"
    query = {"customerId": subject.customer, "timeframe": timeframe}
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
    stages = [
        ("token authentication", OperatorTokenAuthentication, "authenticate"),
        ("scope permission", OperatorScopePermission, "has_permission"),
        ("throttle (Redis)", TokenBucketThrottle, "allow_request"),
        ("get_object (the definition)", views.MetricDefinitionViewSet, "get_object"),
        ("metric_value (the SQL)", views, "metric_value"),
        ("render", DecimalJSONRenderer, "render"),
        ("API call accounting (+ inner)", ApiCallAccountingMiddleware, "__call__"),
    ]
    timings: dict[str, list[float]] = {title: [] for title, _, _ in stages}
    patches = []
    for title, owner, name in stages:
        original = getattr(owner, name)

        def timed(*args, _original=original, _title=title, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                timings[_title].append(time.perf_counter() - started)

        patches.append(mock.patch.object(owner, name, timed))
    whole = []
    for patch in patches:
        patch.start()
    try:
        for run in range(runs + 1):
            started = time.perf_counter()
            response = client.get(path, query)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.content
            if run:
                whole.append(elapsed)
            else:
                for values in timings.values():
                    values.clear()
    finally:
        for patch in reversed(patches):
            patch.stop()
    print(
        f"\nprofile: the indexed request in this process (test client), median of {runs}: "
        f"{statistics.median(whole) * 1000:.2f} ms, of which"
    )
    for title, values in timings.items():
        if values:
            print(f"   {title:<32} {statistics.median(values) * 1000:>7.2f} ms")


if __name__ == "__main__":
    main()
