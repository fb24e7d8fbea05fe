"""Metrics queries over HTTP, answered from the hourly rollups, against a raw SQL GROUP BY
over the same records.

    .venv/bin/python bench/metrics_query.py [--records 10000000] [--customers 1000]
        [--types 20] [--days 90] [--runs 50] [--warmup 5] [--baseline-runs 3] [--keep]

A quick run: `--records 200000` (well under a minute).

Creates a scratch database (`tally_bench_metrics`) on the DATABASE_URL server, migrates
it, and sets the scene with the services: an operator, an application allowed
`metrics:read`, an ACTIVE collector, `--types` Sum meter types active from before the
window, and a record partition for every month the window touches (what Beat's
`record_partitions_ensure` keeps). The window is the `--days` days up to midnight UTC
today.

1. Load: `--records` PROCESSED records COPYed into `collection_record` from a generator,
   1,000,000 rows per COPY and transaction, oldest first and evenly spread over the
   window (received when they happened): type one of the meter types' names, customer
   (`c0000`…) one of `--customers` at random (seeded) with the account `a-<customer>`,
   payload `{"value": <0.01 to 1000.00>}`. Timed.
2. Roll up: the four rollup tables as the product leaves them once every record has
   been processed and the deltas folded, each by one INSERT … SELECT … GROUP BY over the
   records, in hourly buckets of event time (UTC), written hour after hour as the
   worker writes them: `metering_usagerollup` (customer x meter type x account x hour;
   value the sum of `payload.value`, as a Sum type keeps it; revenue 0, there are no
   price plans), `metering_usagetyperollup` (meter type x hour),
   `collection_eventrollup` (collector x type x status x hour) and
   `collection_customereventrollup` (customer x account x type x status x hour), with
   the PROCESSED counts only (the fold removes the buckets of the statuses a record
   passed through, whose deltas add up to 0). Each table's indexes but its primary key
   are dropped before its INSERT and built again after it, as they were (compact, as
   after a REINDEX: built row by row, they would take most of a 10M run), and the
   foreign keys are not checked
   again when the user may skip them (the rows point at the scene's operator and meter
   types). Timed; then VACUUM ANALYZE of the five tables, timed too.
3. Queries: gunicorn serves the project on a free loopback port (rate limits raised
   through TALLY_RATE_LIMITS); a token comes from `/oauth/token`. One keep-alive client
   sends `POST /metrics`, one request at a time, `--warmup` times and then `--runs`
   times for each of
   a) USAGE of one customer (filter CUSTOMER_ID), DAY buckets over the window;
   b) EVENTS of one customer grouped by EVENT_STATUS (the default statuses, PROCESSED
      and UNPROCESSED), DAY buckets over the window;
   c) USAGE of one meter type (filter USAGE_METER_ID, by name) over every customer, DAY
      buckets over one 30-day month of the window.
   The customer (a, b) and the type and month (c) change from request to request
   (seeded). Latency is the client's, from sending the request to reading the body's
   last byte: median and p95, the p95 against its target (≤ 50 ms for a and b, ≤ 100 ms
   for c).
4. Baseline: the same answer by raw SQL over the records (`date_trunc('day', event_time,
   'UTC')` with `sum((payload->>'value')::numeric)` or `count(*)` … GROUP BY), one
   statement per answer, every row fetched, for `--baseline-runs` subjects of each
   query; the median, and the ratio baseline / API median against a target of ≥ 20x.
5. Check: every answer of step 3 (warm-ups included) and every baseline of step 4
   against one GROUP BY over all the records per query (by customer, status and day;
   by type and day), run before step 3: the same timestamps and series, every
   bucket, the zero-filled ones included, exactly. Exits 1 on a mismatch or on a
   request not answered 200.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_http import AUDIENCE, Server, percentile  # noqa: E402
from bench.support.scratch import drop_scratch_database, served_scratch_database  # noqa: E402

BENCH_DB = "tally_bench_metrics"
COPY_CHUNK = 1_000_000  # rows per COPY statement and transaction
INGESTION_ROWS = 10_000  # rows per ingestion id (one request's worth) and per block written
MONTH_DAYS = 30
TARGET_RATIO = 20
PROCESSED, UNPROCESSED, IN_PROGRESS = 3, 1, 2
ZERO = Decimal(0)

COPY_SQL = (
    "COPY collection_record (received_at, event_time, operator_id, collector_id, "
    "ingestion_id, status, record_id, type, customer_id, account_id, payload) FROM STDIN"
)
HOUR = "date_trunc('hour', event_time, 'UTC')"
DAY = "date_trunc('day', event_time, 'UTC')"
VALUE = "(payload->>'value')::numeric"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--types", type=int, default=20, help="meter types (all Sum)")
    parser.add_argument("--days", type=int, default=90, help="the window, up to today")
    parser.add_argument("--runs", type=int, default=50, help="timed requests per query")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per query")
    parser.add_argument("--baseline-runs", type=int, default=3, help="raw SQL runs per query")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    limits = {"metrics": {"rate": 1e6, "burst": 1e6}, "token": {"rate": 1e6, "burst": 1e6}}
    env, bench_url, base_url = served_scratch_database(
        BENCH_DB, rate_limits=limits, extra={"TALLY_API_AUDIENCE": AUDIENCE}
    )
    server = None
    ok = False
    try:
        from django.db import connections

        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        scene = scene_create(args, end)
        print(
            f"scene: {args.types} Sum meter types, {args.customers:,} customers, window "
            f"{scene.start:%Y-%m-%d} → {scene.end:%Y-%m-%d} ({args.days} days, UTC)",
            flush=True,
        )
        load_and_roll_up(scene, args.records, bench_url)
        expected = Expected.from_records(scene)
        connections.close_all()

        server = Server(env, workers=1, threads=1)
        token = token_issue(server.port, scene.issued)
        shapes = query_shapes(scene)
        load = os.getloadavg()[0]
        measured = {shape.key: http_runs(shape, server.port, token, args) for shape in shapes}
        server.stop()
        server = None

        baselines = {shape.key: baseline_runs(shape, scene, args.baseline_runs) for shape in shapes}
        ok = report(args, scene, shapes, measured, baselines, expected, load)
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


@dataclass
class Scene:
    operator: object
    collector: object
    issued: object
    types: list[str]  # meter type names, which are the records' types
    customers: list[str]
    start: datetime
    end: datetime

    def days(self, start: datetime, end: datetime) -> list[datetime]:
        count = (end - start) // timedelta(days=1)
        return [start + timedelta(days=day) for day in range(count)]

    def months(self) -> list[tuple[datetime, datetime]]:
        """The window's 30-day months (the whole window when it is shorter)."""
        count = max(1, (self.end - self.start) // timedelta(days=MONTH_DAYS))
        length = min(timedelta(days=MONTH_DAYS), self.end - self.start)
        return [
            (self.start + index * length, self.start + (index + 1) * length)
            for index in range(count)
        ]


def scene_create(args, end: datetime) -> Scene:
    """What a user would provision, through the services."""
    from collection.services import collector_create, collector_provision, record_partitions_ensure
    from metering.models import MeterType
    from metering.services import meter_type_create
    from tenants.services import application_access_create, operator_create

    start = end - timedelta(days=args.days)
    operator = operator_create(name="Bench")
    issued = application_access_create(operator=operator, name="bench", scopes=["metrics:read"])
    collector = collector_create(operator=operator, name="usage")
    collector_provision(collector_id=collector.pk)
    collector.refresh_from_db()
    # A partition for every month from the window's first one (what Beat has kept).
    months = (end.year - start.year) * 12 + end.month - start.month
    record_partitions_ensure(now=start, months_ahead=months)
    names = [f"metric-{index:02d}" for index in range(args.types)]
    for name in names:
        meter_type_create(
            operator=operator,
            name=name,
            unit="unit",
            aggregation=MeterType.Aggregation.SUM,
            reset_cron="0 0 1 * *",
            active_from=start - timedelta(days=1),
        )
    width = max(4, len(str(args.customers - 1)))
    customers = [f"c{index:0{width}d}" for index in range(args.customers)]
    return Scene(operator, collector, issued, names, customers, start, end)


# -- 1 and 2. Load and roll up -----------------------------------------------------------


def record_blocks(scene: Scene, total: int) -> Iterator[str]:
    """COPY text of `total` records, INGESTION_ROWS lines per block: oldest first, evenly
    spread over the window, customer, type and value at random (seeded)."""
    rng = random.Random(42)
    span = int((scene.end - scene.start).total_seconds())
    dates = [f"{day:%Y-%m-%d}" for day in scene.days(scene.start, scene.end)]
    envelope = f"{scene.operator.pk}\t{scene.collector.pk}"
    customers, types = scene.customers, scene.types
    n_customers, n_types = len(customers), len(types)
    for first in range(0, total, INGESTION_ROWS):
        prefix = f"{envelope}\t{uuid.uuid4()}\t{PROCESSED}"
        lines = []
        for index in range(first, min(first + INGESTION_ROWS, total)):
            second = index * span // total
            day, rest = divmod(second, 86_400)
            moment = f"{dates[day]} {rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}+00"
            customer = customers[int(rng.random() * n_customers)]
            cents = rng.randint(1, 100_000)
            lines.append(
                f"{moment}\t{moment}\t{prefix}\tr{index}\t{types[int(rng.random() * n_types)]}"
                f'\t{customer}\ta-{customer}\t{{"value": {cents // 100}.{cents % 100:02d}}}\n'
            )
        yield "".join(lines)


def rollup_statements() -> list[tuple[str, str]]:
    """(table, INSERT … SELECT) for each rollup, as the product fills it: hourly buckets
    of event time, rows written hour after hour (then by customer, as a batch writes
    them)."""
    from collection.models import CustomerEventRollup, EventRollup
    from metering.models import MeterType, UsageRollup, UsageTypeRollup

    usage, by_type = UsageRollup._meta.db_table, UsageTypeRollup._meta.db_table
    meter_types = MeterType._meta.db_table
    processed = f"""
        FROM collection_record AS r
        JOIN {meter_types} AS t ON t.operator_id = r.operator_id AND t.name = r.type
        WHERE r.operator_id = %(operator)s AND r.status = {PROCESSED}
    """
    return [
        (
            usage,
            f"""
            INSERT INTO {usage} (operator_id, user_id, meter_type_id, account_id, hour, value,
                                 revenue, record_count)
            SELECT r.operator_id, r.customer_id, t.id, r.account_id, {HOUR}, sum({VALUE}), 0,
                   count(*)
            {processed}
            GROUP BY {HOUR}, r.customer_id, t.id, r.account_id, r.operator_id
            ORDER BY {HOUR}, r.customer_id, t.id, r.account_id
            """,
        ),
        (
            by_type,
            f"""
            INSERT INTO {by_type} (operator_id, meter_type_id, hour, value, revenue, record_count)
            SELECT r.operator_id, t.id, {HOUR}, sum({VALUE}), 0, count(*)
            {processed}
            GROUP BY {HOUR}, t.id, r.operator_id
            ORDER BY {HOUR}, t.id
            """,
        ),
        (
            EventRollup._meta.db_table,
            event_rollup_sql(EventRollup._meta.db_table, ["collector_id", "type"]),
        ),
        (
            CustomerEventRollup._meta.db_table,
            event_rollup_sql(
                CustomerEventRollup._meta.db_table,
                ["customer_id", "account_id", "type"],
                "AND (customer_id <> '' OR account_id <> '')",  # as the fold's `also`
            ),
        ),
    ]


def event_rollup_sql(table: str, keys: list[str], where: str = "") -> str:
    """An event rollup's counts by `keys`, status and hour. Every record went UNPROCESSED
    → IN_PROGRESS → PROCESSED, each step a -1 and a +1 delta in the same bucket; folded,
    that leaves the PROCESSED count (the fold removes the buckets it emptied)."""
    names = ", ".join(keys)
    return f"""
        INSERT INTO {table} (operator_id, {names}, status, hour, count)
        SELECT operator_id, {names}, {PROCESSED}, {HOUR}, count(*)
        FROM collection_record
        WHERE operator_id = %(operator)s AND status = {PROCESSED} {where}
        GROUP BY {HOUR}, operator_id, {names}
        ORDER BY {HOUR}, {names}
    """  # noqa: S608 (names are ours; values are parameters)


def secondary_indexes(conn, table: str) -> tuple[list[str], list[str]]:
    """Statements that drop a table's indexes but its primary key, and that build them
    again as they were (a unique constraint as the constraint)."""
    rows = conn.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname,
               pg_get_constraintdef(c.oid)
        FROM pg_index AS i
        LEFT JOIN pg_constraint AS c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE i.indrelid = %s::regclass AND NOT i.indisprimary
        """,
        [table],
    ).fetchall()
    drop, create = [], []
    for index, definition, constraint, constrains in rows:
        if constraint is not None:
            drop.append(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
            create.append(f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" {constrains}')
        else:
            drop.append(f"DROP INDEX {index}")
            create.append(definition)
    return drop, create


def records_copy(conn, scene: Scene, total: int) -> None:
    """Step 1: COPY the scene's records over `conn` (bench/metric_value.py loads the same
    set this way), printing what it took."""
    started = time.perf_counter()
    blocks = record_blocks(scene, total)
    per_copy = COPY_CHUNK // INGESTION_ROWS
    for first in blocks:  # each COPY takes this block and the next ones, up to its size
        with conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
            copy.write(first)
            for block in itertools.islice(blocks, per_copy - 1):
                copy.write(block)
        conn.commit()
    seconds = time.perf_counter() - started
    print(
        f"1. loaded {total:,} records by COPY in {seconds:.1f} s "
        f"({total / seconds:,.0f} records/s)",
        flush=True,
    )


def load_and_roll_up(scene: Scene, total: int, url: str) -> None:
    """Steps 1 and 2, printing what each took."""
    import psycopg

    with psycopg.connect(url) as conn:
        # Set-up only: no wait for the disk at each commit, room for the big sorts.
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '512MB'")
        records_copy(conn, scene, total)

        # Statistics first, so the roll-up's GROUP BYs are planned for the rows there are.
        # Its rows point at the scene's operator and meter types by construction: the
        # foreign-key triggers, which would check each one again at commit, are skipped.
        conn.execute("ANALYZE collection_record")
        try:
            with conn.transaction():  # a savepoint: only a superuser may skip the triggers
                conn.execute("SET session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            pass  # then they check, which costs time only
        conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        parts = []
        for table, sql in rollup_statements():
            begun = time.perf_counter()
            drop, create = secondary_indexes(conn, table)
            for statement in drop:
                conn.execute(statement)
            rows = conn.execute(sql, {"operator": scene.operator.pk}).rowcount
            inserted = time.perf_counter()
            for statement in create:
                conn.execute(statement)
            conn.commit()
            parts.append(
                f"{table} {rows:,} rows in {time.perf_counter() - begun:.1f} s (of which "
                f"{len(create)} indexes {time.perf_counter() - inserted:.1f} s)"
            )
        print(f"2. rolled up in {time.perf_counter() - started:.1f} s:", flush=True)
        for part in parts:
            print(f"   {part}")

        conn.autocommit = True
        started = time.perf_counter()
        conn.execute(
            "VACUUM ANALYZE collection_record, metering_usagerollup, metering_usagetyperollup, "
            "collection_eventrollup, collection_customereventrollup"
        )
        print(f"   then VACUUM ANALYZE in {time.perf_counter() - started:.1f} s", flush=True)


# -- The queries -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One query of step 3: its request, its raw SQL, and how subjects (a customer, or a
    meter type and month) are picked and answered."""

    key: str
    title: str
    target_ms: float
    subjects: Callable[[random.Random, int], list[tuple]]
    body: Callable[[tuple], dict]
    window: Callable[[tuple], tuple[datetime, datetime]]
    sql: str
    sql_params: Callable[[tuple], list]
    # Rows of `sql` -> {group label or None: {day: value}}
    sql_series: Callable[[list[tuple]], dict]
    # The answer expected from the GROUP BY over every record.
    expected: Callable[[Expected, tuple], dict]
    groups: tuple[str, ...] = ()  # series always present (zero-filled)


