"""Usage accounting as users cause it: API calls by category, ingestion requests and
events by type, webhook attempts and HTTP-node calls, counted in Redis (or with the
ingestion's own write) and read back after a fold, exactly as many as were made."""

from __future__ import annotations

import logging
import socket
import uuid
from collections import Counter

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver

from metering.models import DeliveryAttempt, Notification
from metering.notifications import (
    notification_enqueue,
    notifications_deliver_due,
    webhook_endpoint_set,
)
from tenants import accounting, services
from tenants.api.authentication import OperatorTokenAuthentication
from tenants.api.token import TokenView
from tenants.models import Operator, UsageCounterDelta
from tenants.selectors import usage_totals
from tenants.services import application_access_create, usage_counters_fold
from tests.conftest import AUDIENCE, issue_token
from tests.factories import CollectorFactory
from tests.streams.runtime.helpers import (
    create_collector,
    import_stream,
    ingest,
    process_all,
    set_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


def counts(operator, kind: str | None = None) -> Counter:
    """The operator's counts after a fold, as {(kind, key, connection): n} (or {(key,
    connection): n} of one kind)."""
    usage_counters_fold()
    found = Counter()
    for _operator, found_kind, key, connection_id, n in usage_totals(operator_ids=[operator.pk]):
        if kind is None:
            found[(found_kind, key, connection_id)] += n
        elif found_kind == kind:
            found[(key, connection_id)] += n
    return found


def api_calls(operator) -> Counter:
    return Counter({key: n for (key, _), n in counts(operator, accounting.API_CALL).items()})


# --- API calls ---------------------------------------------------------------------------


def test_each_category_counts_exactly_the_calls_made(acme, globex, api_client):
    client = api_client(acme.token)
    calls = [
        ("get", "/usage-metering/v1/meter-types", 200),
        ("post", "/usage-metering/v1/meter-types", 400),  # a 4xx is still a call made
        ("get", f"/usage-metering/v1/meters/{uuid.uuid4()}", 404),
        ("get", "/online-collection/v1/collectors", 200),
        ("get", "/stream-management/v1/streams", 200),
        ("get", "/stream-management/v1/functions", 200),
        ("get", "/aggregation/v1/stores", 200),
        ("get", "/global-parameters/v1/parameters", 200),
        ("get", "/global-parameters/v1/parameters/a/b/c", 404),
        ("post", "/metrics", 400),
        ("get", "/billing/v1/accounts", 200),
        ("get", "/billing/v1/price-plans", 200),
    ]
    for method, path, status in calls:
        response = getattr(client, method)(path, {}) if method == "post" else client.get(path)
        assert response.status_code == status, (path, response.content)
    issue_token(client, acme.client_id, acme.client_secret)
    response = client.post(
        "/authentication/v1/oauth/token",
        {
            "client_id": acme.client_id,
            "client_secret": acme.client_secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        },
    )
    assert response.status_code == 200

    assert api_calls(acme.operator) == {
        "usage-metering": 3,
        "online-collection": 1,
        "stream-management": 2,
        "aggregation": 1,
        "global-parameters": 2,
        "metrics": 1,
        "billing": 2,
        "oauth": 3,  # the fixture's token and the two above
    }
    assert api_calls(globex.operator) == {"oauth": 1}  # its fixture token, nothing else


def test_requests_of_no_operator_client_are_not_counted(acme, api_client, platform_key):
    anonymous = api_client()
    assert anonymous.get("/usage-metering/v1/meter-types").status_code == 401
    assert api_client("not-a-token").get("/usage-metering/v1/meter-types").status_code == 401
    assert api_client(platform_key).get("/usage-metering/v1/meter-types").status_code == 401
    assert api_client(platform_key).get("/platform-api/settings").status_code == 200
    # A route that does not exist reaches no endpoint, so no operator was authenticated.
    assert api_client(acme.token).get("/no/such/route").status_code == 404
    wrong_secret = anonymous.post(
        "/oauth/token",
        {
            "client_id": acme.client_id,
            "client_secret": "wrong",
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        },
    )
    assert wrong_secret.status_code == 401

    assert counts(acme.operator) == {(accounting.API_CALL, "oauth", ""): 1}  # the fixture's


def test_a_token_request_of_an_authenticated_client_counts_even_when_refused(acme, api_client):
    """The client proved who it is; asking for a scope it may not have is still a call."""
    Operator.objects.filter(pk=acme.operator.pk).update(last_active_at=None)
    # Open the once-a-minute gates of `operator_mark_active` (not by clearing the cache:
    # the counts not folded yet live in the same Redis).
    cache.delete(f"operator-active:{acme.operator.pk}")
    services._last_marked.clear()
    refused = api_client().post(
        "/oauth/token",
        {
            "client_id": acme.client_id,
            "client_secret": acme.client_secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
            "scope": "no-such:scope",
        },
    )
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"] == "invalid_scope"
    assert api_calls(acme.operator) == {"oauth": 2}  # the fixture's token and this one

    # Issuing a token is activity; a refused request is not.
    acme.operator.refresh_from_db()
    assert acme.operator.last_active_at is None
    issue_token(api_client(), acme.client_id, acme.client_secret)
    acme.operator.refresh_from_db()
    assert acme.operator.last_active_at is not None


def test_refused_and_rate_limited_calls_of_an_operator_client_count(acme, api_client, settings):
    issued = application_access_create(
        operator=acme.operator, name="readonly", scopes=["metrics:read"]
    )
    narrow = api_client(
        issue_token(api_client(), issued.client_id, issued.client_secret)["access_token"]
    )
    assert narrow.get("/usage-metering/v1/meter-types").status_code == 403
    settings.TALLY["RATE_LIMITS"]["meter-types"] = {"rate": 0.001, "burst": 1}
    client = api_client(acme.token)
    assert [client.get("/usage-metering/v1/meter-types").status_code for _ in range(3)] == [
        200,
        429,
        429,
    ]

    assert api_calls(acme.operator) == {"usage-metering": 4, "oauth": 2}


def test_counting_adds_no_database_query(acme, api_client, settings):
    settings.TALLY["TOKEN_CACHE_SECONDS"] = 60  # the token, too, is resolved once

    def queries_of_a_get() -> int:
        client = api_client(acme.token)  # a new client loads settings.MIDDLEWARE afresh
        assert client.get("/usage-metering/v1/meter-types").status_code == 200  # warm
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/usage-metering/v1/meter-types").status_code == 200
        return len(captured)

    counting = queries_of_a_get()
    settings.MIDDLEWARE = [
        name
        for name in settings.MIDDLEWARE
        if name != "tenants.middleware.ApiCallAccountingMiddleware"
    ]
    not_counting = queries_of_a_get()

    assert counting == not_counting
    assert api_calls(acme.operator)["usage-metering"] == 2  # the two counted GETs


def _patterns(resolver: URLResolver, prefix: str = ""):
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def test_every_operator_endpoint_has_a_category():
    uncategorised = []
    for route, callback in _patterns(get_resolver()):
        view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        authentication = getattr(view, "authentication_classes", ())
        operator_endpoint = view is TokenView or OperatorTokenAuthentication in authentication
        if operator_endpoint and accounting.api_category("/" + route) == accounting.OTHER_CATEGORY:
            uncategorised.append(route)
    assert uncategorised == []
    assert accounting.api_category("/v1/metrics/abc/value") == "metrics"
    assert accounting.api_category("/authentication/v1/oauth/token") == "oauth"
    assert accounting.api_category("/global-parameters/v1/parameters/a/b") == "global-parameters"


# --- Gateway requests and events ---------------------------------------------------------


def test_ingestion_counts_each_request_and_the_events_stored_by_type(acme, api_client):
    client = api_client(acme.token)
    collector = CollectorFactory(operator=acme.operator, active=True)
    url = f"/online-collection/v1/collectors/{collector.pk}/data"
    sent = [
        {"data": {"id": "one", "type": "call"}},  # the one-record statement
        {"data": [{"id": "a", "type": "call"}, {"id": "b", "type": "sms"}, {"id": "c"}]},
        {"data": [{"id": "a", "type": "call"}, {"id": "d", "type": "sms"}]},  # a: duplicate
        {"data": [{"id": f"big-{i}", "type": "data" if i % 2 else "call"} for i in range(150)]},
        {"data": [{"id": "e", "type": "x" * 150}, {"id": "e", "type": "x" * 150}]},
    ]
    for body in sent:
        assert client.post(url, body).status_code == 202
    assert client.post(url, "{broken", content_type="application/json").status_code == 400
    replayed = {"HTTP_IDEMPOTENCY_KEY": "k-1"}
    assert client.post(url, {"data": {"id": "f", "type": "sms"}}, **replayed).status_code == 202
    assert client.post(url, {"data": {"id": "f", "type": "sms"}}, **replayed).status_code == 202

    found = counts(acme.operator)
    connection_id = str(collector.pk)
    assert found[(accounting.GATEWAY_REQUEST, "online-collection", connection_id)] == 8
    assert found[(accounting.API_CALL, "online-collection", "")] == 8
    assert counts(acme.operator, accounting.EVENT) == {
        ("call", connection_id): 1 + 1 + 75,
        ("sms", connection_id): 1 + 1 + 1,
        ("", connection_id): 1,  # a record without a type
        ("data", connection_id): 75,
        ("x" * 100, connection_id): 1,  # cut to the counter's key length
    }


def test_each_webhook_attempt_is_a_gateway_request_of_its_endpoint(acme, receiver, settings):
    settings.TALLY["NOTIFICATION_RETRY_BASE_SECONDS"] = 0
    endpoint = webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    receiver.statuses = [500, 500]
    for n in range(3):
        notification_enqueue(
            operator_id=acme.operator.pk, kind=Notification.Kind.THRESHOLD_CROSSED, payload={"n": n}
        )
    while Notification.objects.filter(status=Notification.Status.PENDING).exists():
        notifications_deliver_due()

    attempts = DeliveryAttempt.objects.count()
    assert attempts == 5  # two failed, then three delivered
    assert counts(acme.operator, accounting.GATEWAY_REQUEST) == {
        ("webhook", str(endpoint.pk)): attempts
    }


def test_an_attempt_that_reaches_no_server_counts_too(acme):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = webhook_endpoint_set(operator=acme.operator, url=f"http://127.0.0.1:{port}/hook")
    notification_enqueue(
        operator_id=acme.operator.pk, kind=Notification.Kind.THRESHOLD_CROSSED, payload={}
    )
    notifications_deliver_due()

    assert DeliveryAttempt.objects.get().succeeded is False
    assert counts(acme.operator, accounting.GATEWAY_REQUEST) == {("webhook", str(endpoint.pk)): 1}


def http_stream(collector_id: str, url: str) -> dict:
    return {
        "name": "Forward",
        "nodes": [
            {
                "id": "source",
                "name": "Collector",
                "type": "readers/online_collection",
                "params": {"collectorId": collector_id},
            },
            {
                "id": "call",
                "name": "Billing API",
                "type": "transforms/http",
                "params": {"uri": url, "method": "POST", "body": "${payload}"},
            },
            {"id": "out", "name": "Out", "type": "writers/log", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "call"},
            {"id": "e2", "from": "call", "to": "out"},
        ],
    }


def test_each_http_call_of_a_stream_is_a_gateway_request(acme, api_client, receiver, settings):
    settings.TALLY["STREAMS"]["HTTP_ALLOWED_HOSTS"] = ["127.0.0.1"]
    client = api_client(acme.token)
    collector = create_collector(client)
    stream = import_stream(client, http_stream(collector["id"], receiver.url))
    set_stream(client, stream["id"], enabled=True)
    # The second call fails its record; the batch is run again without it, and the
    # others' answers are reused: three requests in all, each counted once.
    receiver.statuses = [200, 500, 200]
    ingest(client, collector["id"], [{"id": str(n), "type": "t", "n": n} for n in range(3)])

    process_all(collector["id"])

    assert len(receiver.requests) == 3
    assert counts(acme.operator, accounting.GATEWAY_REQUEST)[("http", f"{stream['id']}/call")] == 3


# --- Redis unreachable -------------------------------------------------------------------


@pytest.fixture
def redis_down(settings):
    """Every Redis client of the app pointed at a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    settings.REDIS_URL = url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": url}}
    yield


def test_with_redis_down_every_request_succeeds_and_only_the_counts_are_lost(
    acme, api_client, redis_down, caplog, monkeypatch
):
    # As if this process had not warned yet (the warning is once a minute per process).
    monkeypatch.setattr(accounting.lost_counts, "_warned_at", -accounting.lost_counts.WARN_EVERY)
    client = api_client(acme.token)
    collector = CollectorFactory(operator=acme.operator, active=True)
    url = f"/online-collection/v1/collectors/{collector.pk}/data"
    lost_before = accounting.lost_counts.count

    with caplog.at_level(logging.WARNING):
        assert client.get("/usage-metering/v1/meter-types").status_code == 200
        assert issue_token(client, acme.client_id, acme.client_secret)["access_token"]
        assert client.post(url, {"data": [{"id": "a", "type": "call"}]}).status_code == 202
        assert client.post(url, "{broken", content_type="application/json").status_code == 400
        assert usage_counters_fold() == 2  # the ingestion's own deltas still fold

    # Lost: four API calls and the refused request's gateway count, warned about once.
    assert accounting.lost_counts.count - lost_before == 5
    warnings = [r for r in caplog.records if "usage counts are lost" in r.getMessage()]
    assert len(warnings) == 1
    assert not UsageCounterDelta.objects.exists()
    assert counts(acme.operator) == {
        (accounting.GATEWAY_REQUEST, "online-collection", str(collector.pk)): 1,
        (accounting.EVENT, "call", str(collector.pk)): 1,
    }
