"""The platform API's metrics: summary, operators and connectors, through HTTP.

Figures are reconciled with what each test itself does, as operators do it (API calls,
ingestion requests, collectors, streams), measured from a baseline taken after the
test's setup so that setting a scene never counts."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from metering.notifications import (
    notification_deliver,
    notification_enqueue,
    webhook_endpoint_set,
)
from tenants.services import operator_set_status
from tests.conftest import assert_error_body, make_tenant
from tests.reporting.platform_helpers import (
    CONNECTORS,
    OPERATORS,
    PLATFORM_PATHS,
    SUMMARY,
    connect,
    fold,
    http_stream,
)
from tests.streams.runtime.helpers import (
    COLLECTORS,
    STREAMS,
    import_stream,
    ingest,
    process_all,
    set_stream,
    solution_id,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


def by_id(items: list[dict]) -> dict[str, dict]:
    return {item["id"]: item for item in items}


# -- Credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", PLATFORM_PATHS)
def test_operator_tokens_get_401_on_every_platform_endpoint(api_client, acme, path):
    body = assert_error_body(api_client(acme.token).get(path), 401)
    assert "platform" in body["message"].lower()


@pytest.mark.parametrize("path", PLATFORM_PATHS)
def test_no_credentials_is_401_with_a_challenge(db, path):
    response = Client().get(path)
    assert_error_body(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/metrics", {"startTime": "2026-03-01T00:00:00Z"}),
        ("get", COLLECTORS, None),
        ("get", "/usage-metering/v1/meter-types", None),
    ],
)
def test_platform_keys_get_401_on_operator_endpoints(platform, method, path, body):
    response = getattr(platform, method)(path, body) if body else getattr(platform, method)(path)
    error = assert_error_body(response, 401)
    assert "Platform API keys" in error["message"]


def operator_routes() -> list[str]:
    """A path of every route an operator's token opens, parameters filled in."""
    from django.urls import URLPattern, URLResolver, get_resolver

    from tenants.api.authentication import OperatorTokenAuthentication

    def walk(resolver, prefix=""):
        for pattern in resolver.url_patterns:
            route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
            if isinstance(pattern, URLResolver):
                yield from walk(pattern, route)
            elif isinstance(pattern, URLPattern):
                view = getattr(pattern.callback, "cls", None)
                if OperatorTokenAuthentication in getattr(view, "authentication_classes", ()):
                    yield "/" + route

    filled = re.compile(r"<[^>]+>|\(\?P<[^>]+>[^)]*\)")
    return sorted({filled.sub(str(uuid.UUID(int=1)), route) for route in walk(get_resolver())})


def test_platform_keys_get_401_on_every_operator_endpoint(platform):
    routes = operator_routes()
    assert COLLECTORS in routes and "/metrics" in routes and len(routes) > 20
    for path in routes:
        for method in ("get", "post"):
            error = assert_error_body(getattr(platform, method)(path), 401)
            assert "Platform API keys" in error["message"], (method, path)


@pytest.mark.parametrize("path", PLATFORM_PATHS)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_only_get_is_allowed(platform, path, method):
    response = getattr(platform, method)(path, {})
    assert_error_body(response, 405)
    assert response["Allow"].startswith("GET")


def test_the_platform_endpoints_share_the_platform_rate_limit(platform, settings):
    settings.TALLY["RATE_LIMITS"]["platform"] = {"rate": 0.001, "burst": 4}

    answers = [platform.get(path) for path in PLATFORM_PATHS]
    refused = platform.get(SUMMARY)

    assert [response.status_code for response in answers] == [200] * 4
    assert [response["RateLimit-Remaining"] for response in answers] == ["3", "2", "1", "0"]
    assert_error_body(refused, 429)
    assert refused["RateLimit-Limit"] == "4"


# -- Summary --------------------------------------------------------------------------------


def test_summary_counts_a_suspended_operator_as_suspended(platform, acme, globex):
    make_tenant("Initech")
    operator_set_status(operator=globex.operator, status="suspended")

    body = platform.get(SUMMARY).json()

    assert body["operators"] == {"active": 2, "suspended": 1, "total": 3}
    assert set(body) == {
        "operators",
        "apiCalls",
        "gatewayRequests",
        "eventsIngested",
        "activeConnections",
    }


def test_a_suspended_operator_is_listed_as_suspended(platform, acme, globex):
    operator_set_status(operator=acme.operator, status="suspended")

    rows = by_id(platform.get(OPERATORS).json()["operators"])

    assert rows[str(acme.operator.pk)]["status"] == "suspended"
    assert rows[str(globex.operator.pk)]["status"] == "active"