def query_shapes(scene: Scene) -> list[Shape]:
    window = (scene.start, scene.end)
    months = scene.months()
    operator = scene.operator.pk

    def iso(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def request(name, start, end, filters, group_by=None) -> dict:
        query = {"id": "q", "name": name, "aggregationPeriod": "DAY", "filters": filters}
        if group_by:
            query["groupBy"] = group_by
        return {"startTime": iso(start), "endTime": iso(end), "metricQueries": [query]}

    def customers(rng, count):
        return [(rng.choice(scene.customers),) for _ in range(count)]

    def type_months(rng, count):
        return [(rng.choice(scene.types), rng.randrange(len(months))) for _ in range(count)]

    def by_customer(subject):
        return [{"fieldName": "CUSTOMER_ID", "fieldValues": [subject[0]]}]

    def single(rows):
        return {None: dict(rows)}

    def by_status(rows):
        names = {PROCESSED: "PROCESSED", UNPROCESSED: "UNPROCESSED"}
        found: dict = {"PROCESSED": {}, "UNPROCESSED": {}}
        for day, status, count in rows:
            found[names[status]][day] = count
        return found

    return [
        Shape(
            key="a",
            title=f"USAGE, one customer, DAY x {len(scene.days(*window))}",
            target_ms=50,
            subjects=customers,
            body=lambda s: request("USAGE", *window, by_customer(s)),
            window=lambda s: window,
            sql=f"""
                SELECT {DAY}, sum({VALUE}) FROM collection_record
                WHERE operator_id = %s AND customer_id = %s AND status = {PROCESSED}
                  AND event_time >= %s AND event_time < %s
                GROUP BY 1
            """,  # noqa: S608 (constants only; values are parameters)
            sql_params=lambda s: [operator, s[0], *window],
            sql_series=single,
            expected=lambda e, s: {None: e.usage_by_customer.get(s[0], {})},
        ),
        Shape(
            key="b",
            title=f"EVENTS, one customer, by status, DAY x {len(scene.days(*window))}",
            target_ms=50,
            subjects=customers,
            body=lambda s: request("EVENTS", *window, by_customer(s), "EVENT_STATUS"),
            window=lambda s: window,
            sql=f"""
                SELECT {DAY}, status, count(*) FROM collection_record
                WHERE operator_id = %s AND customer_id = %s AND status = ANY(%s)
                  AND event_time >= %s AND event_time < %s
                GROUP BY 1, 2
            """,  # noqa: S608 (constants only; values are parameters)
            sql_params=lambda s: [operator, s[0], [PROCESSED, UNPROCESSED], *window],
            sql_series=by_status,
            expected=lambda e, s: {
                "PROCESSED": e.events_by_customer.get((s[0], PROCESSED), {}),
                "UNPROCESSED": e.events_by_customer.get((s[0], UNPROCESSED), {}),
            },
            groups=("PROCESSED", "UNPROCESSED"),
        ),
        Shape(
            key="c",
            title=f"USAGE, one meter type, all customers, DAY x {len(scene.days(*months[0]))}",
            target_ms=100,
            subjects=type_months,
            body=lambda s: request(
                "USAGE",
                *months[s[1]],
                [{"fieldName": "USAGE_METER_ID", "fieldValues": [s[0]]}],
            ),
            window=lambda s: months[s[1]],
            sql=f"""
                SELECT {DAY}, sum({VALUE}) FROM collection_record
                WHERE operator_id = %s AND type = %s AND status = {PROCESSED}
                  AND event_time >= %s AND event_time < %s
                GROUP BY 1
            """,  # noqa: S608 (constants only; values are parameters)
            sql_params=lambda s: [operator, s[0], *months[s[1]]],
            sql_series=single,
            expected=lambda e, s: {None: e.usage_by_type.get(s[0], {})},
        ),
    ]


@dataclass
class Expected:
    """Step 5's reference: one GROUP BY over every record per query, by day."""

    usage_by_customer: dict[str, dict[datetime, Decimal]] = field(default_factory=dict)
    events_by_customer: dict[tuple[str, int], dict[datetime, int]] = field(default_factory=dict)
    usage_by_type: dict[str, dict[datetime, Decimal]] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def from_records(cls, scene: Scene) -> Expected:
        from django.db import connection

        expected = cls()
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT customer_id, status, {DAY}, sum({VALUE}), count(*)
                FROM collection_record WHERE operator_id = %s GROUP BY 1, 2, 3
                """,  # noqa: S608 (constants only; values are parameters)
                [scene.operator.pk],
            )
            for customer, status, day, total, count in cursor.fetchall():
                if status == PROCESSED:
                    expected.usage_by_customer.setdefault(customer, {})[day] = total
                expected.events_by_customer.setdefault((customer, status), {})[day] = count
            cursor.execute(
                f"""
                SELECT type, {DAY}, sum({VALUE}) FROM collection_record
                WHERE operator_id = %s AND status = {PROCESSED} GROUP BY 1, 2
                """,  # noqa: S608 (constants only; values are parameters)
                [scene.operator.pk],
            )
            for type_, day, total in cursor.fetchall():
                expected.usage_by_type.setdefault(type_, {})[day] = total
        expected.seconds = time.perf_counter() - started
        return expected


def answer_of(scene: Scene, shape: Shape, subject: tuple, by_group: dict) -> tuple:
    """An answer as (timestamps, [(groupedBy or None, values)]), zero-filled and in the
    API's order (by group label), from {group label or None: {day: value}}."""
    from common.json import format_datetime

    days = scene.days(*shape.window(subject))
    groups = dict.fromkeys([*shape.groups, *by_group])
    series = []
    for group in sorted(groups, key=lambda label: label or ""):
        values = by_group.get(group, {})
        label = None if group is None else ("EVENT_STATUS", group)
        series.append((label, [Decimal(values.get(day, ZERO)) for day in days]))
    return [format_datetime(day) for day in days], series


def answer_parsed(body: bytes) -> tuple:
    """The API's answer to a one-query request, in the form of `answer_of`."""
    (result,) = json.loads(body, parse_float=Decimal, parse_int=Decimal)["results"]
    data = result["data"]
    timestamps = data[0]["timestamps"] if data else []
    series = []
    for item in data:
        if item["timestamps"] != timestamps:
            return None, [("series with different timestamps", [])]
        grouped = item.get("groupedBy")
        label = None if grouped is None else (grouped["fieldName"], grouped["fieldValue"])
        series.append((label, item["metricValues"]))
    return timestamps, series


def difference(got: tuple, wanted: tuple) -> str | None:
    """Where two answers differ first, or None when they are equal."""
    if got == wanted:
        return None
    got_times, got_series = got
    wanted_times, wanted_series = wanted
    if got_times != wanted_times:
        return f"timestamps {len(got_times or [])} ≠ {len(wanted_times)} expected"
    got_labels, wanted_labels = [s[0] for s in got_series], [s[0] for s in wanted_series]
    if got_labels != wanted_labels:
        return f"series {got_labels} ≠ {wanted_labels} expected"
    for (label, values), (_, wanted_values) in zip(got_series, wanted_series, strict=True):
        for moment, value, expected in zip(wanted_times, values, wanted_values, strict=False):
            if value != expected:
                return f"{label or 'value'} at {moment}: {value} ≠ {expected} expected"
        if len(values) != len(wanted_values):
            return f"{label or 'value'}: {len(values)} values ≠ {len(wanted_values)} expected"
    return "answers differ"


# -- 3. Over HTTP ------------------------------------------------------------------------


@dataclass
class Runs:
    latencies: list[float] = field(default_factory=list)
    answers: list[tuple[tuple, int, bytes]] = field(default_factory=list)  # subject, status


def token_issue(port: int, issued) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "POST",
        "/oauth/token",
        body=msgspec.json.encode(
            {
                "client_id": issued.client_id,
                "client_secret": issued.client_secret,
                "grant_type": "client_credentials",
                "audience": AUDIENCE,
            }
        ),
        headers={"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body
    return msgspec.json.decode(body)["access_token"]


def http_runs(shape: Shape, port: int, token: str, args) -> Runs:
    """`--warmup` then `--runs` requests of one query, one at a time on one keep-alive
    connection; the timed ones' latencies, and every answer for step 5."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rng = random.Random(f"http-{shape.key}")
    subjects = shape.subjects(rng, args.warmup + args.runs)
    runs = Runs()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for index, subject in enumerate(subjects):
        body = msgspec.json.encode(shape.body(subject))
        started = time.perf_counter()
        connection.request("POST", "/metrics", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        if index >= args.warmup:
            runs.latencies.append(elapsed)
        runs.answers.append((subject, response.status, answer))
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.close()
    return runs


# -- 4. Baseline -------------------------------------------------------------------------


def baseline_runs(shape: Shape, scene: Scene, count: int) -> list[tuple[tuple, float, dict]]:
    """The raw SQL for `count` subjects: (subject, seconds, {group: {day: value}})."""
    from django.db import connection

    rng = random.Random(f"sql-{shape.key}")
    done = []
    with connection.cursor() as cursor:
        for subject in shape.subjects(rng, count):
            started = time.perf_counter()
            cursor.execute(shape.sql, shape.sql_params(subject))
            rows = cursor.fetchall()
            done.append((subject, time.perf_counter() - started, shape.sql_series(rows)))
    return done


# -- 5. Report and check -----------------------------------------------------------------


def report(args, scene: Scene, shapes, measured, baselines, expected: Expected, load) -> bool:
    """Prints steps 3 to 5; whether every answer matched."""
    print(
        f"\n3-4. POST /metrics over HTTP, one client, {args.runs} requests per query after "
        f"{args.warmup} warm-ups (client-side latency; load average {load:.1f} on "
        f"{os.cpu_count()} cores before); baseline: the raw SQL, median of {args.baseline_runs}"
    )
    print(
        f"   {'query':<52} {'median':>9} {'p95':>9}  {'target':<15} "
        f"{'raw SQL':>10} {'ratio':>7}  target"
    )
    missed, problems = [], []
    for shape in shapes:
        runs: Runs = measured[shape.key]
        median = statistics.median(runs.latencies) * 1000
        p95 = percentile(runs.latencies, 0.95) * 1000
        base = statistics.median(seconds for _, seconds, _ in baselines[shape.key]) * 1000
        ratio = base / median
        p95_met, ratio_met = p95 <= shape.target_ms, ratio >= TARGET_RATIO
        if not p95_met:
            missed.append(f"{shape.key}) p95")
        if not ratio_met:
            missed.append(f"{shape.key}) ratio")
        print(
            f"   {shape.key}) {shape.title:<49} {median:>6.1f} ms {p95:>6.1f} ms  "
            f"p95 ≤ {shape.target_ms:>3.0f} ms {'PASS' if p95_met else 'MISS'} "
            f"{base:>7,.1f} ms {ratio:>6,.0f}x  ≥ {TARGET_RATIO}x {'PASS' if ratio_met else 'MISS'}"
        )
        problems += check(scene, shape, runs, baselines[shape.key], expected)
    print(f"\ntargets missed: {', '.join(missed) or 'none'}")
    if problems:
        print(f"!! 5. {len(problems)} answers differ from the GROUP BYs over every record:")
        for problem in problems[:10]:
            print(f"   {problem}")
        return False
    answers = sum(len(measured[shape.key].answers) for shape in shapes)
    print(
        f"5. answers checked against the GROUP BYs over every record ({expected.seconds:.1f} "
        f"s): {answers} over HTTP and {sum(len(done) for done in baselines.values())} by raw "
        "SQL, every bucket equal"
    )
    return True


def check(scene: Scene, shape: Shape, runs: Runs, baselines: list, expected: Expected) -> list[str]:
    """Every answer of one query, over HTTP and by raw SQL, against the reference."""
    problems = []
    for subject, status, body in runs.answers:
        wanted = answer_of(scene, shape, subject, shape.expected(expected, subject))
        if status != 200:
            problems.append(f"{shape.key}) {subject}: HTTP {status} {body[:200]!r}")
            continue
        if (where := difference(answer_parsed(body), wanted)) is not None:
            problems.append(f"{shape.key}) {subject} over HTTP: {where}")
    for subject, _, by_group in baselines:
        wanted = answer_of(scene, shape, subject, shape.expected(expected, subject))
        got = answer_of(scene, shape, subject, by_group)
        if (where := difference(got, wanted)) is not None:
            problems.append(f"{shape.key}) {subject} by raw SQL: {where}")
    return problems


if __name__ == "__main__":
    main()
