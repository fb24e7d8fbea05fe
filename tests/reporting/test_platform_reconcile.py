"""The platform API's figures reconciled with everything the test does, through HTTP and
the workers: API calls of each category, ingestion requests, webhook delivery attempts,
`transforms/http` calls and events by type; across folds, through a Redis outage, after a
Redis restart between requests and after Redis comes back from an older snapshot.

Every figure of the four endpoints is read before and after, and each change must be
exactly what the test's own ledger says, nothing more (the platform's own requests,
anonymous ones and refused credentials count for nothing)."""

from __future__ import annotations

import datetime
import threading
from collections import Counter

import pytest
from django.utils import timezone

from metering.notifications import notification_deliver, notification_enqueue, webhook_endpoint_set
from tenants.accounting import API_CATEGORIES
from tests.conftest import AUDIENCE, Tenant, assert_error_body, make_tenant
from tests.metering.webhooks import Receiver
from tests.redis_server import serve
from tests.reporting.platform_helpers import (
    CONNECTORS,
    OPERATORS,
    REPORT,
    SUMMARY,
    connect,
    fold,
    http_stream,
)
from tests.streams.runtime.helpers import COLLECTORS, import_stream, process_all, set_stream

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("generous_limits", "catalogue"),
]

CONNECTOR_SLUGS = ("online-collection", "http", "webhook")


@pytest.fixture
def own_redis(settings, tmp_path):
    yield from serve(settings, tmp_path)


@pytest.fixture
def servers():
    """Two receivers: one a stream's transforms/http node calls, one for webhooks."""
    started = {"api": Receiver(), "hooks": Receiver()}
    threads = [
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        for server in started.values()
    ]
    for thread in threads:
        thread.start()
    yield started
    for server in started.values():
        server.shutdown()
        server.server_close()


class Ledger:
    """What the test did, counted as the platform must count it."""

    def __init__(self) -> None:
        self.api_calls: Counter = Counter()  # (operator name, category)
        self.gateway: Counter = Counter()  # (operator name, connector)
        self.events: Counter = Counter()  # (operator name, record type)

    def figures(self) -> Counter:
        """The change every platform figure must show, keyed as `platform_figures`."""
        expected: Counter = Counter()
        for (name, category), n in self.api_calls.items():
            expected[("summary", "apiCalls")] += n
            expected[("operators", name, "apiCalls")] += n
            for line in (name, "totals"):
                expected[("report", line, "apiCalls", category)] += n
        for (name, slug), n in self.gateway.items():
            expected[("summary", "gatewayRequests")] += n
            expected[("connectors", slug)] += n
            for line in (name, "totals"):
                expected[("report", line, "gateway", slug)] += n
        for (name, record_type), n in self.events.items():
            expected[("summary", "eventsIngested")] += n
            expected[("operators", name, "eventsIngested")] += n
            for line in (name, "totals"):
                expected[("report", line, "events", record_type)] += n
        return +expected


def platform_figures(platform, start: str, end: str) -> Counter:
    """Every count the platform API answers, read through HTTP with a platform key."""
    found: Counter = Counter()
    summary = platform.get(SUMMARY).json()
    for name in ("apiCalls", "gatewayRequests", "eventsIngested"):
        found[("summary", name)] = summary[name]
    for row in platform.get(OPERATORS, {"limit": 100}).json()["operators"]:
        found[("operators", row["name"], "apiCalls")] = row["apiCalls"]
        found[("operators", row["name"], "eventsIngested")] = row["eventsIngested"]
    for row in platform.get(CONNECTORS).json()["connectors"]:
        found[("connectors", row["id"])] = row["gatewayCalls"]
    report = platform.get(REPORT, {"start": start, "end": end}).json()
    for line in [*report["operators"], {**report["totals"], "name": "totals"}]:
        assert set(line["apiCallsByCategory"]) == set(API_CATEGORIES)
        assert set(line["gatewayRequestsByConnector"]) == set(CONNECTOR_SLUGS)
        for category, n in line["apiCallsByCategory"].items():
            found[("report", line["name"], "apiCalls", category)] = n
        for slug, n in line["gatewayRequestsByConnector"].items():
            found[("report", line["name"], "gateway", slug)] = n
        for record_type, n in line["eventsByType"].items():
            found[("report", line["name"], "events", record_type)] = n
    return found


