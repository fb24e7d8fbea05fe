"""How long each browser page takes to render with the demo data, against the login
page (a page with no data) measured in the same run.

    .venv/bin/python bench/dashboard_pages.py [--runs 15] [--warmup 2]

Creates a scratch database (`tally_bench_pages`) on the DATABASE_URL server, migrates
it and loads the demo (`load_demo`: two operators, a week of usage through the demo
stream, alerts, closed periods, a failed record). Then, in this process through Django's
test client (no network, so the figures are the server's own work):

1. Each page of `/dashboard/` as the demo's operator admin (`demo-admin`), each page of
   `/platform/` and a few of the admin's as staff (`admin`), with the detail pages of
   the demo's first meter, collector and stream: `--warmup` untimed requests, then
   `--runs` timed ones.
2. Per page: the median and the slowest render, the queries it ran, the ratio of its
   median to the login page's, and the target (≤ 300 ms). Exits 1 when a page answers
   anything but 200 or misses the target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "tally_bench_pages"
TARGET_MS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    from bench.support.scratch import django_in_process

    with django_in_process(BENCH_DB, rate_limits={}):
        ok = run(args)
    sys.exit(0 if ok else 1)


def run(args) -> bool:
    import io

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS = ["testserver"]
    started = time.perf_counter()
    call_command("load_demo", stdout=io.StringIO())
    print(f"demo loaded in {time.perf_counter() - started:.1f} s", flush=True)

    from collection.models import Collector
    from metering.models import Meter
    from streams.models import Stream
    from tenants.models import Operator

    operator = Operator.objects.get(name="Demo Operator")
    meter = Meter.objects.filter(operator=operator).order_by("user_id", "id").first()
    collector = Collector.objects.filter(operator=operator).order_by("name").first()
    stream = Stream.objects.filter(operator=operator).order_by("name").first()
    users = get_user_model().objects
    member, staff = Client(), Client()
    member.force_login(users.get(username="demo-admin"))
    staff.force_login(users.get(username="admin"))
    anonymous = Client()

    week = "start={}&end={}".format(
        time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400)),
        time.strftime("%Y-%m-%d", time.gmtime()),
    )
    pages = [
        ("login page (baseline)", anonymous, "/login/"),
        ("overview", member, "/dashboard/"),
        ("meters", member, "/dashboard/meters/"),
        ("a meter", member, f"/dashboard/meters/{meter.pk}/"),
        ("usage explorer", member, "/dashboard/usage/"),
        ("collectors", member, "/dashboard/collectors/"),
        ("a collector", member, f"/dashboard/collectors/{collector.pk}/"),
        ("streams", member, "/dashboard/streams/"),
        ("a stream", member, f"/dashboard/streams/{stream.pk}/"),
        ("applications", member, "/dashboard/access/"),
        ("parameters", member, "/dashboard/access/parameters/"),
        ("webhook", member, "/dashboard/access/webhook/"),
        ("platform overview", staff, "/platform/"),
        ("platform operators", staff, "/platform/operators/"),
        ("platform connectors", staff, "/platform/connectors/"),
        ("platform billing", staff, f"/platform/billing/?{week}"),
        ("platform settings", staff, "/platform/settings/"),
        ("admin index", staff, "/admin/"),
        ("admin meters", staff, "/admin/metering/meter/"),
        ("admin records", staff, "/admin/collection/record/"),
        ("admin notifications", staff, "/admin/metering/notification/"),
    ]

    results = []
    for name, client, url in pages:
        for _ in range(args.warmup):
            client.get(url)
        timings = []
        for _ in range(args.runs):
            with CaptureQueriesContext(connection) as queries:
                begun = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - begun) * 1000)
        results.append((name, url, response.status_code, timings, len(queries)))

    baseline = statistics.median(results[0][3])
    print(
        f"\n{args.runs} requests per page after {args.warmup} warm-ups, Django's test client "
        "in this process (server time only); ratio = median / the login page's median\n"
    )
    print(
        f"   {'page':<22} {'status':>6} {'median':>9} {'slowest':>9} {'queries':>8} "
        f"{'ratio':>7}  target"
    )
    ok = True
    for name, _url, status, timings, queries in results:
        median = statistics.median(timings)
        met = status == 200 and median <= TARGET_MS
        ok &= met
        print(
            f"   {name:<22} {status:>6} {median:>7.1f}ms {max(timings):>7.1f}ms {queries:>8} "
            f"{median / baseline:>6.1f}x  {'≤ 300 ms' if met else 'MISS'}"
        )
    print("\nevery page met its target" if ok else "\na page missed its target or failed")
    return ok


if __name__ == "__main__":
    main()
