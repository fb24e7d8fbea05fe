"""transforms/http and the outbound guard, against an HTTP server the test starts on
127.0.0.1 (allowed through TALLY["STREAMS"]["HTTP_ALLOWED_HOSTS"], as an operator would)."""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import socket
import threading
import time
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from streams.runtime import outbound
from streams.runtime.base import Emit, Item, NodeContext
from streams.runtime.engine import RunSettings, batch_run, graph_compile
from streams.runtime.functions import http
from tenants.models import UsageCounter
from tenants.services import GATEWAY_REQUEST, usage_counters_fold
from tests.factories import OperatorFactory, ParameterFactory

FIXTURES = Path(__file__).resolve().parents[4] / "shared/fixtures/usage-engine-streams"


def fixture_node(export: str, name: str) -> dict:
    """A copy of a real `transforms/http` node (the fixture file stays untouched)."""
    nodes = json.loads((FIXTURES / export).read_text())["nodes"]
    return copy.deepcopy(next(node for node in nodes if node["name"] == name))


# --- A local server ---------------------------------------------------------------------


class LocalApi:
    """Answers by path: each route is a list of (status, headers, body) used in turn (the
    last one repeats), or a callable taking the request. Records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.requests: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = {
                    "method": self.command,
                    "path": parts.path,
                    "query": parse_qs(parts.query),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
                api.requests.append(request)
                route = api.routes.get(parts.path)
                if route is None:
                    answer = (404, {}, b'{"error": "no such route"}')
                elif callable(route):
                    answer = route(request)
                else:
                    seen = sum(1 for r in api.requests if r["path"] == parts.path)
                    answer = route[min(seen, len(route)) - 1]
                status, headers, payload = answer
                payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # The client may have given up first (the timeout tests).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

            def log_message(self, format, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def calls(self, path: str) -> list[dict]:
        return [request for request in self.requests if request["path"] == path]


@pytest.fixture
def api():
    server = LocalApi()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def allow_local(settings):
    settings.TALLY["STREAMS"]["HTTP_ALLOWED_HOSTS"] = ["127.0.0.1"]
    settings.TALLY["STREAMS"]["HTTP_TIMEOUT_SECONDS"] = 2
    return settings


@pytest.fixture(autouse=True)
def _fresh_http(monkeypatch):
    http.token_cache_clear()
    monkeypatch.setattr(http, "RETRY_BASE_DELAY_SECONDS", 0)
    yield
    http.token_cache_clear()


@pytest.fixture
def operator(db):
    return OperatorFactory()


@pytest.fixture
def secrets(operator):
    ParameterFactory(operator=operator, name="ue/client-id", value="tally-client")
    ParameterFactory(
        operator=operator, name="ue/client-secret", type="sensitive", value="s3cret-value"
    )


# --- Running the node -------------------------------------------------------------------


class NodeRun:
    """One node, run like the engine does: a fresh context per pass, one memo per batch."""

    def __init__(self, node: dict, operator_id: uuid.UUID, *, side_effects: bool = True):
        self.node = node
        self.operator_id = operator_id
        self.stream_id = uuid.uuid4()
        self.side_effects = side_effects
        self.memo: dict = {}
        self.ctx: NodeContext | None = None

    def run(self, payloads: list) -> Emit:
        self.ctx = NodeContext(
            operator_id=self.operator_id,
            stream_id=self.stream_id,
            version_id=uuid.uuid4(),
            node=self.node,
            now=datetime.datetime.now(datetime.UTC),
            side_effects=self.side_effects,
            memo=self.memo,
        )
        function = http.HttpCall(self.ctx)
        emit = Emit()
        function.process([Item(p, origin) for origin, p in enumerate(payloads, 1)], emit)
        function.finish(emit, end_of_execution=False)
        return emit

    def gateway_requests(self) -> int:
        return gateway_requests(self.operator_id, f"{self.stream_id}/{self.node['id']}")


def gateway_requests(operator_id, connection: str) -> int:
    """The node's requests as the platform counts them: counted in Redis, then folded."""
    usage_counters_fold()
    rows = UsageCounter.objects.filter(
        operator_id=operator_id, kind=GATEWAY_REQUEST, key="http", connection=connection
    )
    return sum(row.count for row in rows)


