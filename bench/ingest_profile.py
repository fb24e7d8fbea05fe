"""Where a single-record ingestion request spends its time, in-process.

    .venv/bin/python bench/ingest_profile.py [--requests 1000]

Creates a scratch database (`tally_bench_profile`), an operator, a token and an active
collector, then sends single-record requests through Django's full request path (the
test client: middleware, DRF, authentication, throttle, ingestion), first unprofiled to
measure the cost per request, then under cProfile, and prints our own functions by
cumulative time. Speed here is per request on one thread; bench/ingest_http.py measures
throughput through the real server.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

BENCH_DB = "tally_bench_profile"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.support.scratch import django_in_process

    limits = {"ingestion": {"rate": 1e9, "burst": 1e9}, "token": {"rate": 1e6, "burst": 1e6}}
    with django_in_process(BENCH_DB, rate_limits=limits):
        run(args.requests)


def run(requests: int) -> None:
    from django.conf import settings
    from django.test import Client

    from collection.services import collector_create, collector_provision
    from tenants.services import application_access_create, operator_create

    operator = operator_create(name="Profile")
    issued = application_access_create(operator=operator, name="profile")
    client = Client()
    token = client.post(
        "/oauth/token",
        {
            "client_id": issued.client_id,
            "client_secret": issued.client_secret,
            "grant_type": "client_credentials",
            "audience": settings.TALLY["API_AUDIENCE"],
        },
        content_type="application/json",
    ).json()["access_token"]
    collector = collector_create(operator=operator, name="profile")
    collector_provision(collector_id=collector.pk)
    path = f"/online-collection/v1/collectors/{collector.pk}/data"
    counter = iter(range(10**9))

    def send() -> None:
        body = {"data": {"id": f"r{next(counter)}", "type": "api", "customerId": "c1", "v": 1}}
        response = client.post(
            path,
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 202, response.content

    for _ in range(50):  # warm caches and connections
        send()
    started = time.perf_counter()
    for _ in range(requests):
        send()
    elapsed = time.perf_counter() - started
    print(
        f"{requests:,} single-record requests in-process: {requests / elapsed:,.0f} req/s, "
        f"{elapsed / requests * 1000:.2f} ms each (one thread, test client included)"
    )

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        send()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(r"/(common|config|tenants|collection)/|psycopg/connection.py.*wait", 20)
    # And everything, by time spent in the function itself: where the CPU goes.
    stats.sort_stats("tottime").print_stats(25)
    print("\nOur functions (and waits on PostgreSQL) by cumulative time, under cProfile:")
    print(out.getvalue().split("\n", 6)[-1])


if __name__ == "__main__":
    main()
