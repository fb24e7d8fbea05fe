"""Scenes for metric definition tests: records sent over HTTP to a collector whose
realtime stream only passes them on (so they become PROCESSED as a worker would make
them), and metrics created and asked through /v1/metrics."""

from __future__ import annotations

from urllib.parse import urlencode

from common.json import dumps_text
from tests.streams.runtime.helpers import create_collector, import_stream, process_all, set_stream

METRICS = "/v1/metrics"


def passing_stream(collector_id: str) -> dict:
    return {
        "name": "Pass",
        "nodes": [
            {
                "id": "source",
                "name": "Collector",
                "type": "readers/online_collection",
                "params": {"collectorId": collector_id},
            },
            {"id": "sink", "name": "Done", "type": "writers/noop", "params": {}},
        ],
        "edges": [{"id": "e1", "from": "source", "to": "sink"}],
    }


def processed_collector(client, name: str = "Events") -> str:
    """A collector whose records a worker processes (and nothing else)."""
    collector = create_collector(client, name)
    stream = import_stream(client, passing_stream(collector["id"]))
    set_stream(client, stream["id"], enabled=True)
    return collector["id"]


def send_and_process(client, collector_id: str, records: list[dict]) -> None:
    """Ingest over HTTP, then run the work queue as a worker would."""
    for start in range(0, len(records), 1000):
        chunk = records[start : start + 1000]
        # Encoded here: the test client would send decimals as strings.
        response = client.post(
            f"/online-collection/v1/collectors/{collector_id}/data", dumps_text({"data": chunk})
        )
        assert response.status_code == 202, response.content
        assert response.json()["accepted"] == len(chunk), response.content
    process_all(collector_id)


def create_metric(client, body: dict) -> dict:
    response = client.post(METRICS, body)
    assert response.status_code == 201, response.content
    return response.json()


def value_of(client, metric_id: str, customer_id: str, timeframe: dict | None = None) -> dict:
    params = {"customerId": customer_id}
    if timeframe is not None:
        params["timeframe"] = dumps_text(timeframe)
    response = client.get(f"{METRICS}/{metric_id}/value?{urlencode(params)}")
    assert response.status_code == 200, response.content
    return response.json()


def backfill(metric_id: str) -> None:
    """Run an indexed metric's backfill to the end, as the worker's task does."""
    from reporting.tasks import metric_backfill

    metric_backfill(metric_id)
