"""Benchmark: what a token request costs, right and wrong secrets, with the production
password hasher (PBKDF2), in-process.

    .venv/bin/python bench/token_endpoint.py [--requests 200]

Creates a scratch database (`tally_bench_token`), one application, and sends token
requests through Django's full request path (the test client), one thread:

- slow baseline: wrong secrets for an application without the quick check (as every
  check was before it: one PBKDF2 per request);
- wrong secrets and right secrets once the quick check is in place.

Prints requests per second and CPU per request, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BENCH_DB = "tally_bench_token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.support.scratch import django_in_process

    with django_in_process(BENCH_DB, rate_limits={"token": {"rate": 1e9, "burst": 1e9}}):
        run(args.requests)


def run(requests: int) -> None:
    from django.conf import settings
    from django.test import Client

    from tenants.models import ApplicationAccess
    from tenants.services import application_access_create, operator_create

    issued = application_access_create(operator=operator_create(name="Bench"), name="bench")
    client = Client()

    def send(secret: str) -> int:
        return client.post(
            "/oauth/token",
            {
                "client_id": issued.client_id,
                "client_secret": secret,
                "grant_type": "client_credentials",
                "audience": settings.TALLY["API_AUDIENCE"],
            },
            content_type="application/json",
        ).status_code

    def measure(label: str, secret: str, count: int, expected: int, reset=None) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            if reset is not None:
                reset()
            assert send(secret) == expected, label
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rate = count / wall
        print(f"  {label:<44} {rate:>9,.0f} req/s   {cpu / count * 1000:7.2f} ms CPU each")
        return rate

    def forget_quick_check() -> None:
        ApplicationAccess.objects.filter(pk=issued.access.pk).update(
            secret_sha256="", secret_hash_sha256=""
        )

    print(f"token requests, one thread, hasher {settings.PASSWORD_HASHERS[0].rsplit('.', 1)[1]}")
    baseline = measure(
        "wrong secret, slow check (the old way)",
        "wrong",
        max(10, requests // 20),
        401,
        reset=forget_quick_check,
    )
    send(issued.client_secret)  # the first right secret leaves the quick check
    wrong = measure("wrong secret, quick check", "wrong", requests, 401)
    right = measure("right secret, quick check", issued.client_secret, requests, 200)
    print(f"  wrong secrets {wrong / baseline:,.0f}x the old rate; right {right / baseline:,.0f}x")


if __name__ == "__main__":
    main()
