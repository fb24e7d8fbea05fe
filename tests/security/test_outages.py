"""Outages of the services Tally depends on: answers while they are down, and recovery.

Redis: a real server of this test's own (the embedded one `tally run` uses) is stopped
and started again. PostgreSQL: the test's connection is pointed at a port where nothing
listens, then back (the test database itself must survive for the rest of the run).
"""

from __future__ import annotations

import logging
import socket

import pytest
from django.db import connection

from common.api import ratelimit
from config.embedded import _start_redis
from tests.conftest import AUDIENCE, assert_error_body, make_tenant

TYPES = "/usage-metering/v1/meter-types"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_redis(settings, tmp_path):
    """A Redis of this test's own, used for rate limits and the cache; stop() and
    start() it at will."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    class Server:
        process = None

        def start(self):
            self.process = _start_redis(tmp_path, port)

        def stop(self):
            self.process.terminate()
            self.process.wait(timeout=10)

    server = Server()
    server.start()
    settings.REDIS_URL = url
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": url},
    }
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.mark.django_db
def test_redis_down_rate_limits_fail_open_and_come_back(
    acme, api_client, own_redis, settings, caplog
):
    settings.TALLY["RATE_LIMITS"]["meter-types"] = {"rate": 0.01, "burst": 3}
    client = api_client(acme.token)
    assert [client.get(TYPES).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert client.get("/health").json()["redis"] == "ok"

    own_redis.stop()
    before = ratelimit.fail_open.count
    with caplog.at_level(logging.WARNING):
        statuses = [client.get(TYPES).status_code for _ in range(5)]
        created = client.post(
            TYPES,
            {
                "name": "During the outage",
                "aggregation": {"type": "Sum"},
                "unit": "u",
                "timezone": "Etc/UTC",
                "resetSchedule": {"cron": "0 0 * * *"},
            },
        )
    assert statuses == [200] * 5  # metering keeps working, unlimited
    assert created.status_code == 201, created.content
    assert ratelimit.fail_open.count - before == 6
    warnings = [r for r in caplog.records if "rate limits are not enforced" in r.getMessage()]
    assert len(warnings) <= 1  # once a minute, not once a request
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded" and health.json()["redis"] == "unavailable"

    own_redis.start()
    assert client.get("/health").json() == {
        "status": "ok",
        "database": "ok",
        "redis": "ok",
        "rateLimiterFailOpen": ratelimit.fail_open.count,
    }
    # The empty bucket survived in the append-only file; limits apply again at once.
    assert client.get(TYPES).status_code == 429


@pytest.mark.django_db
def test_redis_down_the_token_endpoint_still_issues_tokens(acme, client, own_redis):
    own_redis.stop()
    response = client.post(
        "/oauth/token",
        {
            "client_id": acme.client_id,
            "client_secret": acme.client_secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.content


@pytest.mark.django_db(transaction=True)
def test_database_down_every_endpoint_answers_503_then_recovers(api_client, platform_key):
    tenant = make_tenant("Outage")
    client = api_client(tenant.token)
    assert client.get(TYPES).status_code == 200
    # Tokens are resolved on every request here (the suite's setting), so the outage
    # reaches authentication too.
    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        requests = {
            "list": lambda: client.get(TYPES),
            "create": lambda: client.post(TYPES, {"name": "x"}),
            "parameters": lambda: client.get("/global-parameters/v1/parameters"),
            "token": lambda: client.post(
                "/oauth/token",
                {
                    "client_id": tenant.client_id,
                    "client_secret": tenant.client_secret,
                    "grant_type": "client_credentials",
                    "audience": AUDIENCE,
                },
            ),
            "platform": lambda: client.get(
                "/platform-api/settings", HTTP_AUTHORIZATION=f"Bearer {platform_key}"
            ),
        }
        for name, send in requests.items():
            response = send()
            body = assert_error_body(response, 503)
            assert response["Retry-After"] == "5", name
            assert "unavailable" in body["message"], name
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["database"] == "unavailable"
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port

    # Back: the next request makes a new connection by itself.
    assert client.get(TYPES).status_code == 200
    assert client.get("/health").json()["database"] == "ok"