def test_summary_equals_what_operators_did(platform, api_client, acme, globex):
    acme_client, globex_client = api_client(acme.token), api_client(globex.token)
    made = connect(acme_client, collectors=2, deleted=1, http_streams=[True, False])
    globex_collector = connect(globex_client, collectors=1)["collectors"][0]
    webhook_endpoint_set(operator=globex.operator, url="https://hooks.example.com/t")
    fold()
    before = platform.get(SUMMARY).json()

    # 3 ingestion requests (5 records) and 2 listings by acme, 1 ingestion by globex.
    collector = made["collectors"][0]["id"]
    ingest(acme_client, collector, [{"id": "a1", "type": "print"}, {"id": "a2", "type": "scan"}])
    ingest(acme_client, collector, [{"id": "a3", "type": "print"}])
    ingest(acme_client, collector, [{"id": "a4", "type": "print"}, {"id": "a5", "type": "x"}])
    acme_client.get(COLLECTORS)
    acme_client.get(COLLECTORS)
    ingest(globex_client, globex_collector["id"], [{"id": "g1", "type": "print"}])
    fold()

    after = platform.get(SUMMARY).json()
    assert after["apiCalls"] - before["apiCalls"] == 6  # every request above is one
    assert after["gatewayRequests"] - before["gatewayRequests"] == 4
    assert after["eventsIngested"] - before["eventsIngested"] == 6
    # acme: 2 live collectors, the enabled stream's node; globex: its collector, webhook.
    assert after["activeConnections"] == 5


# -- Operators ------------------------------------------------------------------------------


def test_operators_lists_each_operators_own_figures(platform, api_client, acme, globex):
    acme_client = api_client(acme.token)
    made = connect(acme_client, collectors=1, deleted=1, http_streams=[True])
    webhook_endpoint_set(operator=acme.operator, url="https://hooks.example.com/a", enabled=False)
    fold()
    before = by_id(platform.get(OPERATORS).json()["operators"])

    ingest(acme_client, made["collectors"][0]["id"], [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    acme_client.get(COLLECTORS)
    fold()

    body = platform.get(OPERATORS).json()
    assert body["total"] == 2
    after = by_id(body["operators"])
    acme_row, globex_row = after[str(acme.operator.pk)], after[str(globex.operator.pk)]
    assert set(acme_row) == {
        "id",
        "name",
        "status",
        "activeConnections",
        "apiCalls",
        "eventsIngested",
        "lastActiveAt",
    }
    assert (acme_row["name"], acme_row["status"]) == ("Acme", "active")
    assert acme_row["activeConnections"] == 2  # the live collector and the enabled node
    assert acme_row["apiCalls"] - before[str(acme.operator.pk)]["apiCalls"] == 2
    assert acme_row["eventsIngested"] - before[str(acme.operator.pk)]["eventsIngested"] == 3
    assert acme_row["lastActiveAt"].endswith("Z")
    # Nothing of acme's lands on globex.
    assert globex_row == before[str(globex.operator.pk)]
    assert globex_row["activeConnections"] == 0


def _names(platform, **params) -> list[str]:
    response = platform.get(OPERATORS, params)
    assert response.status_code == 200, response.content
    return [row["name"] for row in response.json()["operators"]]


@pytest.fixture
def three(db, api_client, catalogue):
    """Operators b (2 collectors, 1 record), c (1 collector, 3 records) and a (nothing)
    created in that order; c was active last, a never."""
    tenants = {name: make_tenant(name) for name in ("b", "c", "a")}
    for name, collectors, records in (("b", 2, 1), ("c", 1, 3)):
        client = api_client(tenants[name].token)
        made = connect(client, collectors=collectors)
        ingest(client, made["collectors"][0]["id"], [{"id": str(n)} for n in range(records)])
    from tenants.models import Operator

    Operator.objects.filter(name="a").update(last_active_at=None)
    fold()
    return tenants


@pytest.mark.parametrize(
    "sort_by, ascending",
    [
        ("name", ["a", "b", "c"]),
        ("createdAt", ["b", "c", "a"]),
        ("lastActiveAt", ["a", "b", "c"]),
        ("activeConnections", ["a", "c", "b"]),
        ("eventsIngested", ["a", "b", "c"]),
    ],
)
def test_operators_sort_both_ways(platform, three, sort_by, ascending):
    assert _names(platform, sortBy=sort_by) == ascending
    assert _names(platform, sortBy=sort_by, sortOrder="ASC") == ascending
    assert _names(platform, sortBy=sort_by, sortOrder="desc") == ascending[::-1]


def test_operators_sort_by_api_calls_and_status(platform, api_client, three):
    for _ in range(3):
        api_client(three["a"].token).get(COLLECTORS)
    fold()
    operator_set_status(operator=three["b"].operator, status="suspended")

    calls = {row["name"]: row["apiCalls"] for row in platform.get(OPERATORS).json()["operators"]}
    expected = sorted(calls, key=lambda name: (calls[name], str(three[name].operator.pk)))
    assert _names(platform, sortBy="apiCalls") == expected
    # Active before suspended; equal statuses by id.
    active = sorted(["a", "c"], key=lambda name: str(three[name].operator.pk))
    assert _names(platform, sortBy="status") == [*active, "b"]


def test_ties_are_ordered_by_id_in_the_sort_direction(platform, three):
    ids = sorted(str(tenant.operator.pk) for tenant in three.values())
    for order, expected in (("ASC", ids), ("DESC", ids[::-1])):
        # Every operator is active: the order is the ids'.
        rows = platform.get(OPERATORS, {"sortBy": "status", "sortOrder": order}).json()
        assert [row["id"] for row in rows["operators"]] == expected


def test_operators_page_with_limit_and_skip(platform, three):
    assert _names(platform, limit=2) == ["a", "b"]
    assert _names(platform, limit=2, skip=2) == ["c"]
    assert _names(platform, limit=2, skip=3) == []
    assert _names(platform, limit=0) == []
    assert _names(platform, limit="", skip="") == ["a", "b", "c"]
    assert _names(platform, sortBy="eventsIngested", sortOrder="DESC", limit=1, skip=1) == ["b"]
    assert platform.get(OPERATORS, {"limit": 1}).json()["total"] == 3
    assert platform.get(OPERATORS, {"limit": 100}).status_code == 200
    # Past every operator, even past what PostgreSQL's OFFSET can take: an empty page.
    for skip in (str(2**63 - 1), "9" * 30):
        for sort_by in ("name", "apiCalls"):
            assert _names(platform, skip=skip, sortBy=sort_by) == []


def test_the_default_page_is_twenty(platform, db):
    for index in range(23):
        make_tenant(f"Operator {index:02d}")
    body = platform.get(OPERATORS).json()
    assert len(body["operators"]) == 20
    assert body["total"] == 23


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": 101}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"skip": -1}, "skip"),
        ({"skip": "1.5"}, "skip"),
        ({"sortBy": "password"}, "sortBy"),
        ({"sortBy": "api_calls"}, "sortBy"),
        ({"sortOrder": "UP"}, "sortOrder"),
    ],
)
def test_bad_list_parameters_are_400_naming_them(platform, params, field):
    body = assert_error_body(platform.get(OPERATORS, params), 400)
    assert [item["field"] for item in body["details"]] == [field]


