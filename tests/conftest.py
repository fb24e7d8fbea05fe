"""Shared fixtures: two operators (acme, globex), each with an application and a token,
plus staff and operator users. Tests run against real PostgreSQL and Redis."""

from __future__ import annotations

import copy
import socket
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from config.api.ratelimit import _client as redis_client
from tenants.models import Operator, OperatorMembership
from tenants.scopes import ALL_SCOPES
from tenants.services import application_access_create, operator_create, platform_key_create

AUDIENCE = "http://localhost:8000"


@pytest.fixture(autouse=True)
def _clean_redis():
    """Each test starts with empty rate-limit buckets and cache."""
    redis_client().flushdb()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _isolated_settings(settings):
    settings.ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
    # Client secrets are hashed like passwords; a fast hasher keeps the suite quick.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.TALLY = copy.deepcopy(settings.TALLY)
    settings.TALLY["API_AUDIENCE"] = AUDIENCE
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
    OperatorMembership.objects.create(operator=acme.operator, user=user)
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
