"""Realtime streams as a deployment runs them: records sent to gunicorn, the ingestion
signal queued on a real broker, a real Celery worker running the stream, meters moving
and webhooks arriving at servers the tests start on loopback.

Each test runs gunicorn and its workers on this test's database, with a Redis database of
their own as the broker (so no other test's queued tasks reach them)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests
from celery import Celery
from django.conf import global_settings, settings
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from collection.models import Record
from metering.models import Alert, Meter, Notification
from metering.notifications import sign, webhook_endpoint_set
from streams.models import StreamLogLine
from streams.runtime.runner import node_counts
from tests.conftest import AUDIENCE, ApiClient, make_tenant
from tests.e2e import servers
from tests.metering.webhooks import Receiver
from tests.streams.runtime.helpers import (
    PRINTING_TYPE,
    create_collector,
    create_meter,
    create_meter_type,
    import_stream,
    meter_key,
    meter_values,
    set_stream,
    simple_stream,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("generous_limits"),
]

REPO = Path(__file__).resolve().parents[2]
# A Redis database no other test uses (test_worker_killed has 14), flushed around each test.
BROKER_DB = 13
RECORDS_PROCESS = "collection.tasks.records_process"


def _broker_url() -> str:
    parts = urlsplit(settings.REDIS_URL)
    return urlunsplit(parts._replace(path=f"/{BROKER_DB}"))


# --- A deployment: gunicorn and Celery workers on the test database ----------------------


@dataclass
class Deployment:
    """gunicorn serving Tally on `port`, and the Celery workers a test starts beside it,
    each logging to `<name>.log` in `work_dir`."""

    work_dir: Path
    environment: dict[str, str]
    port: int
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    _logs: list = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_worker(self, name: str, **extra_env: str) -> subprocess.Popen:
        command = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "--hostname",
            f"{name}-{uuid.uuid4().hex[:6]}@e2e",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ]
        log = (self.work_dir / f"{name}.log").open("w")
        self._logs.append(log)
        worker = subprocess.Popen(
            command,
            cwd=REPO,
            env={**self.environment, "LOG_LEVEL": "INFO", **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a kill reaches all of it
        )
        self.workers[name] = worker
        return worker

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        worker = self.workers[name]
        if worker.poll() is None:
            os.killpg(worker.pid, sig)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)

    def send(self, task_name: str, *args) -> None:
        """Queue a task on the deployment's broker, as Beat or another process would."""
        with Celery(broker=_broker_url()) as app:
            app.send_task(task_name, args=list(args))

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-4000:]}"
            for path in sorted(self.work_dir.glob("*.log"))
        )

    def wait_for(self, condition: Callable[[], bool], what: str, seconds: float = 90) -> None:
        """Poll `condition`; fail with the workers' logs when it does not come true in time
        or when a worker that should be running has died."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            for name, worker in self.workers.items():
                if worker.returncode is None and worker.poll() is not None:
                    pytest.fail(f"Worker {name} exited ({worker.returncode}).\n{self.logs()}")
            time.sleep(0.2)
        pytest.fail(f"Timed out after {seconds}s waiting for {what}.\n{self.logs()}")

    def ingest(self, token: str, collector_id: str, records: list[dict]) -> None:
        response = requests.post(
            f"{self.base_url}/online-collection/v1/collectors/{collector_id}/data",
            json={"data": records},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text[:500]


@pytest.fixture
def deployment(tmp_path):
    broker = redis.Redis.from_url(_broker_url())
    broker.flushdb()  # tasks left by an interrupted run would reach the new workers
    environment = {
        **os.environ,
        "DATABASE_URL": servers.database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": _broker_url(),
        "TALLY_REDIS_PREFIX": f"{settings.REDIS_KEY_PREFIX}-deployment",
        "TALLY_API_AUDIENCE": AUDIENCE,
        "TALLY_RATE_LIMITS": '{"ingestion": {"rate": 10000, "burst": 10000}}',
        # The stream's transforms/http node calls a server this test starts.
        "TALLY_HTTP_ALLOWED_HOSTS": "127.0.0.1",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    with servers.gunicorn(environment) as port:
        running = Deployment(tmp_path, environment, port)
        try:
            yield running
        finally:
            for name in running.workers:
                running.kill(name, signal.SIGTERM)
            for log in running._logs:
                log.close()
            broker.flushdb()


# --- Servers the stream and the webhooks reach --------------------------------------------


class BillingApi(ThreadingHTTPServer):
    """The API a stream's transforms/http node posts each record to. Keeps the record ids
    it was called with. While `hang_first` is set, the first call sets `hung` and then does
    not answer until `released` is set (or for five minutes)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _BillingHandler)
        self.calls: list[str] = []
        self.hang_first = False
        self.hung = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/charges"


