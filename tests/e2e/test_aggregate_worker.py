"""A script aggregator on a real Celery worker that is killed mid-batch: the batch's
session changes die with it, and the worker that takes the batch over leaves every
session exactly as one clean pass would."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.db.models import Max
from django.utils import timezone

from collection.models import Record
from streams.models import AggregationSession
from tests.conftest import ApiClient, make_tenant
from tests.e2e.test_stream_worker import (  # noqa: F401 (fixture)
    RECORDS_PROCESS,
    BillingApi,
    all_done,
    deployment,
    rows_locked_elsewhere,
    serving,
    statuses,
)
from tests.streams.runtime.helpers import (
    create_collector,
    import_stream,
    set_stream,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("generous_limits"),
]

# Counts per customer; every record pushes the running session on, with its id.
COUNTING = """
session.data.count = (session.data.count || 0) + 1;
session.data.sheets = (session.data.sheets || 0) + payload.sheets;
await push({recordId: payload.id, customer: payload.customer, count: session.data.count});
"""


def aggregating_stream(collector_id: str, billing_url: str) -> dict:
    return {
        "name": "Sessions per customer",
        "nodes": [
            {
                "id": "source",
                "name": "Collector",
                "type": "readers/online_collection",
                "params": {"collectorId": collector_id},
            },
            {
                "id": "sessions",
                "name": "Sessions",
                "type": "transforms/script_aggregate",
                "params": {"groupByRules": [{"fields": ["customer"]}], "onTransform": COUNTING},
            },
            {
                "id": "charge",
                "name": "Charge",
                "type": "transforms/http",
                "params": {
                    "method": "POST",
                    "uri": billing_url,
                    "body": '{"recordId": "${payload.recordId}"}',
                    "errorMode": "defer",
                    "shouldRetry": False,
                },
            },
            {"id": "sink", "name": "Done", "type": "writers/noop", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "sessions"},
            {"id": "e2", "from": "sessions", "to": "charge"},
            {"id": "e3", "from": "charge", "to": "sink"},
        ],
    }


def test_a_worker_killed_mid_batch_leaves_the_sessions_as_one_pass_would(deployment):  # noqa: F811
    tenant = make_tenant("Killed aggregator")
    client = ApiClient(tenant.token)
    customers = [f"c{n}" for n in range(1, 5)]
    records = [
        {"id": f"r-{i}", "customer": customers[i % 4], "sheets": i % 5 + 1} for i in range(120)
    ]
    expected_sheets = Counter()
    for record in records:
        expected_sheets[record["customer"]] += record["sheets"]

    with serving(BillingApi()) as billing:
        collector = create_collector(client)
        stream = import_stream(client, aggregating_stream(collector["id"], billing.url))
        set_stream(client, stream["id"], enabled=True)

        # The first worker folds the batch into its sessions (rows written, not
        # committed), then hangs on the first downstream call and is killed there.
        billing.hang_first = True
        deployment.start_worker("first", TALLY_HTTP_TIMEOUT_SECONDS="600")
        deployment.ingest(tenant.token, collector["id"], records)
        deployment.wait_for(billing.hung.is_set, "the first worker's first call")
        deployment.wait_for(
            lambda: rows_locked_elsewhere(AggregationSession) > 0,
            "the first worker's session writes",
        )
        deployment.kill("first")
        assert statuses(collector["id"]) == {Record.Status.IN_PROGRESS: 120}
        assert not AggregationSession.objects.exists()

        billing.hang_first = False
        billing.released.set()
        claimed_at = Record.objects.filter(collector_id=collector["id"]).aggregate(
            latest=Max("claimed_at")
        )["latest"]
        deployment.start_worker("second", TALLY_CLAIM_TIMEOUT_SECONDS="2")
        time.sleep(max(0.0, (claimed_at - timezone.now()).total_seconds() + 2.5))
        deployment.send(RECORDS_PROCESS, collector["id"])
        deployment.wait_for(all_done(collector["id"], 120), "the second worker to finish")

    assert statuses(collector["id"]) == {Record.Status.PROCESSED: 120}
    sessions = {s.key: s for s in AggregationSession.objects.filter(store__stream_id=stream["id"])}
    assert {key: s.data["count"] for key, s in sessions.items()} == dict.fromkeys(customers, 30)
    assert {key: s.data["sheets"] for key, s in sessions.items()} == dict(expected_sheets)
    assert {key: s.meta["count"] for key, s in sessions.items()} == dict.fromkeys(customers, 30)