@pytest.mark.parametrize("sort_by", ["name", "apiCalls"])
def test_the_operators_list_takes_the_same_queries_for_more_operators(
    platform, api_client, acme, sort_by
):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = platform.get(OPERATORS, {"sortBy": sort_by})
        assert response.status_code == 200
        return len(captured.captured_queries)

    connect(api_client(acme.token), collectors=1, http_streams=[True])
    queries()  # the key's first use is recorded once
    few = queries()
    for index in range(5):
        tenant = make_tenant(f"More {index}")
        connect(api_client(tenant.token), collectors=2, http_streams=[index % 2 == 0])
    assert queries() == few


# -- Connectors -----------------------------------------------------------------------------


def test_connectors_lists_the_catalogue(platform):
    body = platform.get(CONNECTORS).json()

    assert set(body) == {"connectors"}
    assert [(c["id"], c["direction"]) for c in body["connectors"]] == [
        ("online-collection", "inbound"),
        ("http", "outbound"),
        ("webhook", "outbound"),
    ]
    for item in body["connectors"]:
        assert set(item) == {
            "id",
            "name",
            "direction",
            "operatorsUsing",
            "connections",
            "gatewayCalls",
        }
        assert item["connections"] == {"active": 0, "inactive": 0, "total": 0}
        assert (item["operatorsUsing"], item["gatewayCalls"]) == (0, 0)


def test_connections_are_derived_per_operator_and_connector(platform, api_client, acme, globex):
    acme_client, globex_client = api_client(acme.token), api_client(globex.token)
    made = connect(acme_client, collectors=2, deleted=1, http_streams=[True, False])
    connect(globex_client, collectors=1, deleted=2)
    webhook_endpoint_set(operator=acme.operator, url="https://hooks.example.com/a")
    webhook_endpoint_set(operator=globex.operator, url="https://hooks.example.com/g", enabled=False)

    connectors = by_id(platform.get(CONNECTORS).json()["connectors"])
    assert connectors["online-collection"]["connections"] == {
        "active": 3,
        "inactive": 3,
        "total": 6,
    }
    assert connectors["online-collection"]["operatorsUsing"] == 2
    assert connectors["http"]["connections"] == {"active": 1, "inactive": 1, "total": 2}
    assert connectors["http"]["operatorsUsing"] == 1
    assert connectors["webhook"]["connections"] == {"active": 1, "inactive": 1, "total": 2}
    assert connectors["webhook"]["operatorsUsing"] == 1

    # Disabling the stream makes its node inactive; acme no longer uses http.
    set_stream(acme_client, made["streams"][0]["id"], enabled=False)
    connectors = by_id(platform.get(CONNECTORS).json()["connectors"])
    assert connectors["http"]["connections"] == {"active": 0, "inactive": 2, "total": 2}
    assert connectors["http"]["operatorsUsing"] == 0
    operators = by_id(platform.get(OPERATORS).json()["operators"])
    assert operators[str(acme.operator.pk)]["activeConnections"] == 3  # 2 collectors, webhook
    assert operators[str(globex.operator.pk)]["activeConnections"] == 1