class _BillingHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        server: BillingApi = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server._lock:
            server.calls.append(body["recordId"])
            hang = server.hang_first and not server.hung.is_set()
            if hang:
                server.hung.set()
        if hang:
            server.released.wait(300)
        answer = b'{"charged": true}'
        # The worker that made a hung call may be dead by the time it is answered.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    def log_message(self, *args):  # keep the test output quiet
        pass


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer):
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        if isinstance(server, BillingApi):
            server.released.set()  # frees a handler still hanging
        server.shutdown()
        server.server_close()


# --- Scene helpers ------------------------------------------------------------------------


def statuses(collector_id: str) -> Counter:
    return Counter(
        Record.objects.filter(collector_id=collector_id).values_list("status", flat=True)
    )


def all_done(collector_id: str, count: int) -> Callable[[], bool]:
    """True once `count` records are stored and none is waiting or claimed."""

    def done() -> bool:
        found = statuses(collector_id)
        waiting = found[Record.Status.UNPROCESSED] + found[Record.Status.IN_PROGRESS]
        return sum(found.values()) == count and not waiting

    return done


def as_decimals(values: dict[str, object]) -> dict[str, Decimal]:
    return {user: Decimal(str(value)) for user, value in values.items()}


def billed_stream(collector_id: str, billing_url: str) -> dict:
    """online collection → map → meter, and map → transforms/http → writers/noop.

    Both branches leave the map together, so the order between them is the order of the
    export: the meter is listed first and runs first, and its usage is applied (not yet
    committed) by the time the http node makes its calls."""
    config = simple_stream(collector_id, name="Billed printing")
    (normalize,) = [node for node in config["nodes"] if node["id"] == "normalize"]
    normalize["params"]["mappings"].append({"recordId": "id"})
    config["nodes"] += [
        {
            "id": "charge",
            "name": "Charge",
            "type": "transforms/http",
            "params": {
                "method": "POST",
                "uri": billing_url,
                "body": '{"recordId": "${payload.recordId}", "userId": "${payload.userId}"}',
                "errorMode": "defer",
                "shouldRetry": False,
            },
        },
        {"id": "sink", "name": "Done", "type": "writers/noop", "params": {}},
    ]
    config["edges"] += [
        {"id": "e5", "from": "normalize", "to": "charge"},
        {"id": "e6", "from": "charge", "to": "sink"},
    ]
    return config


def price_every_account(client: ApiClient, users: list[str], meter_type_id: str) -> date:
    """A billing account `acc-<user>` per user, on a plan pricing the type at 0.50 a
    unit from today (UTC), invoiced monthly; returns today."""
    today = timezone.now().date()
    plan = client.post(
        "/billing/v1/price-plans",
        {
            "name": "Half",
            "rates": [{"meterTypeId": meter_type_id, "model": "PER_UNIT", "unitPrice": 0.5}],
        },
    )
    assert plan.status_code == 201, plan.content
    for user in users:
        for path, body in (
            (
                "accounts",
                {"accountId": f"acc-{user}", "customerId": user, "invoiceCurrency": "USD"},
            ),
            (
                "plan-assignments",
                {
                    "accountId": f"acc-{user}",
                    "pricePlanId": plan.json()["id"],
                    "effectiveFrom": today.isoformat(),
                    "cycle": "MONTHLY",
                    "anchorDay": 1,
                },
            ),
        ):
            response = client.post(f"/billing/v1/{path}", body)
            assert response.status_code == 201, response.content
    return today


