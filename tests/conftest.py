"""Shared fixtures: two operators (acme, globex), each with an application and a token,
plus staff and operator users. Tests run against real PostgreSQL and Redis."""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from common.api.ratelimit import _client as redis_client
from tenants.models import Operator
from tenants.scopes import ALL_SCOPES
from tenants.services import (
    application_access_create,
    operator_create,
    operator_membership_set,
    platform_key_create,
)
from tests.metering.webhooks import Receiver

AUDIENCE = "http://localhost:8000"
# Fixed test keys for sensitive parameters (Fernet: 32 url-safe base64 bytes).
TEST_PARAMETER_KEY = "Q3Ns0YqgnExyjwqdAq6ZB0iC1xO5dbuukFLULIszcAk="
OLD_PARAMETER_KEY = "c2jBbXwR1CjEbGRFb0P2rO8H2Oj7w6yb6g5dJ2vV3Dk="
# Sensitive test values contain this; no log record of the whole run may (see below).
SENSITIVE_SENTINEL = "SENSITIVE-SENTINEL"


class _RecordEverything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record is not a leak
            return
        if SENSITIVE_SENTINEL in text:
            self.leaks.append(f"{record.name}: {text[:200]}")


_log_watch = _RecordEverything()


def pytest_sessionstart(session):
    root = logging.getLogger()
    # Watch every record, DEBUG included, while the console keeps its own level.
    for handler in root.handlers:
        handler.setLevel(max(handler.level, root.level))
    root.setLevel(logging.DEBUG)
    root.addHandler(_log_watch)


def pytest_sessionfinish(session, exitstatus):
    if _log_watch.leaks:
        print("\nSensitive values reached the logs:\n" + "\n".join(_log_watch.leaks))
        session.exitstatus = 1


# Each pytest run keeps to its own Redis keys and test database, so that runs on one
# machine (several developers, or CI beside a developer) never see each other's state.
RUN_ID = f"{os.getpid()}"
settings.REDIS_KEY_PREFIX = f"tally-test-{RUN_ID}"
settings.CACHES["default"]["KEY_PREFIX"] = settings.REDIS_KEY_PREFIX


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    test_settings = settings.DATABASES["default"].setdefault("TEST", {})
    test_settings["NAME"] = f"test_{settings.DATABASES['default']['NAME']}_{RUN_ID}"


@pytest.fixture(scope="session", autouse=True)
def _test_database_dropped_at_the_end(django_db_setup, django_db_blocker):
    """Servers and threads the browser and worker tests started may still hold
    connections to the test database when the run ends, and PostgreSQL refuses to drop
    a database in use: end them first, so no run leaves its database behind."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def _delete_run_keys() -> None:
    client = redis_client()
    keys = list(client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def receiver():
    """A webhook endpoint on a loopback port that records what it is sent."""
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _clean_redis():
    """Each test starts with empty rate-limit buckets and cache."""
    _delete_run_keys()
    yield
    _delete_run_keys()


@pytest.fixture(autouse=True)
def _isolated_settings(settings):
    settings.ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
    # Client secrets are hashed like passwords; a fast hasher keeps the suite quick.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.TALLY = copy.deepcopy(settings.TALLY)
    settings.TALLY["API_AUDIENCE"] = AUDIENCE
    settings.TALLY["PARAMETER_KEYS"] = [TEST_PARAMETER_KEY]
    # Tests revoke and suspend and expect it at once; the cache has its own tests.
    settings.TALLY["TOKEN_CACHE_SECONDS"] = 0
    from tenants import services
    from tenants.api import authentication

    services._last_marked.clear()
    authentication._resolved_tokens._entries.clear()
    yield


@pytest.fixture(autouse=True)
def _block_outbound_network(monkeypatch):
    """Tests may talk to local servers only (the database, Redis, servers they start)."""
    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        is_ip = sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(host, str)
        if is_ip and not (host in ("localhost", "::1") or host.startswith("127.")):
            raise RuntimeError(f"Tests may not connect to {address!r}.")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@dataclass
class Tenant:
    operator: Operator
    client_id: str
    client_secret: str
    token: str


def issue_token(client: Client, client_id: str, client_secret: str, **extra) -> dict:
    response = client.post(
        "/oauth/token",
        {
            "client_id": client_id,
            "client_secret": client_secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
            **extra,
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def make_tenant(name: str, scopes=ALL_SCOPES) -> Tenant:
    operator = operator_create(name=name)
    issued = application_access_create(operator=operator, name=f"{name} app", scopes=scopes)
    token = issue_token(Client(), issued.client_id, issued.client_secret)["access_token"]
    return Tenant(operator, issued.client_id, issued.client_secret, token)


@pytest.fixture
def acme(db) -> Tenant:
    return make_tenant("Acme")


@pytest.fixture
def globex(db) -> Tenant:
    return make_tenant("Globex")


class ApiClient(Client):
    """A test client that sends a bearer token and JSON bodies by default."""

    def __init__(self, token: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.token = token

    def _base_environ(self, **request):
        environ = super()._base_environ(**request)
        if self.token and "HTTP_AUTHORIZATION" not in request:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        return environ

    def post(self, path, data=None, content_type="application/json", **extra):
        return super().post(path, data, content_type, **extra)

    def put(self, path, data="", content_type="application/json", **extra):
        return super().put(path, data, content_type, **extra)

    def patch(self, path, data="", content_type="application/json", **extra):
        return super().patch(path, data, content_type, **extra)

    def delete(self, path, data="", content_type="application/json", **extra):
        return super().delete(path, data, content_type, **extra)


@pytest.fixture
def api_client():
    def build(token: str | None = None) -> ApiClient:
        return ApiClient(token)

    return build


@pytest.fixture
def platform_key(db) -> str:
    return platform_key_create(name="Ops").raw_key


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_superuser(
        username="alice", email="alice@example.com", password="alice-password-123"
    )


@pytest.fixture
def operator_user(django_user_model, acme):
    user = django_user_model.objects.create_user(
        username="bob", email="bob@example.com", password="bob-password-123"
    )
    operator_membership_set(operator=acme.operator, user=user)
    return user


def assert_error_body(response, status: int) -> dict:
    """Every error answers in the one shared shape."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    for item in body["details"]:
        assert set(item) == {"field", "message"}
    return body


__all__ = ["AUDIENCE", "Tenant", "assert_error_body", "issue_token", "make_tenant", "settings"]


@pytest.fixture
def generous_limits(settings):
    """Every rate-limit group opened wide, for tests that make many calls (limits have
    tests of their own)."""
    for group in list(settings.TALLY["RATE_LIMITS"]):
        settings.TALLY["RATE_LIMITS"][group] = {"rate": 10_000, "burst": 10_000}
