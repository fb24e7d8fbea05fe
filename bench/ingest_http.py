"""Ingestion over HTTP through the real server, against its physical limits.

    .venv/bin/python bench/ingest_http.py [--batches 200] [--single 300]

Creates a scratch database (`tally_bench`) on the DATABASE_URL server, migrates it,
starts gunicorn on a free loopback port with the project's settings (rate limits raised
through TALLY_RATE_LIMITS; one extra route, an empty Django view, as the ceiling for part
b), and measures, printing each figure beside its baseline from the same run:

a) batches of 1,000 records from 4 concurrent clients: records persisted per second and
   per-request latency, against a raw COPY of the same rows into the same table (4
   connections, 1,000 rows per transaction); the same
   batches again (all duplicates); bytes stored per record, indexes and key table included.
b) single-record requests from 16 concurrent clients: requests per second and p50/p99
   latency, against the empty view (what Django costs) and against durable one-row
   commits from 16 connections (what the disk allows).
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support.scratch import create_scratch_database, drop_scratch_database  # noqa: E402

BENCH_DB = "tally_bench"
AUDIENCE = "http://bench.local"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Server:
    def __init__(
        self, env: dict[str, str], workers: int, worker_class: str = "gthread", threads: int = 2
    ) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/gunicorn"),
                # The project's own settings for gunicorn, as production runs it.
                "--config",
                "python:config.gunicorn",
                "bench.support.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--worker-class",
                worker_class,
                "--threads",
                str(threads),
                "--keep-alive",
                "30",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def run_clients(port: int, requests: list[tuple[str, bytes, dict]], concurrency: int):
    """Send `requests` from `concurrency` keep-alive connections; return (seconds,
    latencies, statuses)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    barrier = threading.Barrier(concurrency + 1)

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        own_latencies, own_statuses = [], {}
        barrier.wait()
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                break
            path, body, headers = requests[index]
            started = time.perf_counter()
            connection.request("POST" if body else "GET", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            own_latencies.append(time.perf_counter() - started)
            own_statuses[response.status] = own_statuses.get(response.status, 0) + 1
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        with lock:
            latencies.extend(own_latencies)
            for status, count in own_statuses.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, statuses


def make_records(count: int, start: int, now: datetime) -> list[dict]:
    return [
        {
            "id": str(uuid.UUID(int=start + index + 1)),
            "timestamp": (now - timedelta(seconds=index % 3600)).isoformat(timespec="milliseconds"),
            "type": "api_call",
            "customerId": f"cust-{(start + index) % 5000:05d}",
            "accountId": f"acct-{(start + index) % 50:03d}",
            "value": (start + index) % 7 + 1,
        }
        for index in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="batches of 1,000 records")
    parser.add_argument("--single", type=int, default=300, help="requests per client in (b)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=2, help="threads per gthread worker")
    parser.add_argument("--skip-batches", action="store_true", help="run part (b) only")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in (b)")
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
    server = None
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        import django

        django.setup()
        from django.db import connection

        from collection.services import collector_create, collector_provision
        from tenants.services import application_access_create, operator_create

        operator = operator_create(name="Bench")
        issued = application_access_create(operator=operator, name="bench")
        collector = collector_create(operator=operator, name="bench")
        collector_provision(collector_id=collector.pk)
        connection.close()

        server = Server(env, args.workers, args.worker_class, args.threads)
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        conn.request(
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
        token = msgspec.json.decode(conn.getresponse().read())["access_token"]
        conn.close()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        path = f"/online-collection/v1/collectors/{collector.pk}/data"
        now = datetime.now(UTC)

        if not args.skip_batches:
            bench_batches(args, server, path, headers, collector, operator, now)
        bench_singles(args, server, path, headers)
    finally:
        if server is not None:
            server.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: S110 - Django may not be set up yet
            pass
        drop_scratch_database(base_url, BENCH_DB)


def bench_batches(args, server, path, headers, collector, operator, now) -> None:
    # a) batches of 1,000
    batches = [make_records(1000, index * 1000, now) for index in range(args.batches)]
    bodies = [msgspec.json.encode({"data": batch}) for batch in batches]
    warm = [(path, msgspec.json.encode({"data": make_records(10, 10**9, now)}), headers)]
    run_clients(server.port, warm * 8, 4)
    total = args.batches * 1000
    seconds, latencies, statuses = run_clients(
        server.port, [(path, body, headers) for body in bodies], 4
    )
    assert statuses == {202: args.batches}, statuses
    persisted = count_records(collector.pk) - 10
    assert persisted == total, persisted
    http_rate = total / seconds
    size = stored_bytes()
    rows = persisted + 10
    dup_seconds, dup_latencies, dup_statuses = run_clients(
        server.port, [(path, body, headers) for body in bodies], 4
    )
    assert dup_statuses == {202: args.batches}, dup_statuses
    assert count_records(collector.pk) - 10 == total
    dup_rate = total / dup_seconds
    copy_seconds = raw_copy(collector, operator, batches)
    copy_rate = total / copy_seconds

    print(f"\n(a) {args.batches} batches x 1,000 records, 4 clients, {args.workers} workers")
    print(f"  HTTP ingestion      {http_rate:>10,.0f} records/s   ({seconds:.2f} s)")
    print(f"  raw COPY, same rows {copy_rate:>10,.0f} records/s   ({copy_seconds:.2f} s)")
    print(f"  ratio HTTP / COPY   {http_rate / copy_rate:>10.1%}          (target >= 50 %)")
    print(
        f"  latency per request p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms   (target p99 <= 150 ms)"
    )
    print(f"  all duplicates      {dup_rate:>10,.0f} records/s")
    print(f"  ratio dup / first   {dup_rate / http_rate:>10.1%}          (target >= 80 %)")
    print(
        f"  duplicate latency p50 {percentile(dup_latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(dup_latencies, 0.99) * 1000:.1f} ms"
    )
    print(
        f"  bytes per record    {size['total'] / rows:>10.0f} B          (target <= 300 B)"
        f"  [records heap {size['heap'] / rows:.0f}, record indexes "
        f"{size['indexes'] / rows:.0f}, key table {size['keys'] / rows:.0f}]"
    )


def bench_singles(args, server, path, headers) -> None:
    # b) single records, 16 clients
    singles = []
    for client in range(args.clients):
        for index in range(args.single):
            record = {
                "id": f"s-{client}-{index}",
                "type": "api_call",
                "customerId": f"cust-{index % 100}",
                "value": 1,
            }
            singles.append((path, msgspec.json.encode({"data": record}), headers))
    empty = [("/bench/empty", b"", {})] * len(singles)
    run_clients(server.port, empty[:200], args.clients)
    e_seconds, e_latencies, e_statuses = run_clients(server.port, empty, args.clients)
    assert e_statuses == {200: len(empty)}, e_statuses
    s_seconds, s_latencies, s_statuses = run_clients(server.port, singles, args.clients)
    assert s_statuses == {202: len(singles)}, s_statuses
    s_rate, e_rate = len(singles) / s_seconds, len(empty) / e_seconds
    print(f"\n(b) single-record requests, {args.clients} clients, {len(singles)} requests")
    print(
        f"  ingestion   {s_rate:>8,.0f} req/s  p50 {percentile(s_latencies, 0.5) * 1000:.1f}"
        f" ms  p99 {percentile(s_latencies, 0.99) * 1000:.1f} ms"
        "   (target >= 1,500 req/s, p99 <= 25 ms)"
    )
    print(
        f"  empty view  {e_rate:>8,.0f} req/s  p50 {percentile(e_latencies, 0.5) * 1000:.1f}"
        f" ms  p99 {percentile(e_latencies, 0.99) * 1000:.1f} ms"
    )
    print(f"  ratio ingestion / empty view {s_rate / e_rate:.1%}")
    c_rate, c_latencies = raw_commits(len(singles), args.clients)
    print(
        f"  raw durable commits {c_rate:>8,.0f} /s  p50 "
        f"{percentile(c_latencies, 0.5) * 1000:.1f} ms  p99 "
        f"{percentile(c_latencies, 0.99) * 1000:.1f} ms  (one-row INSERTs in autocommit from "
        f"{args.clients} connections: the disk's limit for one durable write per request)"
    )
    print(f"  ratio ingestion / raw commits {s_rate / c_rate:.1%}")


def count_records(collector_id) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM collection_record WHERE collector_id = %s", [collector_id]
        )
        return cursor.fetchone()[0]


def stored_bytes() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT coalesce(sum(pg_table_size(c.oid)), 0), coalesce(sum(pg_indexes_size(c.oid)), 0)
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'collection_record'::regclass
            """
        )
        heap, indexes = cursor.fetchone()
        cursor.execute("SELECT pg_total_relation_size('collection_recordkey')")
        keys = cursor.fetchone()[0]
    return {"heap": heap, "indexes": indexes, "keys": keys, "total": heap + indexes + keys}


def bench_dsn() -> str:
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    return psycopg.conninfo.make_conninfo(
        **{k: v for k, v in params.items() if isinstance(v, str | int) and k != "context"}
    )


def raw_commits(total: int, clients: int) -> tuple[float, list[float]]:
    """Durable one-row commits from `clients` connections, as many as requests in (b)."""
    import psycopg

    dsn = bench_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commits (id bigserial, at timestamptz)")
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        own = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait()
            for _ in range(total // clients):
                started = time.perf_counter()
                conn.execute("INSERT INTO bench_commits (at) VALUES (now())")
                own.append(time.perf_counter() - started)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def raw_copy(collector, operator, batches: list[list[dict]], clients: int = 4) -> float:
    """COPY the same rows (envelope columns and payload) straight into the record table,
    one transaction per 1,000 rows, from as many connections as there are HTTP clients:
    the physical limit of the table, with its indexes."""
    import psycopg
    from django.db import connection

    from collection.parsing import prepare_records

    now = datetime.now(UTC)
    prepared = [prepare_records(batch, now).rows for batch in batches]
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE collection_record")
    dsn = bench_dsn()
    copy_sql = (
        "COPY collection_record (received_at, event_time, operator_id, collector_id, "
        "ingestion_id, record_id, type, customer_id, account_id, payload) FROM STDIN"
    )
    pending = iter(prepared)
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait()
            while True:
                with lock:
                    rows = next(pending, None)
                if rows is None:
                    return
                ingestion_id = uuid.uuid4()
                with conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
                    for record_id, event_time, type_, customer, account, payload in rows:
                        copy.write_row(
                            (now, event_time, operator.pk, collector.pk, ingestion_id)  # noqa: RUF005
                            + (record_id, type_, customer, account, payload)
                        )

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
