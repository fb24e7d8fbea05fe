"""A scratch database for a benchmark, on the server DATABASE_URL names."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/tally"


def _admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statement)


def create_scratch_database(name: str) -> tuple[str, str]:
    """Create `name` afresh; return its URL and the server's original DATABASE_URL."""
    base_url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    _admin(base_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(base_url, f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(base_url)._replace(path=f"/{name}")), base_url


def drop_scratch_database(base_url: str, name: str) -> None:
    _admin(base_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def django_on_scratch_database(name: str, *, keep: bool = False) -> Iterator[None]:
    """Point this process's Django at a fresh database `name`; drop it afterwards."""
    scratch_url, base_url = create_scratch_database(name)
    os.environ["DATABASE_URL"] = scratch_url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    try:
        yield
    finally:
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        if not keep:
            drop_scratch_database(base_url, name)


@contextmanager
def django_in_process(name: str, *, rate_limits: dict[str, dict[str, float]]) -> Iterator[None]:
    """For benchmarks that send requests through Django's test client: a migrated scratch
    database `name`, these rate limits (raised out of the way), and quiet logs."""
    import json

    os.environ["TALLY_RATE_LIMITS"] = json.dumps(rate_limits)
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["LOG_LEVEL"] = "WARNING"
    with django_on_scratch_database(name):
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        yield


def served_scratch_database(
    name: str, *, rate_limits: dict[str, dict[str, float]], extra: dict[str, str] | None = None
) -> tuple[dict[str, str], str, str]:
    """For benchmarks that serve the project over HTTP: a fresh, migrated database
    `name`, this process's Django set up on it, and the environment a server started
    beside it needs (these rate limits, quiet logs). Returns (that environment, the
    database's URL, the server's original DATABASE_URL for `drop_scratch_database`)."""
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    scratch_url, base_url = create_scratch_database(name)
    try:
        env = serve_database(scratch_url, rate_limits=rate_limits, extra=extra)
    except BaseException:
        drop_scratch_database(base_url, name)
        raise
    return env, scratch_url, base_url


def serve_database(
    url: str, *, rate_limits: dict[str, dict[str, float]], extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Migrate the database at `url` (a no-op when it is up to date), set this process's
    Django up on it, and return the environment a server started beside it needs."""
    import json
    import subprocess

    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        TALLY_RATE_LIMITS=json.dumps(rate_limits),
        **(extra or {}),
    )
    os.environ.update(env)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=root, env=env, check=True
    )
    import django

    django.setup()
    return env
