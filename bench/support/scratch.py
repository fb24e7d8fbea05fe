"""A scratch database for a benchmark, on the server DATABASE_URL names."""

from __future__ import annotations

import os
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
