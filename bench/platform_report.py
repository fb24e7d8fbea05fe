"""The platform's billing report over HTTP, for one month and for a year, from the usage
rollups of many operators, against a raw SQL GROUP BY over the hourly usage counters.

    .venv/bin/python bench/platform_report.py [--operators 1000] [--days 365]
        [--active-hours 8] [--runs 20] [--warmup 3] [--baseline-runs 3] [--seed 15]
        [--keep] [--profile]

A quick run: `--operators 50` (well under a minute).

Creates a scratch database (`tally_bench_platform`) on the DATABASE_URL server, migrates
it, and sets the scene with the services: `--operators` operators (`Operator 0000`…,
created a day before the window; one in fifty, at least one, suspended), a platform key,
and billing weights in the platform settings (0.001 per API call, 0.002 per gateway
request, 0.0005 per event, 0.25 per GB stored), so that billable units are not plain
sums. The window is the `--days` days (at most 366) up to midnight UTC today.

1. Load: the usage counters as the fold leaves them once every count has been folded
   (no pending `UsageCounterDelta`), each table by one INSERT … SELECT, its indexes but
   its primary key dropped before and built again after (as they were; the foreign keys
   are not checked again when the user may skip them), then VACUUM ANALYZE. Timed.
   a) `tenants_usagecounter`, hourly: each operator has a set of buckets (kind, key,
      connection) drawn from a seeded generator: API calls of `usage-metering`
      (every active hour), `oauth` (30% of active hours) and 1 or 2 more categories
      (60%); gateway requests of `online-collection` through the operator's collector
      (every active hour), for 40% of operators `webhook` through its endpoint (50%),
      for 25% `http` through `<stream>/forward` (60%); events of 2 or 3 record types
      (from six) through the collector (the first every active hour, the others 70%).
      Connection ids are made up: the report reads no collector, endpoint or stream.
      An operator counts only in `--active-hours` consecutive UTC hours a day (its
      working day, starting at a seeded hour), so every day of the window has its
      buckets but the hourly table holds `--active-hours`/24 of the rows it would hold
      at full density (`--active-hours 24`: every hour; about 49M rows for 1,000
      operators and a year, more than a few minutes' load on a small machine). Counts
      are 1 to a bucket's maximum, by a seeded hash of (bucket, hour); maxima scale
      with an operator size drawn log-uniform from 1 to 100 (usage-metering calls
      ≤ 40 x size per hour, events of a type ≤ 500 x size, and so on).
   b) the daily, dekad, monthly, quarterly and yearly rollups: the sums of (a) per UTC
      day, dekad, calendar month, quarter and year, complete for the whole window
      (what the fold adds in the statement that writes the hourly rows; written as
      migrations 0006 and 0007 fill them). The report reads only these (and the empty
      delta table), so what it reads is what full density would give it, a bucket for
      nearly every operator, bucket and day. With the defaults: 7,664 buckets, 16.4M
      hourly rows (5.6 per active operator-hour, 1.9 per operator-hour of the year),
      2.78M daily and 99.6k monthly rows.
2. Requests: gunicorn serves the project on a free loopback port (one worker, one
   thread; rate limits raised through TALLY_RATE_LIMITS). One keep-alive client sends
   `GET /platform-api/usage/report?start=…&end=…` with the platform key, `--warmup`
   times and then `--runs` times, for
   a) a month: the last whole calendar month of the window (the whole window when it
      holds none);
   b) the year: the whole window.
   Latency is the client's, from sending the request to reading the body's last byte:
   median and p95; the year's median against its target (≤ 200 ms).
3. Baseline: the same figures by one raw SQL statement over the hourly rows (per
   operator, kind and key: the sum in the range, and for the storage estimate the events
   before its end), every row fetched, `--baseline-runs` times per range; the median, and
   the ratio baseline / HTTP median.
4. Check: every answer of step 2 (warm-ups included) against the first baseline of its
   range, exactly: the operators listed (every operator, suspended ones too, each once,
   by name), per operator API calls by category, gateway requests by connector and
   events by type (the report's zeros for the keys it lists for everyone), storage bytes
   (events before the end x the product's bytes per record, `storage_bytes_per_record`),
   billable units from the weights, and the totals row as the sums of all that. Every
   baseline run must give the same rows. Exits 1 on a mismatch or on an answer not 200.
5. Profile (with `--profile`, or when the year misses its target): the year's report
   in this process, nine times: the time in SQL (per statement) and in Python
   (`usage_report` without its SQL, the view's body `_report_json`, the JSON renderer), the garbage
   collector's pauses among them, and nine more runs with the collector off; a cProfile
   of one more run, the collector off (the 15 functions with the most time of their
   own); then EXPLAIN (ANALYZE, BUFFERS) of each of its statements taking over 5 ms.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import http.client
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_http import Server, percentile  # noqa: E402
from bench.metrics_query import secondary_indexes  # noqa: E402
from bench.support.scratch import drop_scratch_database, served_scratch_database  # noqa: E402

BENCH_DB = "tally_bench_platform"
REPORT_PATH = "/platform-api/usage/report"
TARGET_MS = 200  # the year's median
PROFILE_RUNS = 9
SLOW_STATEMENT_MS = 5
PROFILE_FUNCTIONS = 15
WEIGHTS = {
    "billing_api_call_weight": Decimal("0.001"),
    "billing_gateway_request_weight": Decimal("0.002"),
    "billing_event_weight": Decimal("0.0005"),
    "billing_storage_gb_weight": Decimal("0.25"),
}
EVENT_TYPES = ["api_request", "storage_gb_hour", "compute_seconds", "bandwidth", "sms", "seat"]
EXTRA_CATEGORIES = [
    "online-collection",
    "stream-management",
    "aggregation",
    "global-parameters",
    "metrics",
    "billing",
]
ALWAYS = 65_536  # presence in an active hour, out of 65,536
HASH_SEED = 1_000_003  # the count's hash seed is the presence's plus this


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operators", type=int, default=1_000)
    parser.add_argument("--days", type=int, default=365, help="the window, up to today (≤ 366)")
    parser.add_argument(
        "--active-hours", type=int, default=8, help="hours a day each operator counts in (1-24)"
    )
    parser.add_argument("--runs", type=int, default=20, help="timed requests per range")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per range")
    parser.add_argument("--baseline-runs", type=int, default=3, help="raw SQL runs per range")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--profile", action="store_true", help="profile the year's report")
    args = parser.parse_args()
    if not 1 <= args.days <= 366 or not 1 <= args.active_hours <= 24 or args.operators < 1:
        parser.error("--days must be 1 to 366, --active-hours 1 to 24, --operators ≥ 1")

    env, bench_url, base_url = served_scratch_database(
        BENCH_DB, rate_limits={"platform": {"rate": 1e6, "burst": 1e6}}
    )
    server = None
    ok = False
    try:
        from django.db import connections

        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        scene = scene_create(args, end)
        print(
            f"scene: {len(scene.operators):,} operators ({len(scene.suspended)} suspended), "
            f"{len(scene.buckets):,} buckets (kind, key, connection), window "
            f"{scene.start:%Y-%m-%d} → {scene.end:%Y-%m-%d} ({args.days} days, UTC), "
            f"{args.active_hours} active hours a day per operator",
            flush=True,
        )
        load(scene, args, bench_url)
        connections.close_all()

        ranges = report_ranges(scene)
        server = Server(env, workers=1, threads=1)
        load_average = os.getloadavg()[0]
        measured = {r.key: http_runs(r, server.port, scene.key, args) for r in ranges}
        server.stop()
        server = None

        baselines = {r.key: baseline_runs(r, args.baseline_runs) for r in ranges}
        ok, year_median = report(args, scene, ranges, measured, baselines, load_average)
        del measured, baselines  # a heap like a worker's for the profile
        if args.profile or year_median > TARGET_MS:
            profile(ranges[-1])
    finally:
        if server is not None:
            server.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: S110 - Django may not be set up yet
            pass
        if not args.keep:
            drop_scratch_database(base_url, BENCH_DB)
    if not ok:
        sys.exit(1)


# -- The scene ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    number: int  # unique over the scene: the hash's input with the hour
    operator_id: uuid.UUID
    first_hour: int  # the operator's first active hour of the UTC day
    kind: str
    key: str
    connection: str
    presence: int  # out of ALWAYS, in each active hour
    maximum: int  # counts are 1 to this


@dataclass
class Scene:
    operators: dict[uuid.UUID, str]  # id -> name
    suspended: set[uuid.UUID]
    key: str  # the platform key
    buckets: list[Bucket]
    start: datetime
    end: datetime


def scene_create(args, end: datetime) -> Scene:
    """Operators, a platform key and the billing weights, through the services; each
    operator's buckets, drawn from a generator seeded with `--seed`."""
    from tenants.accounting import API_CALL, EVENT, GATEWAY_REQUEST, HTTP, ONLINE_COLLECTION
    from tenants.accounting import WEBHOOK as WEBHOOK_SLUG
    from tenants.models import Operator
    from tenants.services import (
        operator_create,
        operator_set_status,
        platform_key_create,
        platform_settings_update,
    )

    start = end - timedelta(days=args.days)
    rng = random.Random(args.seed)
    width = max(4, len(str(args.operators - 1)))
    operators = [operator_create(name=f"Operator {i:0{width}d}") for i in range(args.operators)]
    suspended = rng.sample(operators, max(1, args.operators // 50))
    for operator in suspended:
        operator_set_status(operator=operator, status=Operator.Status.SUSPENDED)
    # There for the whole window, as operators billed for a year are.
    Operator.objects.update(created_at=start - timedelta(days=1))
    key = platform_key_create(name="bench").raw_key
    platform_settings_update(
        name="Tally", contact_email="ops@example.com", webhook_url="", billing=WEIGHTS
    )

    buckets: list[Bucket] = []

    def add(operator_id, first_hour, kind, key, connection, share, maximum) -> None:
        presence = round(share * ALWAYS)
        buckets.append(
            Bucket(len(buckets), operator_id, first_hour, kind, key, connection, presence, maximum)
        )

    for index, operator in enumerate(operators):
        size = 10 ** rng.uniform(0, 2)
        first_hour = rng.randrange(24)
        collector = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench:collector:{index}"))
        op = operator.pk
        add(op, first_hour, API_CALL, "usage-metering", "", 1.0, int(40 * size) + 1)
        add(op, first_hour, API_CALL, "oauth", "", 0.3, 3)
        for category in rng.sample(EXTRA_CATEGORIES, rng.choice([1, 2])):
            add(op, first_hour, API_CALL, category, "", 0.6, int(10 * size) + 1)
        add(op, first_hour, GATEWAY_REQUEST, ONLINE_COLLECTION, collector, 1.0, int(20 * size) + 1)
        if rng.random() < 0.4:
            endpoint = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench:webhook:{index}"))
            add(op, first_hour, GATEWAY_REQUEST, WEBHOOK_SLUG, endpoint, 0.5, int(5 * size) + 1)
        if rng.random() < 0.25:
            stream = uuid.uuid5(uuid.NAMESPACE_URL, f"bench:stream:{index}")
            node = f"{stream}/forward"
            add(op, first_hour, GATEWAY_REQUEST, HTTP, node, 0.6, int(20 * size) + 1)
        for position, type_ in enumerate(rng.sample(EVENT_TYPES, rng.choice([2, 3]))):
            share = 1.0 if position == 0 else 0.7
            add(op, first_hour, EVENT, type_, collector, share, int(500 * size) + 1)

    return Scene(
        operators={operator.pk: operator.name for operator in operators},
        suspended={operator.pk for operator in suspended},
        key=key,
        buckets=buckets,
        start=start,
        end=end,
    )


# -- 1. Load -----------------------------------------------------------------------------

HOURLY_SQL = """
INSERT INTO tenants_usagecounter (operator_id, hour, kind, key, connection, count)
SELECT b.operator_id, %(start)s::timestamptz + n.hour * interval '1 hour', b.kind, b.key,
       b.connection, 1 + (hashint8extended(b.number::bigint * 100000 + n.hour,
                                           %(count_seed)s) & 2147483647) %% b.maximum
FROM generate_series(0, %(days)s - 1) AS d(day)
CROSS JOIN generate_series(0, %(active)s - 1) AS a(offset_)
CROSS JOIN bench_bucket AS b
CROSS JOIN LATERAL (SELECT d.day * 24 + (b.first_hour + a.offset_) %% 24 AS hour) AS n
WHERE (hashint8extended(b.number::bigint * 100000 + n.hour, %(seed)s) & 65535) < b.presence
"""

# As the fold writes them (`usage_counters_fold`: UTC days and months of the same deltas)
# and as migration 0006 fills them from the hourly rows: written day after day.
DAILY_SQL = """
INSERT INTO tenants_usagecounterdaily (operator_id, day, kind, key, connection, count)
SELECT operator_id, (hour AT TIME ZONE 'UTC')::date, kind, key, connection, sum(count)
FROM tenants_usagecounter
GROUP BY 2, 1, 3, 4, 5 ORDER BY 2, 1, 3, 4, 5
"""
MONTHLY_SQL = """
INSERT INTO tenants_usagecountermonthly (operator_id, month, kind, key, connection, count)
SELECT operator_id, date_trunc('month', day)::date, kind, key, connection, sum(count)
FROM tenants_usagecounterdaily
GROUP BY 2, 1, 3, 4, 5 ORDER BY 2, 1, 3, 4, 5
"""
DEKAD_SQL = """
INSERT INTO tenants_usagecounterdekad (operator_id, dekad, kind, key, connection, count)
SELECT operator_id,
    date_trunc('month', day)::date + least((extract(day FROM day)::integer - 1) / 10, 2) * 10,
    kind, key, connection, sum(count)
FROM tenants_usagecounterdaily
GROUP BY 2, 1, 3, 4, 5 ORDER BY 2, 1, 3, 4, 5
"""
QUARTERLY_SQL = """
INSERT INTO tenants_usagecounterquarterly (operator_id, quarter, kind, key, connection, count)
SELECT operator_id, date_trunc('quarter', month)::date, kind, key, connection, sum(count)
FROM tenants_usagecountermonthly
GROUP BY 2, 1, 3, 4, 5 ORDER BY 2, 1, 3, 4, 5
"""
YEARLY_SQL = """
INSERT INTO tenants_usagecounteryearly (operator_id, year, kind, key, connection, count)
SELECT operator_id, date_trunc('year', month)::date, kind, key, connection, sum(count)
FROM tenants_usagecountermonthly
GROUP BY 2, 1, 3, 4, 5 ORDER BY 2, 1, 3, 4, 5
"""
# In the order they are filled, each from the one before it or from the hourly rows.
LOADS = {
    "tenants_usagecounter": HOURLY_SQL,
    "tenants_usagecounterdaily": DAILY_SQL,
    "tenants_usagecounterdekad": DEKAD_SQL,
    "tenants_usagecountermonthly": MONTHLY_SQL,
    "tenants_usagecounterquarterly": QUARTERLY_SQL,
    "tenants_usagecounteryearly": YEARLY_SQL,
}
TABLES = list(LOADS)


def load(scene: Scene, args, url: str) -> None:
    """Step 1, printing what each part took."""
    import psycopg

    with psycopg.connect(url) as conn:
        # Set-up only: no wait for the disk at each commit, room for the big sorts.
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '512MB'")
        conn.execute("SET maintenance_work_mem = '1GB'")
        try:
            with conn.transaction():  # a savepoint: only a superuser may skip the triggers
                conn.execute("SET session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            pass  # then they check, which costs time only
        conn.execute(
            "CREATE TEMPORARY TABLE bench_bucket (number int, operator_id uuid, first_hour "
            "int, kind text, key text, connection text, presence int, maximum int)"
        )
        with (
            conn.cursor() as cursor,
            cursor.copy("COPY bench_bucket FROM STDIN") as copy,
        ):
            for b in scene.buckets:
                copy.write_row(
                    (
                        b.number,
                        b.operator_id,
                        b.first_hour,
                        b.kind,
                        b.key,
                        b.connection,
                        b.presence,
                        b.maximum,
                    )
                )
        conn.execute("ANALYZE bench_bucket")
        params = {
            "start": scene.start,
            "days": args.days,
            "active": args.active_hours,
            "seed": args.seed,
            "count_seed": args.seed + HASH_SEED,
        }
        started = time.perf_counter()
        parts = []
        for table, sql in LOADS.items():
            begun = time.perf_counter()
            drop, create = secondary_indexes(conn, table)
            for statement in drop:
                conn.execute(statement)
            rows = conn.execute(sql, params if table == TABLES[0] else None).rowcount
            inserted = time.perf_counter()
            for statement in create:
                conn.execute(statement)
            conn.commit()
            parts.append(
                f"{table} {rows:,} rows in {time.perf_counter() - begun:.1f} s (of which "
                f"{len(create)} indexes {time.perf_counter() - inserted:.1f} s)"
            )
        print(f"1. loaded in {time.perf_counter() - started:.1f} s:", flush=True)
        for part in parts:
            print(f"   {part}")

        conn.autocommit = True
        started = time.perf_counter()
        conn.execute(f"VACUUM ANALYZE {', '.join(TABLES)}")
        sizes = conn.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relname = ANY(%s) ORDER BY relname",
            [TABLES],
        ).fetchall()
        print(
            f"   then VACUUM ANALYZE in {time.perf_counter() - started:.1f} s; sizes (with "
            "indexes): " + ", ".join(f"{name} {size / 2**20:,.0f} MiB" for name, size in sizes),
            flush=True,
        )


# -- 2. Over HTTP ------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    key: str
    title: str
    start: date
    end: date  # inclusive
    target_ms: float | None

    @property
    def until(self) -> date:
        return self.end + timedelta(days=1)

    @property
    def path(self) -> str:
        return f"{REPORT_PATH}?start={self.start.isoformat()}&end={self.end.isoformat()}"


def report_ranges(scene: Scene) -> list[Range]:
    first, until = scene.start.date(), scene.end.date()
    month_until = until.replace(day=1)
    month_since = (month_until - timedelta(days=1)).replace(day=1)
    month = f"a month ({(month_until - month_since).days} days)"
    if month_since < first:  # no whole calendar month in the window
        month_since, month_until = first, until
        month = f"no whole month: the window ({(until - first).days} days)"
    days = (until - first).days
    year = f"the year ({days} days)" if days >= 365 else f"the window ({days} days)"
    return [
        Range("a", month, month_since, month_until - timedelta(days=1), None),
        Range("b", year, first, until - timedelta(days=1), TARGET_MS),
    ]


@dataclass
class Runs:
    latencies: list[float] = field(default_factory=list)
    answers: list[tuple[int, bytes]] = field(default_factory=list)  # status, body


def http_runs(range_: Range, port: int, key: str, args) -> Runs:
    """`--warmup` then `--runs` requests for one range, one at a time on one keep-alive
    connection; the timed ones' latencies, and every answer for step 4."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    runs = Runs()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for index in range(args.warmup + args.runs):
        started = time.perf_counter()
        connection.request("GET", range_.path, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        if index >= args.warmup:
            runs.latencies.append(elapsed)
        runs.answers.append((response.status, answer))
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.close()
    return runs


# -- 3. Baseline -------------------------------------------------------------------------

# Per operator, kind and key: the sum in [since, until), and the sum of all before
# `until` (for events: the records stored by the end, the storage estimate's input).
BASELINE_SQL = """
SELECT operator_id, kind, key, sum(count) FILTER (WHERE hour >= %(since)s), sum(count)
FROM tenants_usagecounter
WHERE hour < %(until)s AND (hour >= %(since)s OR kind = 'event')
GROUP BY operator_id, kind, key
"""


@dataclass
class Figures:
    """One operator's figures (or the totals), as the report should give them."""

    api_calls: dict[str, int] = field(default_factory=dict)
    gateway_requests: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    stored_events: int = 0  # events before the end of the range


def baseline_runs(range_: Range, count: int) -> list[tuple[float, dict[str, Figures]]]:
    """The raw SQL `count` times: (seconds, {operator id: figures})."""
    from django.db import connection

    from tenants.accounting import API_CALL, EVENT, GATEWAY_REQUEST

    attribute = {API_CALL: "api_calls", GATEWAY_REQUEST: "gateway_requests", EVENT: "events"}
    since = datetime.combine(range_.start, datetime.min.time(), tzinfo=UTC)
    until = datetime.combine(range_.until, datetime.min.time(), tzinfo=UTC)
    done = []
    with connection.cursor() as cursor:
        for _ in range(count):
            started = time.perf_counter()
            cursor.execute(BASELINE_SQL, {"since": since, "until": until})
            rows = cursor.fetchall()
            seconds = time.perf_counter() - started
            figures: dict[str, Figures] = defaultdict(Figures)
            for operator_id, kind, key, in_range, before_end in rows:
                line = figures[str(operator_id)]
                if in_range:
                    getattr(line, attribute[kind])[key] = int(in_range)
                if kind == EVENT:
                    line.stored_events += int(before_end)
            done.append((seconds, dict(figures)))
    return done


# -- 4. Report and check -----------------------------------------------------------------


def report(args, scene: Scene, ranges, measured, baselines, load_average) -> tuple[bool, float]:
    """Prints steps 2 to 4; whether every answer matched, and the year's median (ms)."""
    from reporting.platform import storage_bytes_per_record

    print(
        f"\n2-3. GET {REPORT_PATH} over HTTP, one client, {args.runs} requests per range "
        f"after {args.warmup} warm-ups (client-side latency; load average "
        f"{load_average:.1f} on {os.cpu_count()} cores before); baseline: the raw SQL over "
        f"the hourly rows, median of {args.baseline_runs}"
    )
    print(
        f"   {'range':<48} {'body':>8} {'median':>9} {'p95':>9}  {'target':<19} "
        f"{'raw SQL':>10} {'ratio':>7}"
    )
    per_record = storage_bytes_per_record()
    missed, problems, year_median = [], [], 0.0
    for range_ in ranges:
        runs: Runs = measured[range_.key]
        median = statistics.median(runs.latencies) * 1000
        p95 = percentile(runs.latencies, 0.95) * 1000
        base = statistics.median(seconds for seconds, _ in baselines[range_.key]) * 1000
        size = len(runs.answers[-1][1])
        if range_.target_ms is None:
            target = "none"
        else:
            met = median <= range_.target_ms
            target = f"median ≤ {range_.target_ms:.0f} ms {'PASS' if met else 'MISS'}"
            year_median = median
            if not met:
                missed.append(f"{range_.key}) median")
        title = f"{range_.key}) {range_.title} {range_.start} → {range_.end}"
        print(
            f"   {title:<48} {size / 1000:>5,.0f} kB {median:>6.1f} ms {p95:>6.1f} ms  "
            f"{target:<19} {base:>7,.1f} ms {base / median:>6,.1f}x"
        )
        problems += check(scene, range_, runs, baselines[range_.key], per_record)
    print(f"\ntargets missed: {', '.join(missed) or 'none'}")
    if problems:
        print(f"!! 4. {len(problems)} differences from the raw SQL over the hourly rows:")
        for problem in problems[:15]:
            print(f"   {problem}")
        return False, year_median
    answers = sum(len(measured[r.key].answers) for r in ranges)
    print(
        f"4. answers checked against the raw SQL over the hourly rows: {answers} over HTTP, "
        f"{len(scene.operators):,} operators each ({len(scene.suspended)} suspended), every "
        f"count, storage bytes ({per_record} bytes per event stored), billable units and "
        "totals equal"
    )
    return True, year_median


def billable(figures: Figures, storage_bytes: int) -> Decimal:
    with localcontext() as context:
        context.prec = 200
        return (
            sum(figures.api_calls.values()) * WEIGHTS["billing_api_call_weight"]
            + sum(figures.gateway_requests.values()) * WEIGHTS["billing_gateway_request_weight"]
            + sum(figures.events.values()) * WEIGHTS["billing_event_weight"]
            + Decimal(storage_bytes).scaleb(-9) * WEIGHTS["billing_storage_gb_weight"]
        )


def line_problems(where: str, got: dict, wanted: Figures, per_record: int) -> list[str]:
    problems = []
    for name, attribute in (
        ("apiCallsByCategory", "api_calls"),
        ("gatewayRequestsByConnector", "gateway_requests"),
        ("eventsByType", "events"),
    ):
        counts = got.get(name)
        expected = getattr(wanted, attribute)
        if not isinstance(counts, dict) or not all(type(n) is int for n in counts.values()):
            problems.append(f"{where}: {name} is {counts!r}")
            continue
        if {k: n for k, n in counts.items() if n} != expected or not set(expected) <= set(counts):
            problems.append(f"{where}: {name} {counts} ≠ {expected} expected")
    storage = wanted.stored_events * per_record
    if got.get("storageBytes") != storage:
        problems.append(f"{where}: storageBytes {got.get('storageBytes')} ≠ {storage} expected")
    units = billable(wanted, storage)
    if got.get("billableUnits") != units:
        problems.append(f"{where}: billableUnits {got.get('billableUnits')} ≠ {units} expected")
    return problems


def check(scene: Scene, range_: Range, runs: Runs, baselines: list, per_record: int) -> list[str]:
    """Every answer for one range against the first baseline; the baselines against each
    other."""
    reference = baselines[0][1]
    problems = [
        f"{range_.key}) baseline run {index + 1} differs from the first"
        for index, (_, figures) in enumerate(baselines)
        if figures != reference
    ]
    totals = Figures()
    for figures in reference.values():
        for attribute in ("api_calls", "gateway_requests", "events"):
            summed = getattr(totals, attribute)
            for key, count in getattr(figures, attribute).items():
                summed[key] = summed.get(key, 0) + count
        totals.stored_events += figures.stored_events
    names = {str(pk): name for pk, name in scene.operators.items()}
    seen_bodies: set[bytes] = set()
    for index, (status, body) in enumerate(runs.answers):
        where = f"{range_.key}) answer {index + 1}"
        if status != 200:
            problems.append(f"{where}: HTTP {status} {body[:200]!r}")
            continue
        if body in seen_bodies:  # the same bytes as an answer already checked
            continue
        seen_bodies.add(body)
        answer = json.loads(body, parse_float=Decimal)
        if (answer.get("start"), answer.get("end")) != (str(range_.start), str(range_.end)):
            problems.append(f"{where}: range {answer.get('start')} → {answer.get('end')}")
        lines = answer.get("operators", [])
        listed = [line.get("id") for line in lines]
        if sorted(listed) != sorted(names):
            problems.append(f"{where}: {len(listed)} operators listed, not the {len(names)}")
        for line in lines:
            pk = line.get("id")
            if pk in names and line.get("name") != names[pk]:
                problems.append(f"{where}: operator {pk} named {line.get('name')!r}")
            wanted = reference.get(pk, Figures())
            problems += line_problems(f"{where} {line.get('name')}", line, wanted, per_record)
        # Exact arithmetic: the units of the summed figures are the sum of the units.
        problems += line_problems(f"{where} totals", answer.get("totals", {}), totals, per_record)
    return problems


# -- 5. Profile --------------------------------------------------------------------------


def profile(range_: Range) -> None:
    """The year's report in this process: where its time goes."""
    from django.db import connection

    from common.api.renderers import DecimalJSONRenderer
    from reporting.api.views import _report_json
    from reporting.platform import usage_report

    statements: list[tuple[str, object, float]] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append((sql, params, time.perf_counter() - started))

    collecting: dict[str, float] = {}
    collections: list[tuple[int, float]] = []  # generation, seconds

    def collector(phase, info) -> None:
        if phase == "start":
            collecting["since"] = time.perf_counter()
        elif "since" in collecting:
            collections.append((info["generation"], time.perf_counter() - collecting["since"]))

    phases: dict[str, list[float]] = defaultdict(list)
    by_statement: dict[int, list[float]] = defaultdict(list)
    kept: list[tuple[str, object]] = []
    full_collections, longest = 0, 0.0
    gc.collect()
    gc.callbacks.append(collector)
    try:
        for _ in range(PROFILE_RUNS):
            statements.clear()
            collections.clear()
            with connection.execute_wrapper(timed):
                started = time.perf_counter()
                result = usage_report(start=range_.start, end=range_.end)
                built = time.perf_counter()
            data = _report_json(result)
            serialized = time.perf_counter()
            body = DecimalJSONRenderer().render(data)
            rendered = time.perf_counter()
            sql = sum(seconds for _, _, seconds in statements)
            phases["SQL (all statements)"].append(sql)
            phases["usage_report, Python"].append(built - started - sql)
            phases["_report_json (the view's body)"].append(serialized - built)
            phases["DecimalJSONRenderer().render"].append(rendered - serialized)
            phases["total"].append(rendered - started)
            phases["  of which garbage collection"].append(sum(s for _, s in collections))
            full_collections += sum(generation == 2 for generation, _ in collections)
            longest = max([longest, *(seconds for _, seconds in collections)])
            for index, (_, _, seconds) in enumerate(statements):
                by_statement[index].append(seconds)
            kept = [(statement, params) for statement, params, _ in statements]
    finally:
        gc.callbacks.remove(collector)
    gc.disable()
    try:
        for _ in range(PROFILE_RUNS):
            started = time.perf_counter()
            DecimalJSONRenderer().render(
                _report_json(usage_report(start=range_.start, end=range_.end))
            )
            phases["total, the collector off"].append(time.perf_counter() - started)
    finally:
        gc.enable()
    print(
        f"\n5. profile: {range_.title} {range_.start} → {range_.end} in this process, median "
        f"of {PROFILE_RUNS} ({len(body) / 1000:,.0f} kB of JSON; {full_collections} full "
        f"collections in the {PROFILE_RUNS} runs, the longest pause {longest * 1000:.0f} ms, "
        f"{len(gc.get_objects()):,} objects tracked)"
    )
    for name, values in phases.items():
        print(f"   {name:<32} {statistics.median(values) * 1000:>7.1f} ms")
    print(f"   {len(kept)} statements:")
    for index, (statement, _) in enumerate(kept):
        text = " ".join(statement.split())
        print(f"   {statistics.median(by_statement[index]) * 1000:>7.1f} ms  {text[:110]}")
    profiler = cProfile.Profile()
    gc.disable()  # its pauses would be charged to whichever call allocated at the time
    try:
        profiler.enable()
        DecimalJSONRenderer().render(_report_json(usage_report(start=range_.start, end=range_.end)))
        profiler.disable()
    finally:
        gc.enable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(PROFILE_FUNCTIONS)
    print(
        f"\n   cProfile of one more run (report, body, renderer; the collector off), "
        f"top {PROFILE_FUNCTIONS}:"
    )
    listing = out.getvalue().splitlines()
    first = next(i for i, text in enumerate(listing) if text.lstrip().startswith("ncalls"))
    for text in listing[first - 2 : first + 1 + PROFILE_FUNCTIONS]:
        print(f"   | {text.rstrip()[:150]}")
    with connection.cursor() as cursor:
        for index, (statement, params) in enumerate(kept):
            if statistics.median(by_statement[index]) * 1000 < SLOW_STATEMENT_MS:
                continue
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params)
            print(f"\n   EXPLAIN ANALYZE of statement {index + 1}:")
            for (row,) in cursor.fetchall():
                print(f"   | {row[:150]}{'…' if len(row) > 150 else ''}")


if __name__ == "__main__":
    main()
