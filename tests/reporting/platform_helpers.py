"""What the platform API tests share: the platform's client, the connector catalogue, and
operators' connections set up the way operators set them up (through the API)."""

from __future__ import annotations

import importlib

from streams.models import Connector
from tests.streams.runtime.helpers import create_collector, import_stream, set_stream

SUMMARY = "/platform-api/metrics/summary"
OPERATORS = "/platform-api/metrics/operators"
CONNECTORS = "/platform-api/metrics/connectors"
REPORT = "/platform-api/usage/report"
PLATFORM_PATHS = [SUMMARY, OPERATORS, CONNECTORS, f"{REPORT}?start=2026-03-01&end=2026-03-31"]


def catalogue_seed() -> None:
    """The connectors migration 0004 seeds, seeded again: a test that flushes the
    database (transaction=True) removes migration data for the tests after it."""
    seeded = importlib.import_module("streams.migrations.0004_connectors").CONNECTORS
    for row in seeded:
        Connector.objects.update_or_create(id=row["id"], defaults=row)


def fold() -> None:
    """What Beat does every minute: counts in Redis and pending deltas into the rollups."""
    from tenants.tasks import usage_counters_fold

    usage_counters_fold()


def http_stream(collector_id: str, uri: str, *, name: str = "Forward") -> dict:
    """online collection -> transforms/http (POST each record to `uri`) -> writers/noop."""
    return {
        "name": name,
        "nodes": [
            {
                "id": "source",
                "name": "Collector",
                "type": "readers/online_collection",
                "params": {"collectorId": collector_id},
            },
            {
                "id": "forward",
                "name": "Forward",
                "type": "transforms/http",
                "params": {
                    "method": "POST",
                    "uri": uri,
                    "body": '{"recordId": "${payload.id}"}',
                    "errorMode": "defer",
                    "shouldRetry": False,
                },
            },
            {"id": "sink", "name": "Done", "type": "writers/noop", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "forward"},
            {"id": "e2", "from": "forward", "to": "sink"},
        ],
    }


def connect(client, *, collectors: int = 0, deleted: int = 0, http_streams=()) -> dict:
    """Give the client's operator connections through the API: `collectors` live
    collectors, `deleted` deleted ones, and a stream per entry of `http_streams` (True:
    enabled) with one transforms/http node reading the first collector."""
    made = {"collectors": [], "streams": []}
    for index in range(collectors + deleted):
        collector = create_collector(client, name=f"Collector {index}")
        made["collectors"].append(collector)
        if index >= collectors:
            response = client.delete(f"/online-collection/v1/collectors/{collector['id']}")
            assert response.status_code == 200, response.content
    assert collectors or not http_streams, "streams read the first (live) collector"
    for index, enabled in enumerate(http_streams):
        source = made["collectors"][0]["id"]
        stream = import_stream(
            client, http_stream(source, "http://127.0.0.1:9/hook", name=f"Forward {index}")
        )
        if enabled:
            set_stream(client, stream["id"], enabled=True)
        made["streams"].append(stream)
    return made