def test_each_http_node_of_the_current_version_is_a_connection(platform, api_client, acme):
    client = api_client(acme.token)
    collector = connect(client, collectors=1)["collectors"][0]["id"]
    config = http_stream(collector, "http://127.0.0.1:9/hook")
    stream = import_stream(client, config)
    set_stream(client, stream["id"], enabled=True)

    def http_connections() -> dict:
        return by_id(platform.get(CONNECTORS).json()["connectors"])["http"]["connections"]

    assert http_connections() == {"active": 1, "inactive": 0, "total": 1}

    # A new version with a second node: two connections.
    second = {**config["nodes"][1], "id": "forward-2", "name": "Forward again"}
    config["nodes"].insert(2, second)
    config["edges"] = [
        {"id": "e1", "from": "source", "to": "forward"},
        {"id": "e2", "from": "forward", "to": "forward-2"},
        {"id": "e3", "from": "forward-2", "to": "sink"},
    ]
    import_stream(client, config)
    assert http_connections() == {"active": 2, "inactive": 0, "total": 2}

    # A version without them: none (the tagged versions' nodes do not count).
    without = {
        "name": config["name"],
        "nodes": [config["nodes"][0], config["nodes"][-1]],
        "edges": [{"id": "e1", "from": "source", "to": "sink"}],
    }
    response = client.post(
        f"{STREAMS}/import",
        {
            "solutionId": solution_id(client),
            "streamConfig": without,
            "allowNodeDeletion": True,
        },
    )
    assert response.status_code == 200, response.content
    assert http_connections() == {"active": 0, "inactive": 0, "total": 0}


def test_gateway_calls_count_ingestion_requests_per_connector(platform, api_client, acme, globex):
    acme_client, globex_client = api_client(acme.token), api_client(globex.token)
    acme_collector = connect(acme_client, collectors=1)["collectors"][0]["id"]
    globex_collector = connect(globex_client, collectors=1)["collectors"][0]["id"]

    for n in range(3):
        ingest(acme_client, acme_collector, [{"id": f"a{n}"}])
    ingest(globex_client, globex_collector, [{"id": "g"}, {"id": "h"}])
    # A request that reached the collector but stored nothing is a request through it.
    refused = acme_client.post(f"{COLLECTORS}/{acme_collector}/data", {"nope": 1})
    assert refused.status_code == 400
    fold()

    connectors = by_id(platform.get(CONNECTORS).json()["connectors"])
    assert connectors["online-collection"]["gatewayCalls"] == 5
    assert connectors["http"]["gatewayCalls"] == 0
    summary = platform.get(SUMMARY).json()
    assert summary["gatewayRequests"] == sum(c["gatewayCalls"] for c in connectors.values())


def test_gateway_calls_count_webhook_attempts_and_http_node_calls(
    platform, api_client, acme, receiver, settings
):
    settings.TALLY["STREAMS"]["HTTP_ALLOWED_HOSTS"] = ["127.0.0.1"]
    settings.TALLY["NOTIFICATION_RETRY_BASE_SECONDS"] = 0
    client = api_client(acme.token)
    collector = connect(client, collectors=1)["collectors"][0]["id"]
    stream = import_stream(client, http_stream(collector, receiver.url))
    set_stream(client, stream["id"], enabled=True)
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    fold()
    before = by_id(platform.get(CONNECTORS).json()["connectors"])

    # One ingestion of 3 records; the worker runs the stream: 3 calls from its node.
    ingest(client, collector, [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    process_all(collector)
    assert len(receiver.requests) == 3
    # A notification answered 500, then delivered: two attempts.
    receiver.statuses = [500]
    notification = notification_enqueue(
        operator_id=acme.operator.pk, kind="meter.threshold_crossed", payload={"n": 1}
    )
    assert notification_deliver(notification.pk) == "pending"
    assert notification_deliver(notification.pk) == "delivered"
    fold()

    after = by_id(platform.get(CONNECTORS).json()["connectors"])
    calls = {slug: after[slug]["gatewayCalls"] - before[slug]["gatewayCalls"] for slug in after}
    assert calls == {"online-collection": 1, "http": 3, "webhook": 2}