def assert_totals_are_the_sums_of_their_parts(platform) -> None:
    """The summary against the per-operator and per-connector lists."""
    summary = platform.get(SUMMARY).json()
    operators = platform.get(OPERATORS, {"limit": 100}).json()
    connectors = platform.get(CONNECTORS).json()["connectors"]
    rows = operators["operators"]
    assert summary["operators"]["total"] == operators["total"] == len(rows)
    assert summary["operators"]["active"] == sum(row["status"] == "active" for row in rows)
    assert summary["apiCalls"] == sum(row["apiCalls"] for row in rows)
    assert summary["eventsIngested"] == sum(row["eventsIngested"] for row in rows)
    assert summary["gatewayRequests"] == sum(row["gatewayCalls"] for row in connectors)
    active = summary["activeConnections"]
    assert active == sum(row["activeConnections"] for row in rows)
    assert active == sum(row["connections"]["active"] for row in connectors)
    for row in connectors:
        connections = row["connections"]
        assert connections["total"] == connections["active"] + connections["inactive"]


def changes(before: Counter, after: Counter) -> Counter:
    return +Counter({key: after[key] - before[key] for key in after.keys() | before.keys()})


class OperatorClient:
    """One operator's client, doing things through the API and recording them."""

    def __init__(self, tenant: Tenant, api_client, ledger: Ledger) -> None:
        self.tenant = tenant
        self.name = tenant.operator.name
        self.client = api_client(tenant.token)
        self.ledger = ledger
        # False while Redis is down: counts that live in Redis are then lost, those
        # written with the records (stored ingestions, their events) are not.
        self.redis_up = True
        self.records = 0

    def call(self, method: str, path: str, category: str, body=None, status: int = 200):
        if method == "get":
            response = self.client.get(path)
        else:
            response = getattr(self.client, method)(path, body)
        assert response.status_code == status, (path, response.content)
        if self.redis_up:
            self.ledger.api_calls[(self.name, category)] += 1
        return response

    def token(self) -> None:
        body = {
            "client_id": self.tenant.client_id,
            "client_secret": self.tenant.client_secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        }
        self.call("post", "/oauth/token", "oauth", body)

    def ingest(self, collector_id: str, records: list[dict], *, stored: dict[str, int]) -> None:
        """Send a batch; `stored` says how many records of each type it stores."""
        path = f"{COLLECTORS}/{collector_id}/data"
        self.call("post", path, "online-collection", {"data": records}, status=202)
        # Stored in the ingestion's own statement: counted even while Redis is down.
        self.ledger.gateway[(self.name, "online-collection")] += 1
        for record_type, n in stored.items():
            self.ledger.events[(self.name, record_type)] += n
        self.records += sum(stored.values())

    def ingest_refused(self, collector_id: str) -> None:
        path = f"{COLLECTORS}/{collector_id}/data"
        self.call("post", path, "online-collection", {"nothing": 1}, status=400)
        if self.redis_up:  # a request that stored nothing is counted in Redis
            self.ledger.gateway[(self.name, "online-collection")] += 1

    def every_category(self) -> None:
        metrics = {
            "startTime": "2026-03-01T00:00:00Z",
            "endTime": "2026-03-02T00:00:00Z",
            "metricQueries": [{"id": "m1", "name": "EVENTS"}],
        }
        self.call("get", "/usage-metering/v1/meter-types", "usage-metering")
        # A refused request of an authenticated client is still a call it made.
        self.call("post", "/usage-metering/v1/meter-types", "usage-metering", {}, status=400)
        self.call("get", COLLECTORS, "online-collection")
        self.call("get", "/stream-management/v1/streams", "stream-management")
        self.call("get", "/stream-management/v1/functions", "stream-management")
        self.call("get", "/aggregation/v1/stores", "aggregation")
        self.call("get", "/global-parameters/v1/parameters", "global-parameters")
        self.call("post", "/metrics", "metrics", metrics)
        self.call("get", "/billing/v1/accounts", "billing")
        self.call("get", "/billing/v1/price-plans", "billing")
        self.token()


def uncounted_requests(api_client, platform_key: str, tenant: Tenant) -> None:
    """Requests of no operator client: none of them is an API call."""
    assert_error_body(api_client().get("/usage-metering/v1/meter-types"), 401)
    assert_error_body(api_client("not-a-token").get(COLLECTORS), 401)
    assert_error_body(api_client(platform_key).get(COLLECTORS), 401)
    assert_error_body(api_client(tenant.token).get(SUMMARY), 401)
    wrong_secret = {
        "client_id": tenant.client_id,
        "client_secret": "wrong",
        "grant_type": "client_credentials",
        "audience": AUDIENCE,
    }
    assert api_client().post("/oauth/token", wrong_secret).status_code == 401


