"""Through the servers Tally runs under, against the test database: gunicorn (with
config/gunicorn.py) and Django's development server read chunked request bodies within
the size limits, and what gunicorn refuses itself is answered in the shared JSON error
body, not HTML."""

from __future__ import annotations

import http.client
import os
import socket
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import AUDIENCE, make_tenant
from tests.e2e import servers
from tests.factories import CollectorFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def server_environment() -> dict[str, str]:
    database = connection.settings_dict
    environment = {
        **os.environ,
        "DATABASE_URL": servers.database_url(database),
        "REDIS_URL": settings.REDIS_URL,
        "TALLY_REDIS_PREFIX": settings.REDIS_KEY_PREFIX,
        "TALLY_API_AUDIENCE": AUDIENCE,
        "TALLY_RATE_LIMITS": '{"ingestion": {"rate": 1000, "burst": 1000}}',
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    return environment


@pytest.fixture
def gunicorn():
    """gunicorn serving Tally on a loopback port, on this test's database."""
    with servers.gunicorn(server_environment()) as port:
        yield port


@pytest.fixture(params=["gunicorn", "runserver"])
def any_server(request):
    """Each server Tally can be run under: gunicorn, and Django's development server."""
    with getattr(servers, request.param)(server_environment()) as port:
        yield port


def post_chunked(port: int, path: str, chunks: list[bytes], token: str):
    connection_ = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection_.putrequest("POST", path)
    connection_.putheader("Authorization", f"Bearer {token}")
    connection_.putheader("Content-Type", "application/json")
    connection_.putheader("Transfer-Encoding", "chunked")
    connection_.endheaders()
    try:
        for chunk in chunks:
            connection_.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        connection_.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered before the whole body was sent (a 413): read it
    response = connection_.getresponse()
    return response.status, response.read()


def test_chunked_bodies_are_read_within_the_size_limit(any_server):
    tenant = make_tenant("Chunked")
    collector = CollectorFactory(operator=tenant.operator)
    path = f"/online-collection/v1/collectors/{collector.pk}/data"

    body = b'{"data": [' + b",".join(b'{"id": "r%d"}' % i for i in range(50)) + b"]}"
    chunks = [body[start : start + 64] for start in range(0, len(body), 64)]
    status, answer = post_chunked(any_server, path, chunks, tenant.token)
    assert status == 202, answer
    assert b'"accepted":50' in answer

    # Past the endpoint's limit (5 MiB for ingestion): refused while reading, not stored.
    big = [b'{"data": [' + b'{"id": "x"},' * 100_000] * 6
    status, answer = post_chunked(any_server, path, big, tenant.token)
    assert status == 413, answer[:300]
    assert answer.startswith(b'{"status":413')


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-H: y\r\n" * 120 + b"\r\n", 431),
        (b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
    ids=["long request line", "long header", "too many headers", "bad method"],
)
def test_what_gunicorn_refuses_is_answered_in_json(gunicorn, request_bytes, status):
    with socket.create_connection(("127.0.0.1", gunicorn), timeout=10) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"Content-Type: application/json" in head
    assert body.startswith(b'{"status":%d,' % status)
    assert b"aaaa" not in body and b"bbbb" not in body  # nothing of the request echoed