def plain_node(uri: str, **params) -> dict:
    return {
        "id": "http-node",
        "name": "Call",
        "type": "transforms/http",
        "params": {"uri": uri, "method": "GET", "errorMode": "defer", **params},
    }


def passed(emit: Emit) -> list:
    return [item.payload for item in emit.outputs.get(None, [])]


TOKEN_ANSWER = (200, {}, {"access_token": "token-1", "expires_in": 3600, "token_type": "Bearer"})


def with_oauth(node: dict, api: LocalApi) -> dict:
    node["params"]["oAuth2Authentication"].update(
        accessTokenURL=api.url("/oauth/token"),
        clientId="{{param:ue/client-id}}",
        clientSecret="{{param:ue/client-secret}}",
    )
    return node


# --- The fixtures' real nodes -------------------------------------------------------------


@pytest.mark.django_db
def test_meter_type_api_posts_the_meter_type_as_json_with_an_oauth2_token(
    api, allow_local, operator, secrets
):
    node = with_oauth(fixture_node("provisioning-meter-types.json", "Meter Type API"), api)
    node["params"]["uri"] = api.url("/usage-metering/v1/meter-types")
    api.routes["/oauth/token"] = [TOKEN_ANSWER]
    api.routes["/usage-metering/v1/meter-types"] = [
        (201, {"X-Request-Id": "r-1"}, b'{"id": "mt-1", "rate": 0.10}')
    ]
    meter_type = {"name": "Pay-Per-Print", "aggregation": {"type": "sum"}, "scale": Decimal("2.50")}

    node_run = NodeRun(node, operator.id)
    emit = node_run.run([{"meterType": meter_type}, {"meterType": {**meter_type, "name": "B"}}])

    assert emit.failed == {}
    first, _ = passed(emit)
    assert first["meterType"] == meter_type
    assert first["httpResponse"] == {"id": "mt-1", "rate": Decimal("0.10")}
    # useResponseHeaderKey is true in the export.
    assert first["httpStatusCode"] == 201
    assert first["httpResponseHeaders"]["x-request-id"] == "r-1"
    posts = api.calls("/usage-metering/v1/meter-types")
    assert [json.loads(p["body"])["name"] for p in posts] == ["Pay-Per-Print", "B"]
    assert b'"scale":2.50' in posts[0]["body"]  # exact decimals on the wire
    assert posts[0]["headers"]["content-type"] == "application/json"
    assert {p["headers"]["authorization"] for p in posts} == {"Bearer token-1"}
    # One token for both records; the form carries the credentials from the parameters.
    (token_request,) = api.calls("/oauth/token")
    form = parse_qs(token_request["body"].decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "audience": ["https://api.digitalroute.io/"],
        "client_id": ["tally-client"],
        "client_secret": ["s3cret-value"],
    }
    assert node_run.gateway_requests() == 3


@pytest.mark.django_db
def test_meter_types_api_gets_with_the_query_string(api, allow_local, operator, secrets):
    node = with_oauth(fixture_node("provisioning-meters.json", "Meter-types API"), api)
    node["params"]["uri"] = api.url("/usage-metering/v1/meter-types")
    node["params"]["oAuth2Authentication"].update(username="ops", password="pw")
    api.routes["/oauth/token"] = [TOKEN_ANSWER]
    api.routes["/usage-metering/v1/meter-types"] = [(200, {}, {"meterTypes": [{"id": "mt-9"}]})]

    emit = NodeRun(node, operator.id).run([{"trigger": True}])

    (record,) = passed(emit)
    assert record["httpResponse"] == {"meterTypes": [{"id": "mt-9"}]}
    (get,) = api.calls("/usage-metering/v1/meter-types")
    assert get["method"] == "GET" and get["body"] == b""
    assert get["query"] == {"name": ["Pay-Per-Print"]}
    # The export names the password grant.
    form = parse_qs(api.calls("/oauth/token")[0]["body"].decode())
    assert form["grant_type"] == ["password"]
    assert form["username"] == ["ops"] and form["password"] == ["pw"]