def metric_totals(client: ApiClient, today: date, name: str, group_by: str) -> dict:
    """POST /metrics over the days around `today`, each group's values added up."""
    start = datetime.combine(today, datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
    response = client.post(
        "/metrics",
        {
            "startTime": start.isoformat(),
            "endTime": (start + timedelta(days=3)).isoformat(),
            "metricQueries": [{"id": "q", "name": name, "groupBy": group_by}],
        },
    )
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    return {
        item["groupedBy"]["fieldValue"]: sum(Decimal(str(v)) for v in item["metricValues"])
        for item in result["data"]
    }


def rows_locked_elsewhere(model) -> int:
    """Row-exclusive locks another session of this database holds on `model`'s table: a
    transaction that has written its rows and not ended."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM pg_locks l
            JOIN pg_class c ON c.oid = l.relation
            WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND c.relname = %s AND l.mode = 'RowExclusiveLock' AND l.granted
              AND l.pid <> pg_backend_pid()
            """,
            [model._meta.db_table],
        )
        return cursor.fetchone()[0]


# --- The tests --------------------------------------------------------------------------


def test_a_worker_killed_mid_batch_leaves_each_record_counted_once(deployment, generous_limits):
    tenant = make_tenant("Killed stream worker")
    client = ApiClient(tenant.token)
    users = [f"printer-{n}" for n in range(1, 6)]
    records = [
        {
            "id": f"job-{index}",
            "type": "print",
            "printerId": users[index % 5],
            "accountId": f"acc-{users[index % 5]}",
            # Whole and half sheets, so a record counted twice or lost changes the sums.
            "sheets": index % 7 + 1 + (0.5 if index % 3 == 0 else 0),
        }
        for index in range(200)
    ]
    expected = {user: Decimal(0) for user in users}
    for record in records:
        expected[record["printerId"]] += Decimal(str(record["sheets"]))

    with serving(BillingApi()) as billing:
        collector = create_collector(client)
        config = billed_stream(collector["id"], billing.url)
        (normalize,) = [node for node in config["nodes"] if node["id"] == "normalize"]
        normalize["params"]["mappings"].append({"accountId": "accountId"})
        stream = import_stream(client, config)
        set_stream(client, stream["id"], enabled=True)
        key = meter_key(client, stream["id"])
        meter_type = create_meter_type(client, PRINTING_TYPE)
        for user in users:
            create_meter(client, {"userId": user, "meterKey": key, "meterTypeId": meter_type["id"]})
        today = price_every_account(client, users, meter_type["id"])

        # 1. The first worker takes the batch from the ingestion's own signal, meters it,
        #    then waits on the first call (its HTTP timeout is longer than the test).
        billing.hang_first = True
        deployment.start_worker("first", TALLY_HTTP_TIMEOUT_SECONDS="600")
        deployment.ingest(tenant.token, collector["id"], records)
        deployment.wait_for(billing.hung.is_set, "the first worker's first call")
        deployment.wait_for(
            lambda: rows_locked_elsewhere(Meter) > 0, "the first worker's meter updates"
        )

        # 2. Killed there, it leaves the batch claimed and nothing of it applied.
        deployment.kill("first")
        assert statuses(collector["id"]) == {Record.Status.IN_PROGRESS: 200}
        assert as_decimals(meter_values(client, key)) == dict.fromkeys(users, Decimal(0))
        assert node_counts(stream["id"]) == {}
        assert billing.calls == ["job-0"]

        # 3. Once the claim has timed out, a second worker takes the batch over.
        billing.hang_first = False
        billing.released.set()
        claimed_at = Record.objects.filter(collector_id=collector["id"]).aggregate(
            latest=Max("claimed_at")
        )["latest"]
        deployment.start_worker("second", TALLY_CLAIM_TIMEOUT_SECONDS="2")
        time.sleep(max(0.0, (claimed_at - timezone.now()).total_seconds() + 2.5))
        deployment.send(RECORDS_PROCESS, collector["id"])
        deployment.wait_for(all_done(collector["id"], 200), "the second worker to finish")

    assert statuses(collector["id"]) == {Record.Status.PROCESSED: 200}
    assert as_decimals(meter_values(client, key)) == expected
    record_counts = dict(Meter.objects.filter(meter_key=key).values_list("user_id", "record_count"))
    assert record_counts == dict.fromkeys(users, 40)
    counts = node_counts(stream["id"])
    assert counts["meter"] == {"in": 200, "out": 0, "failed": 0}
    assert counts["charge"] == {"in": 200, "out": 200, "failed": 0}
    # The outside world is told at least once: the call the first worker died in was
    # made again, every other exactly once.
    calls = Counter(billing.calls)
    assert set(calls) == {record["id"] for record in records}
    assert calls["job-0"] == 2
    assert sum(calls.values()) == 201
    # Rollups, revenue and cycles were applied with the meters: once.
    assert metric_totals(client, today, "USAGE", "CUSTOMER_ID") == expected
    assert metric_totals(client, today, "EVENTS", "ACCOUNT_ID") == {
        f"acc-{user}": 40 for user in users
    }
    for name in ("REVENUE", "REVENUE_FOR_CYCLE"):
        assert metric_totals(client, today, name, "ACCOUNT_ID") == {
            f"acc-{user}": value / 2 for user, value in expected.items()
        }
    assert metric_totals(client, today, "USAGE_FOR_CYCLE", "ACCOUNT_ID") == {
        f"acc-{user}": value for user, value in expected.items()
    }


