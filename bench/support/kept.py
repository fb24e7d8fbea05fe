"""A scratch database a benchmark kept (`--keep`), served again (`--reuse`): the same
environment as `scratch.served_scratch_database`, without dropping the database."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from bench.support.scratch import DEFAULT_URL, serve_database


def served_kept_database(
    name: str, *, rate_limits: dict[str, dict[str, float]], extra: dict[str, str] | None = None
) -> tuple[dict[str, str], str]:
    """The database `name`, which must exist, migrated (a no-op when it is up to date),
    this process's Django set up on it, and the environment a server started beside it
    needs. Returns (that environment, the database's URL)."""
    import psycopg

    base_url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    url = urlunsplit(urlsplit(base_url)._replace(path=f"/{name}"))
    with psycopg.connect(base_url, autocommit=True) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if found.fetchone() is None:
            raise SystemExit(f"no database {name} to reuse: run once with --keep first")
    return serve_database(url, rate_limits=rate_limits, extra=extra), url