@pytest.mark.django_db
def test_templates_fill_the_uri_and_query_and_cannot_change_the_path(api, allow_local, operator):
    node = plain_node(
        api.url("/meters/${payload.meter.id}"),
        qs={"meterKey": "${payload.meterKey}", "fixed": "yes"},
    )
    api.routes["/meters/m%2F1%3Fx"] = [(200, {}, {"ok": True})]

    emit = NodeRun(node, operator.id).run([{"meter": {"id": "m/1?x"}, "meterKey": "k 1"}])

    assert passed(emit)[0]["httpResponse"] == {"ok": True}
    (call,) = api.requests
    assert call["query"] == {"meterKey": ["k 1"], "fixed": ["yes"]}


@pytest.mark.django_db
def test_a_missing_template_value_fails_the_record_without_a_request(api, allow_local, operator):
    node = plain_node(api.url("/meters/${payload.meter.id}"))

    emit = NodeRun(node, operator.id).run([{"meter": {}}])

    assert emit.failed == {
        1: "transforms/http: ${payload.meter.id} in the uri has no value in the record"
    }
    assert api.requests == []


# --- OAuth2 -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_token_is_reused_across_batches_until_it_expires(
    api, allow_local, operator, secrets, monkeypatch
):
    node = with_oauth(fixture_node("purge-meters.json", "List Meter Type API"), api)
    node["params"]["uri"] = api.url("/meter-types")
    api.routes["/oauth/token"] = [
        (200, {}, {"access_token": "first", "expires_in": 60}),
        (200, {}, {"access_token": "second", "expires_in": 60}),
    ]
    api.routes["/meter-types"] = [(200, {}, {"meterTypes": []})]
    run = NodeRun(node, operator.id)

    run.run([{}])
    run.memo.clear()  # a new batch
    run.run([{}])
    assert len(api.calls("/oauth/token")) == 1

    # 60 s minus the renewal margin have passed: a new token is fetched.
    later = time.monotonic() + 31
    monkeypatch.setattr(http.time, "monotonic", lambda: later)
    run.memo.clear()
    run.run([{}])
    assert len(api.calls("/oauth/token")) == 2
    auth = [call["headers"]["authorization"] for call in api.calls("/meter-types")]
    assert auth == ["Bearer first", "Bearer first", "Bearer second"]


@pytest.mark.django_db
def test_a_401_forgets_the_token(api, allow_local, operator, secrets):
    node = with_oauth(fixture_node("purge-meters.json", "List Meter Type API"), api)
    node["params"]["uri"] = api.url("/meter-types")
    api.routes["/oauth/token"] = [
        (200, {}, {"access_token": "revoked", "expires_in": 3600}),
        (200, {}, {"access_token": "fresh", "expires_in": 3600}),
    ]
    api.routes["/meter-types"] = [(401, {}, {"error": "invalid_token"}), (200, {}, {})]

    emit = NodeRun(node, operator.id).run([{}, {}])

    assert "answered 401" in emit.failed[1]
    assert 2 not in emit.failed
    assert [c["headers"]["authorization"] for c in api.calls("/meter-types")] == [
        "Bearer revoked",
        "Bearer fresh",
    ]


@pytest.mark.django_db
def test_missing_oauth_credentials_fail_clearly(api, allow_local, operator):
    node = fixture_node("purge-meters.json", "List Meter Type API")
    node["params"]["uri"] = api.url("/meter-types")
    node["params"]["oAuth2Authentication"]["accessTokenURL"] = api.url("/oauth/token")

    emit = NodeRun(node, operator.id).run([{}])

    assert "set oAuth2Authentication.clientId and clientSecret" in emit.failed[1]
    assert api.requests == []