def test_a_threshold_crossed_in_a_stream_reaches_the_webhook_and_the_log(deployment):
    tenant = make_tenant("Webhook stream")
    client = ApiClient(tenant.token)
    collector = create_collector(client)
    stream = import_stream(client, simple_stream(collector["id"]))
    set_stream(client, stream["id"], enabled=True)
    key = meter_key(client, stream["id"])
    meter_type = create_meter_type(
        client,
        {
            **PRINTING_TYPE,
            "capacity": 1000,
            "thresholds": [
                {
                    "name": "NEARLY_FULL",
                    "capacityPercentage": 80,
                    "customFields": {"action": "EMAIL"},
                }
            ],
        },
    )
    meters = {
        user: create_meter(
            client, {"userId": user, "meterKey": key, "meterTypeId": meter_type["id"]}
        )
        for user in ("101", "102")
    }

    with serving(Receiver()) as receiver:
        endpoint = webhook_endpoint_set(operator=tenant.operator, url=receiver.url)
        deployment.start_worker("worker")
        # Two requests: the first stays below the threshold, the second crosses it.
        deployment.ingest(
            tenant.token,
            collector["id"],
            [
                {"id": "a", "type": "print", "printerId": "101", "sheets": 500},
                {"id": "b", "type": "print", "printerId": "102", "sheets": 100},
            ],
        )
        deployment.wait_for(all_done(collector["id"], 2), "the first records")
        assert not receiver.requests
        deployment.ingest(
            tenant.token,
            collector["id"],
            [{"id": "c", "type": "print", "printerId": "101", "sheets": 400}],
        )
        deployment.wait_for(all_done(collector["id"], 3), "the second records")
        deployment.wait_for(
            lambda: Notification.objects.filter(status=Notification.Status.DELIVERED).exists(),
            "the threshold's webhook",
        )

    assert statuses(collector["id"]) == {Record.Status.PROCESSED: 3}
    assert meter_values(client, key) == {"101": 900, "102": 100}
    ((headers, body),) = receiver.requests
    event = json.loads(body)
    assert event["type"] == "meter.threshold_crossed"
    assert headers["Tally-Event"] == "meter.threshold_crossed"
    stamp = int(headers["Tally-Signature"].split(",")[0].removeprefix("t="))
    assert headers["Tally-Signature"] == sign(endpoint.signing_secret, stamp, body)
    data = event["data"]
    assert data["meterId"] == meters["101"]["id"]
    assert data["userId"] == "101"
    assert data["meterKey"] == key
    assert data["thresholdName"] == "NEARLY_FULL"
    assert data["customFields"] == {"action": "EMAIL"}
    assert (data["thresholdValue"], data["meterValue"]) == (800, 900)

    (line,) = StreamLogLine.objects.filter(stream_id=stream["id"], node_id="thresholds")
    assert line.payload["userId"] == "101"
    assert line.payload["value"] == 900
    reached = line.payload["thresholdReached"]
    assert reached["name"] == "NEARLY_FULL"
    assert reached["customFields"] == {"action": "EMAIL"}
    assert Alert.objects.filter(operator=tenant.operator).count() == 1


