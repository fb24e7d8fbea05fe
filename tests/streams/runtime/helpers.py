"""Helpers for runtime tests: everything a user would do, through the API."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[4] / "shared/fixtures/usage-engine-streams"
STREAMS = "/stream-management/v1/streams"
METER_TYPES = "/usage-metering/v1/meter-types"
METERS = "/usage-metering/v1/meters"
COLLECTORS = "/online-collection/v1/collectors"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def solution_id(client) -> str:
    return client.get("/stream-management/v1/solutions").json()["solutions"][0]["id"]


def import_stream(client, config: dict) -> dict:
    response = client.post(
        f"{STREAMS}/import", {"solutionId": solution_id(client), "streamConfig": config}
    )
    assert response.status_code in (200, 201), response.content
    return response.json()["stream"]


def set_stream(client, stream_id: str, **fields) -> dict:
    response = client.patch(f"{STREAMS}/{stream_id}", fields)
    assert response.status_code == 200, response.content
    return response.json()


def meter_key(client, stream_id: str, node_name: str = "Meter") -> str:
    exported = client.get(f"{STREAMS}/{stream_id}/export").json()
    (node,) = [n for n in exported["nodes"] if n.get("name") == node_name]
    return node["meterKey"]


def create_meter_type(client, body: dict) -> dict:
    response = client.post(METER_TYPES, body)
    assert response.status_code == 201, response.content
    return response.json()


def create_meter(client, body: dict) -> dict:
    response = client.post(METERS, body)
    assert response.status_code == 201, response.content
    return response.json()


def meter_values(client, key: str) -> dict[str, object]:
    meters = client.get(METERS, {"meterKey": key, "limit": 100}).json()["meters"]
    return {meter["userId"]: meter["value"] for meter in meters}


def create_collector(client, name: str = "Printers") -> dict:
    from collection.models import Collector

    response = client.post(COLLECTORS, {"name": name})
    assert response.status_code == 201, response.content
    collector = response.json()
    # Provisioning runs on a worker; tests make the partition-backed collector active.
    Collector.objects.filter(pk=collector["id"]).update(status=Collector.Status.ACTIVE)
    return collector


def ingest(client, collector_id: str, records: list[dict]) -> dict:
    response = client.post(f"{COLLECTORS}/{collector_id}/data", {"data": records})
    assert response.status_code == 202, response.content
    return response.json()


def process_all(collector_id: str) -> int:
    """Run the collection work queue until nothing is left, as a worker would."""
    from collection.services import records_process_batch

    total = 0
    while claimed := records_process_batch(collector_id=collector_id):
        total += claimed
    return total


def simple_stream(collector_id: str, *, name: str = "Usage", category: str = "Printing") -> dict:
    """online collection → map → meter, the shape the demo and README use."""
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
                "id": "normalize",
                "name": "Normalize Fields",
                "type": "transforms/map",
                "params": {
                    "mappings": [
                        {"userId": "printerId"},
                        {"value": "sheets"},
                        {"timestamp": "timestamp"},
                    ]
                },
            },
            {
                "id": "meter",
                "name": "Meter",
                "type": "transforms/meter",
                "params": {
                    "flushType": "TIMEOUT",
                    "guidingRules": [
                        {
                            "customName": "Printing",
                            "matchCategory": category,
                            "ignoreCondition": True,
                            "conditionRelation": "and",
                            "conditions": [{"customName": "", "field": "", "value": ""}],
                            "groupBy": [],
                            "otherOperations": [],
                        }
                    ],
                    "multiOutput": {
                        "fixed": {
                            "reset": {"id": "out-reset"},
                            "threshold": {"id": "out-threshold"},
                        }
                    },
                },
            },
            {"id": "thresholds", "name": "Thresholds", "type": "writers/log", "params": {}},
            {"id": "billing", "name": "Billing", "type": "writers/log", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "normalize"},
            {"id": "e2", "from": "normalize", "to": "meter"},
            {"id": "e3", "from": "meter", "to": "thresholds", "output": "out-threshold"},
            {"id": "e4", "from": "meter", "to": "billing", "output": "out-reset"},
        ],
    }


PRINTING_TYPE = {
    "name": "Pay-Per-Print",
    "unit": "sheets",
    "category": "Printing",
    "aggregation": {"type": "sum"},
    "resetSchedule": {"day": "1", "hour": "0", "minute": "0", "month": "*", "weekday": "*"},
    "timezone": "Etc/UTC",
    "capacity": 10000,
}


def logged(stream_id, node_id: str = "out") -> list:
    """The records a stream's `writers/log` node wrote, oldest first."""
    from streams.models import StreamLogLine

    lines = StreamLogLine.objects.filter(stream_id=stream_id, node_id=node_id).order_by("id")
    return [line.payload for line in lines]