@pytest.mark.django_db
def test_a_missing_global_parameter_fails_every_record(api, allow_local, operator):
    node = with_oauth(fixture_node("purge-meters.json", "List Meter Type API"), api)

    emit = NodeRun(node, operator.id).run([{}, {}])

    assert emit.failed == {
        1: "transforms/http: the global parameter 'ue/client-id' does not exist",
        2: "transforms/http: the global parameter 'ue/client-id' does not exist",
    }


# --- Errors, retries, timeouts ------------------------------------------------------------


@pytest.mark.django_db
def test_defer_fails_the_record_with_the_status_and_goes_on(api, allow_local, operator):
    api.routes["/m"] = [(500, {}, {"error": "boom"}), (200, {}, {"ok": 1})]

    emit = NodeRun(plain_node(api.url("/m?secret=1")), operator.id).run([{"n": 1}, {"n": 2}])

    assert emit.failed == {
        1: f"transforms/http: GET http://127.0.0.1:{api.port}/m answered 500 "
        'Internal Server Error: {"error": "boom"}'
    }
    assert passed(emit) == [{"n": 2, "httpResponse": {"ok": 1}}]


@pytest.mark.django_db
def test_ignore_passes_the_record_on_with_the_error(api, allow_local, operator):
    api.routes["/m"] = [(404, {}, {"error": "nope"})]

    emit = NodeRun(plain_node(api.url("/m"), errorMode="ignore"), operator.id).run([{"n": 1}])

    assert emit.failed == {}
    (record,) = passed(emit)
    assert record["httpResponse"] == {"error": "nope"}
    assert record["httpError"].endswith('answered 404 Not Found: {"error": "nope"}')


@pytest.mark.django_db
def test_stop_fails_the_rest_of_the_batch_without_calling(api, allow_local, operator):
    api.routes["/m"] = [(200, {}, {}), (503, {}, {}), (200, {}, {})]

    emit = NodeRun(plain_node(api.url("/m"), errorMode="stop"), operator.id).run([{}, {}, {}])

    assert set(emit.failed) == {2, 3}
    assert "stopped at an earlier error" in emit.failed[3]
    assert len(api.calls("/m")) == 2


@pytest.mark.django_db
def test_retries_on_5xx_then_succeeds_and_counts_every_attempt(api, allow_local, operator):
    api.routes["/m"] = [(503, {}, {}), (502, {}, {}), (200, {}, {"ok": True})]
    run = NodeRun(plain_node(api.url("/m"), shouldRetry=True, retries=2), operator.id)

    emit = run.run([{}])

    assert passed(emit)[0]["httpResponse"] == {"ok": True}
    assert len(api.calls("/m")) == 3
    assert run.gateway_requests() == 3


@pytest.mark.django_db
def test_no_retry_without_should_retry_nor_on_4xx(api, allow_local, operator):
    api.routes["/a"] = [(503, {}, {}), (200, {}, {})]
    api.routes["/b"] = [(400, {}, {}), (200, {}, {})]

    NodeRun(plain_node(api.url("/a"), shouldRetry=False, retries=3), operator.id).run([{}])
    NodeRun(plain_node(api.url("/b"), shouldRetry=True, retries=3), operator.id).run([{}])

    assert len(api.calls("/a")) == 1
    assert len(api.calls("/b")) == 1


@pytest.mark.django_db
def test_a_timeout_fails_the_record(api, allow_local, operator):
    allow_local.TALLY["STREAMS"]["HTTP_TIMEOUT_SECONDS"] = 0.3

    def slow(request):
        time.sleep(1)
        return 200, {}, {}

    api.routes["/slow"] = slow

    emit = NodeRun(plain_node(api.url("/slow")), operator.id).run([{}])

    assert emit.failed == {
        1: f"transforms/http: GET http://127.0.0.1:{api.port}/slow timed out after 0.3 s"
    }


@pytest.mark.django_db
def test_a_response_over_the_size_cap_fails_the_record(api, allow_local, operator):
    api.routes["/big"] = [(200, {}, b'"' + b"x" * outbound.MAX_RESPONSE_BYTES + b'"')]

    emit = NodeRun(plain_node(api.url("/big")), operator.id).run([{}])

    assert "the response is larger than 1024 KB" in emit.failed[1]