def test_platform_figures_equal_what_was_done_across_folds_an_outage_and_a_restart(
    own_redis, api_client, platform, platform_key, servers, settings
):
    settings.TALLY["STREAMS"]["HTTP_ALLOWED_HOSTS"] = ["127.0.0.1"]
    settings.TALLY["NOTIFICATION_RETRY_BASE_SECONDS"] = 0
    ledger = Ledger()
    acme_tenant, globex_tenant = make_tenant("Acme"), make_tenant("Globex")
    acme = OperatorClient(acme_tenant, api_client, ledger)
    globex = OperatorClient(globex_tenant, api_client, ledger)
    # The scene, set up through the API too: a collector each; acme's read by an enabled
    # stream whose transforms/http node posts every record; acme's webhook endpoint.
    collector = connect(acme.client, collectors=1)["collectors"][0]["id"]
    globex_collector = connect(globex.client, collectors=1)["collectors"][0]["id"]
    stream = import_stream(acme.client, http_stream(collector, servers["api"].url))
    set_stream(acme.client, stream["id"], enabled=True)
    webhook_endpoint_set(operator=acme_tenant.operator, url=servers["hooks"].url)
    fold()
    today = timezone.now().date()  # a range that still holds today if the test crosses midnight
    days = [(today + datetime.timedelta(days=n)).isoformat() for n in (-1, 1)]
    before = platform_figures(platform, *days)

    def webhook_attempts(statuses: list[int]) -> None:
        """A notification delivered after `statuses` failed answers: one attempt each."""
        servers["hooks"].statuses = list(statuses)
        notification = notification_enqueue(
            operator_id=acme_tenant.operator.pk, kind="meter.threshold_crossed", payload={}
        )
        outcomes = [notification_deliver(notification.pk) for _ in range(len(statuses) + 1)]
        assert outcomes == ["pending"] * len(statuses) + ["delivered"]
        if acme.redis_up:
            ledger.gateway[("Acme", "webhook")] += len(statuses) + 1

    def process_stream() -> None:
        """The worker runs acme's stream over what was stored: one HTTP call a record."""
        calls = len(servers["api"].requests)
        process_all(collector)
        sent = len(servers["api"].requests) - calls
        assert sent == acme.records
        if acme.redis_up:
            ledger.gateway[("Acme", "http")] += sent
        acme.records = 0

    def operate(phase: str) -> None:
        acme.every_category()
        acme.ingest(
            collector,
            [
                {"id": f"{phase}-1", "type": "print"},
                {"id": f"{phase}-2", "type": "scan"},
                {"id": f"{phase}-3"},
            ],
            stored={"print": 1, "scan": 1, "": 1},
        )
        # One record seen before (a duplicate, not stored) and one new.
        acme.ingest(
            collector,
            [{"id": f"{phase}-1", "type": "print"}, {"id": f"{phase}-4", "type": "print"}],
            stored={"print": 1},
        )
        acme.ingest_refused(collector)
        globex.call("get", "/stream-management/v1/streams", "stream-management")
        globex.ingest(globex_collector, [{"id": f"{phase}-g", "type": "call"}], stored={"call": 1})
        uncounted_requests(api_client, platform_key, acme_tenant)
        process_stream()
        webhook_attempts([500, 503])

    # 1. Requests, then Beat's fold: every figure moved by exactly what was done.
    operate("first")
    fold()
    assert changes(before, platform_figures(platform, *days)) == ledger.figures()

    # 2. Redis stops: every request still succeeds. Only the counts kept in Redis are
    # lost (API calls, refused ingestions, webhook and HTTP calls); stored ingestions
    # and their events are written with the records.
    own_redis.stop()
    acme.redis_up = globex.redis_up = False
    operate("outage")
    fold()
    acme.redis_up = globex.redis_up = True

    # 3. Redis is back, empty: counting resumes from the next request.
    own_redis.start()
    operate("second")

    # 4. Redis goes back in time (a crash that reloads its last snapshot, a failover to
    # a replica that had not seen the last fold): what was folded since comes back, and
    # is not counted twice.
    own_redis.snapshot()
    fold()
    own_redis.kill()
    own_redis.start()
    fold()
    operate("third")
    fold()
    fold()  # a second fold finds nothing left to add

    assert changes(before, platform_figures(platform, *days)) == ledger.figures()
    assert_totals_are_the_sums_of_their_parts(platform)
    assert ledger.api_calls[("Acme", "oauth")] == 3  # three phases counted, one lost
    assert {category for _name, category in ledger.api_calls} == set(API_CATEGORIES)
    assert {slug for _name, slug in ledger.gateway} == set(CONNECTOR_SLUGS)