def test_a_failed_record_requeued_in_the_admin_is_applied_once(
    deployment, django_user_model, settings
):
    tenant = make_tenant("Requeue stream")
    client = ApiClient(tenant.token)
    collector = create_collector(client)
    stream = import_stream(client, simple_stream(collector["id"]))
    set_stream(client, stream["id"], enabled=True)
    key = meter_key(client, stream["id"])
    meter_type = create_meter_type(client, PRINTING_TYPE)
    create_meter(client, {"userId": "101", "meterKey": key, "meterTypeId": meter_type["id"]})

    deployment.start_worker("worker")
    deployment.ingest(
        tenant.token,
        collector["id"],
        [
            {"id": "ok", "type": "print", "printerId": "101", "sheets": 4},
            {"id": "lost", "type": "print", "printerId": "999", "sheets": 6},
        ],
    )
    deployment.wait_for(all_done(collector["id"], 2), "the first pass")
    lost = Record.objects.get(collector_id=collector["id"], record_id="lost")
    assert lost.status == Record.Status.FAILED
    assert lost.failure_reason.startswith("Meter (meter): No meter for user 999")

    # The operator provisions the missing meter, then re-queues the record in the admin
    # (served by gunicorn, whose signal reaches the worker through the broker).
    create_meter(client, {"userId": "999", "meterKey": key, "meterTypeId": meter_type["id"]})
    # gunicorn checks the password with Django's own hashers, not the tests' fast one.
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    django_user_model.objects.create_superuser(
        username="alice", email="alice@example.com", password="alice-password-123"
    )
    admin = requests.Session()
    login = f"{deployment.base_url}/admin/login/"
    admin.get(login, timeout=30)
    response = admin.post(
        login,
        {
            "username": "alice",
            "password": "alice-password-123",
            "csrfmiddlewaretoken": admin.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": login},
        timeout=30,
    )
    assert response.ok and "/admin/login/" not in response.url, response.text[:500]
    changelist = f"{deployment.base_url}/admin/collection/record/"
    response = admin.post(
        changelist,
        {
            "action": "requeue_failed",
            "_selected_action": [str(lost.pk)],
            "csrfmiddlewaretoken": admin.cookies["csrftoken"],
        },
        headers={"Referer": changelist},
        timeout=30,
    )
    assert response.ok and "1 failed record(s) queued again." in response.text

    deployment.wait_for(
        lambda: Record.objects.get(pk=lost.pk).status == Record.Status.PROCESSED,
        "the re-queued record",
    )
    # The worker looks again a second after a pass that did work; give that pass time
    # to run, so a second application would show.
    time.sleep(2)
    assert meter_values(client, key) == {"101": 4, "999": 6}
    assert dict(Meter.objects.filter(meter_key=key).values_list("user_id", "record_count")) == {
        "101": 1,
        "999": 1,
    }
    assert node_counts(stream["id"])["meter"] == {"in": 3, "out": 0, "failed": 1}