# --- The guard ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("localhost", "localhost resolves to 127.0.0.1, a loopback address"),
        ("10.1.2.3", "10.1.2.3 is a private address"),
        ("192.168.0.10", "192.168.0.10 is a private address"),
        ("169.254.169.254", "169.254.169.254 is a link-local address"),
        ("[::1]", "::1 is a loopback address"),
        ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1 is a private address (10.0.0.1, carried in IPv6)"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),  # noqa: S104
    ],
)
def test_non_public_destinations_are_refused_by_default(api, operator, host, reason):
    emit = NodeRun(plain_node(f"http://{host}:{api.port}/m"), operator.id).run([{}])

    assert emit.failed[1].startswith(f"transforms/http: {reason};")
    assert emit.failed[1].endswith("with TALLY_HTTP_ALLOWED_HOSTS")
    assert api.requests == []


@pytest.mark.django_db
def test_a_refused_host_fails_even_in_ignore_mode(api, operator):
    emit = NodeRun(plain_node(api.url("/m"), errorMode="ignore"), operator.id).run([{}])

    assert emit.failed == {
        1: "transforms/http: 127.0.0.1 is a loopback address; "
        "allow it with TALLY_HTTP_ALLOWED_HOSTS"
    }


@pytest.mark.django_db
def test_only_the_listed_hosts_are_reachable_when_a_list_is_set(api, allow_local, operator):
    emit = NodeRun(plain_node(api.url("/m", host="localhost")), operator.id).run([{}])

    assert emit.failed == {1: "transforms/http: localhost is not in TALLY_HTTP_ALLOWED_HOSTS"}


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["http://localhost:{port}/in", "http://169.254.169.254/latest"])
def test_a_redirect_to_a_refused_host_is_not_followed(api, allow_local, operator, target):
    api.routes["/out"] = [(302, {"Location": target.format(port=api.port)}, b"")]
    api.routes["/in"] = [(200, {}, {"inside": True})]

    emit = NodeRun(plain_node(api.url("/out")), operator.id).run([{}])

    assert "is not in TALLY_HTTP_ALLOWED_HOSTS" in emit.failed[1]
    assert api.calls("/in") == []


@pytest.mark.django_db
def test_a_redirect_within_allowed_hosts_is_followed(api, allow_local, operator):
    api.routes["/old"] = [(307, {"Location": "/new"}, b"")]
    api.routes["/new"] = [(200, {}, {"moved": True})]
    run = NodeRun(plain_node(api.url("/old")), operator.id)

    emit = run.run([{}])

    assert passed(emit)[0]["httpResponse"] == {"moved": True}
    assert run.gateway_requests() == 2


@pytest.mark.django_db
def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    api, operator, settings, monkeypatch
):
    """Resolved once, connected to what was checked: a second lookup (DNS rebinding) is
    never made, and the server still sees the name."""
    settings.TALLY["STREAMS"]["HTTP_ALLOWED_HOSTS"] = ["meters.example.test"]
    lookups = []
    real = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        lookups.append(host)
        if host == "meters.example.test":
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    api.routes["/m"] = [(200, {}, {"ok": True})]

    emit = NodeRun(plain_node(api.url("/m", host="meters.example.test")), operator.id).run([{}])

    assert passed(emit)[0]["httpResponse"] == {"ok": True}
    assert lookups.count("meters.example.test") == 1
    assert api.calls("/m")[0]["headers"]["host"] == f"meters.example.test:{api.port}"


def test_a_name_resolving_to_any_private_address_is_refused(monkeypatch):
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, **kw: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ],
    )
    with pytest.raises(outbound.OutboundRefused, match=r"resolves to 10\.0\.0\.7, a private"):
        outbound.destination_check("mixed.example.test", 443, allowed_hosts=[])
    # "*" lets everything through, private included.
    assert outbound.destination_check("mixed.example.test", 443, allowed_hosts=["*"]) == (
        "93.184.215.14"
    )


