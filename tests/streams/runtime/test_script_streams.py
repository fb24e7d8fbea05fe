"""Scripts the way users reach them: imported over the API, run by executions and by
the work queue. A runaway or hostile script fails its records with the reason and the
worker goes on; fixing the stream and re-queueing applies the records once."""

from __future__ import annotations

import pytest

from collection.models import Record
from collection.services import records_requeue_failed
from streams import tasks
from streams.models import StreamLogLine
from tests.streams.runtime.helpers import (
    PRINTING_TYPE,
    STREAMS,
    create_collector,
    create_meter,
    create_meter_type,
    import_stream,
    ingest,
    meter_key,
    meter_values,
    process_all,
    set_stream,
    simple_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


@pytest.fixture(autouse=True)
def _short_limits(settings):
    settings.TALLY["STREAMS"]["SCRIPT_TIME_LIMIT_MS"] = 300


def scripted(name: str, transform: str) -> dict:
    return {
        "name": name,
        "nodes": [
            {"id": "count", "type": "readers/counter", "params": {"max": 3}},
            {"id": "script", "name": "Script", "type": "transforms/script",
             "params": {"transform": transform}},
            {"id": "log", "name": "Log", "type": "writers/log", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "count", "to": "script"},
            {"id": "e2", "from": "script", "to": "log"},
        ],
    }  # fmt: skip


def execute(client, stream: dict) -> dict:
    set_stream(client, stream["id"], processingType="batch")
    execution_id = client.post(f"{STREAMS}/{stream['id']}/executions").json()["id"]
    tasks.execution_run(execution_id)
    return client.get(f"{STREAMS}/{stream['id']}/executions").json()["executions"][0]


@pytest.mark.parametrize(
    ("transform", "reason"),
    [
        ("while (true) {}", "time limit of 300 ms exceeded"),
        ("const fs = require('fs'); await push(payload);", "require"),
        ("await push(process.env);", "process is not defined"),
        ("await fetch('http://example.com'); await push(payload);", "fetch is not defined"),
    ],
)
def test_a_hostile_script_fails_its_records_and_the_next_stream_runs(client, transform, reason):
    bad = execute(client, import_stream(client, scripted("Bad", transform)))
    assert bad["status"] == "SUCCEEDED"  # the execution ran; its records failed
    assert bad["recordsFailed"] == 3
    assert reason in bad["errors"][0]["reason"]
    assert bad["errors"][0]["nodeName"] == "Script"

    good = execute(client, import_stream(client, scripted("Good", "await push(payload);")))
    assert (good["recordsFailed"], good["nodes"]["log"]["in"]) == (0, 3)
    assert StreamLogLine.objects.filter(node_id="log").count() == 3


def test_a_fixed_script_applies_requeued_records_once(client):
    collector = create_collector(client)
    config = simple_stream(collector["id"])
    broken = "payload.sheets = payload.pages.count.total; await push(payload);"
    config["nodes"].insert(
        1,
        {"id": "script", "name": "Script", "type": "transforms/script",
         "params": {"transform": broken}},
    )  # fmt: skip
    config["edges"][0] = {"id": "e1", "from": "source", "to": "script"}
    config["edges"].append({"id": "e0", "from": "script", "to": "normalize"})
    stream = import_stream(client, config)
    set_stream(client, stream["id"], enabled=True)
    meter_type = create_meter_type(client, PRINTING_TYPE)
    key = meter_key(client, stream["id"])
    create_meter(client, {"userId": "7", "meterKey": key, "meterTypeId": meter_type["id"]})

    ingest(client, collector["id"], [{"id": "r1", "printerId": 7, "pages": 4}])
    process_all(collector["id"])
    failed = Record.objects.get(record_id="r1")
    assert failed.status == Record.Status.FAILED
    assert failed.failure_reason.startswith("Script (script): TypeError")

    config["nodes"][1]["params"]["transform"] = (
        "payload.sheets = payload.pages; await push(payload);"
    )
    import_stream(client, config)  # overwrite: the user fixes the script
    records_requeue_failed(record_ids=[failed.id])
    process_all(collector["id"])
    process_all(collector["id"])
    assert meter_values(client, key) == {"7": 4}