def test_a_public_address_passes_the_default_guard(monkeypatch):
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, **kw: [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1", port, 0, 0))
        ],
    )
    assert outbound.destination_check("api.example.test", 443, allowed_hosts=[]) == "2606:4700::1"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),
        ("2002:7f00:1::", "a loopback address (127.0.0.1, carried in IPv6)"),
        ("8.8.8.8", None),
    ],
)
def test_address_problems(address, problem):
    assert outbound.address_problem(address) == problem


def test_urls_that_are_not_http_are_refused():
    for url, reason in [
        ("file:///etc/passwd", "is not an http or https URL"),
        ("http://user:pw@example.test/", "credentials in the URL are not supported"),
        ("http:///nohost", "names no host"),
    ]:
        with pytest.raises(outbound.OutboundRefused, match=reason):
            outbound.send("GET", url, allowed_hosts=["*"])


# --- Previews and reruns ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_preview_sends_nothing_and_reports_the_request(api, allow_local, operator, secrets):
    node = with_oauth(fixture_node("purge-meters.json", "List Meter API"), api)
    node["params"]["uri"] = api.url("/meters")
    node["params"]["qs"]["key"] = "{{param:ue/client-secret}}"
    run = NodeRun(node, operator.id, side_effects=False)

    emit = run.run([{"meterKey": "k1", "meterTypeId": "mt-1"}])

    assert passed(emit) == [{"meterKey": "k1", "meterTypeId": "mt-1", "httpResponse": None}]
    query = "meterKey=k1&meterTypeId=mt-1&key=%7B%7Bparam%3Aue%2Fclient-secret%7D%7D"
    assert run.ctx.changes == [
        {"node": node["id"], "http": {"method": "GET", "url": api.url(f"/meters?{query}")}}
    ]
    assert api.requests == []
    assert run.gateway_requests() == 0


@pytest.mark.django_db
def test_a_rerun_of_the_batch_never_repeats_a_request(api, allow_local, operator):
    api.routes["/m"] = [(200, {}, {"call": 1}), (500, {}, {}), (200, {}, {"call": 3})]
    run = NodeRun(plain_node(api.url("/m?id=${payload.id}")), operator.id)

    first = run.run([{"id": 1}, {"id": 2}, {"id": 1}])
    assert set(first.failed) == {2}
    # The engine runs the batch again without record 2 (same origins, same memo).
    emit = Emit()
    run.ctx = NodeContext(
        operator_id=operator.id,
        stream_id=run.stream_id,
        version_id=uuid.uuid4(),
        node=run.node,
        now=datetime.datetime.now(datetime.UTC),
        memo=run.memo,
    )
    function = http.HttpCall(run.ctx)
    function.process([Item({"id": 1}, 1), Item({"id": 1}, 3)], emit)
    function.finish(emit, end_of_execution=False)

    assert [item.payload["httpResponse"] for item in emit.outputs[None]] == [
        {"call": 1},
        {"call": 3},
    ]
    assert len(api.calls("/m")) == 3


@pytest.mark.django_db
def test_through_the_engine_a_failed_record_costs_no_repeat_and_every_request_is_counted(
    api, allow_local, operator
):
    """The engine rolls back a pass that failed a record and runs the batch again without
    it: the others' answers come from the memo, and the committed pass counts all three
    requests that went out, the failed one's included."""
    api.routes["/m"] = [(200, {}, {"n": 1}), (500, {}, {}), (200, {}, {"n": 3})]
    node = plain_node(api.url("/m"))
    graph = graph_compile(
        operator_id=operator.id,
        stream_id=uuid.uuid4(),
        version_id=uuid.uuid4(),
        config={"nodes": [node], "edges": []},
    )
    items = [Item({"id": origin}, origin) for origin in (1, 2, 3)]

    result = batch_run(
        [(graph, {node["id"]: items}, None)],
        states={},
        run=RunSettings(now=datetime.datetime.now(datetime.UTC)),
    )

    assert result.passes == 2
    assert set(result.failures) == {2}
    assert "answered 500" in result.failures[2].reason
    assert len(api.calls("/m")) == 3
    assert gateway_requests(operator.id, f"{graph.stream_id}/{node['id']}") == 3
