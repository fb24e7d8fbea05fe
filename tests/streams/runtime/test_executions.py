"""Batch executions beyond the happy path: schedules, recovery, conflicts, housekeeping,
and the admin's views of a stream at work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from streams import services, tasks
from streams.models import (
    DedupeKey,
    NodeCounter,
    NodeCounterDelta,
    Stream,
    StreamExecution,
    StreamLogLine,
)
from streams.runtime.runner import node_counts
from tests.streams.runtime.helpers import (
    STREAMS,
    fixture,
    import_stream,
    set_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


def counter_stream(name: str = "Counting", count: int = 3) -> dict:
    return {
        "name": name,
        "nodes": [
            {"id": "count", "name": "Count", "type": "readers/counter", "params": {"max": count}},
            {"id": "log", "name": "Log", "type": "writers/log", "params": {}},
        ],
        "edges": [{"id": "e", "from": "count", "to": "log"}],
    }


@pytest.fixture
def batch_stream(client) -> dict:
    stream = import_stream(client, counter_stream())
    return set_stream(client, stream["id"], processingType="batch")


def test_an_execution_reads_the_counter_in_order(client, batch_stream):
    response = client.post(f"{STREAMS}/{batch_stream['id']}/executions")
    assert response.status_code == 202
    tasks.execution_run(response.json()["id"])
    lines = StreamLogLine.objects.filter(stream_id=batch_stream["id"]).order_by("id")
    assert [line.payload for line in lines] == [{"value": 1}, {"value": 2}, {"value": 3}]
    (execution,) = client.get(f"{STREAMS}/{batch_stream['id']}/executions").json()["executions"]
    assert execution["status"] == "SUCCEEDED"
    assert execution["nodes"]["count"] == {"in": 3, "out": 3, "failed": 0}
    assert execution["startedAt"] and execution["endedAt"]


def test_running_an_execution_twice_runs_it_once(client, batch_stream):
    execution_id = client.post(f"{STREAMS}/{batch_stream['id']}/executions").json()["id"]
    tasks.execution_run(execution_id)
    tasks.execution_run(execution_id)
    assert StreamLogLine.objects.filter(stream_id=batch_stream["id"]).count() == 3


def test_a_realtime_stream_is_not_executed_and_all_files_needs_a_batch_stream(client):
    stream = import_stream(client, fixture("summarize-monthly-usage-data.json"))
    enable = client.patch(f"{STREAMS}/{stream['id']}", {"enabled": True})
    assert enable.status_code == 409
    assert "ALL_FILES" in enable.json()["message"]
    execute = client.post(f"{STREAMS}/{stream['id']}/executions")
    assert execute.status_code == 409
    assert not StreamExecution.objects.exists()


def test_the_schedule_queues_due_streams_once(client, batch_stream):
    set_stream(client, batch_stream["id"], schedule="*/5 * * * *", enabled=True)
    start = datetime(2026, 11, 28, 10, 1, tzinfo=UTC)
    assert services.executions_schedule(now=start) == 0  # learns when it runs next
    stream = Stream.objects.get(pk=batch_stream["id"])
    assert stream.next_run_at == datetime(2026, 11, 28, 10, 5, tzinfo=UTC)
    assert services.executions_schedule(now=start + timedelta(minutes=3)) == 0
    assert services.executions_schedule(now=start + timedelta(minutes=4, seconds=2)) == 1
    assert services.executions_schedule(now=start + timedelta(minutes=4, seconds=3)) == 0
    (execution,) = StreamExecution.objects.all()
    assert execution.trigger == "schedule"
    # A disabled stream is not run.
    set_stream(client, batch_stream["id"], enabled=False)
    assert services.executions_schedule(now=start + timedelta(hours=1)) == 0


def test_an_execution_whose_worker_died_is_queued_again(client, batch_stream):
    execution_id = client.post(f"{STREAMS}/{batch_stream['id']}/executions").json()["id"]
    StreamExecution.objects.filter(pk=execution_id).update(
        status="RUNNING", started_at=timezone.now() - timedelta(minutes=5)
    )
    assert services.executions_recover() == 1
    assert StreamExecution.objects.get(pk=execution_id).status == "QUEUED"
    tasks.execution_run(execution_id)
    assert StreamExecution.objects.get(pk=execution_id).status == "SUCCEEDED"
    assert StreamLogLine.objects.count() == 3


def test_the_sweep_forgets_expired_keys_trims_logs_and_folds_counters(
    client, batch_stream, settings
):
    settings.TALLY["STREAMS"]["LOG_MAX_LINES"] = 2
    for _ in range(2):
        tasks.execution_run(client.post(f"{STREAMS}/{batch_stream['id']}/executions").json()["id"])
    before = node_counts(batch_stream["id"])
    DedupeKey.objects.create(
        key_hash="00000000-0000-0000-0000-000000000001",
        operator_id=Stream.objects.get().operator_id,
        stream_id=batch_stream["id"],
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    tasks.streams_sweep()
    assert not DedupeKey.objects.exists()
    kept = list(StreamLogLine.objects.order_by("id").values_list("payload", flat=True))
    assert kept == [{"value": 2}, {"value": 3}]
    assert not NodeCounterDelta.objects.exists()
    assert NodeCounter.objects.exists()
    assert (
        node_counts(batch_stream["id"])
        == before
        == {
            "count": {"in": 6, "out": 6, "failed": 0},
            "log": {"in": 6, "out": 0, "failed": 0},
        }
    )


def test_staff_execute_from_the_admin_and_see_node_activity(client, batch_stream, staff_user):
    from django.test import Client

    browser = Client()
    browser.force_login(staff_user)
    response = browser.post(
        "/admin/streams/stream/",
        {"action": "execute_now", "_selected_action": [batch_stream["id"]]},
        follow=True,
    )
    assert "execution queued" in response.content.decode()
    (execution,) = StreamExecution.objects.all()
    assert execution.trigger == "admin"
    tasks.execution_run(str(execution.pk))
    page = browser.get(f"/admin/streams/stream/{batch_stream['id']}/change/").content.decode()
    # The counter's activity row: 3 in, 3 out, none failed.
    assert (
        "<td>Count</td><td><code>count</code></td><td>readers/counter</td>"
        "<td>3</td><td>3</td><td>0</td>"
    ) in page
    execution_page = browser.get(
        f"/admin/streams/streamexecution/{execution.pk}/change/"
    ).content.decode()
    assert "SUCCEEDED" in execution_page
    assert browser.get("/admin/streams/streamlogline/").status_code == 200


def test_a_meter_flushed_at_the_end_of_each_execution(client):
    """flushType "STREAM_EXECUTION": each execution closes the node's meters' periods,
    and the flushed records go down the reset output."""
    from tests.streams.runtime.helpers import (
        PRINTING_TYPE,
        create_meter,
        create_meter_type,
        meter_key,
        meter_values,
    )

    config = {
        "name": "Per execution",
        "nodes": [
            {"id": "count", "type": "readers/counter", "params": {"max": 4}},
            {
                "id": "user",
                "type": "transforms/script",
                "params": {"transform": "payload.userId = 'u1'; await push(payload);"},
            },
            {
                "id": "meter",
                "name": "Meter",
                "type": "transforms/meter",
                "params": {
                    "flushType": "STREAM_EXECUTION",
                    "guidingRules": [{"matchCategory": "Printing", "ignoreCondition": True}],
                    "multiOutput": {"fixed": {"reset": {"id": "r"}, "threshold": {"id": "t"}}},
                },
            },
            {"id": "billing", "name": "Billing", "type": "writers/log", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "count", "to": "user"},
            {"id": "e2", "from": "user", "to": "meter"},
            {"id": "e3", "from": "meter", "to": "billing", "output": "r"},
        ],
    }
    stream = import_stream(client, config)
    set_stream(client, stream["id"], processingType="batch")
    key = meter_key(client, stream["id"])
    meter_type = create_meter_type(client, PRINTING_TYPE)
    create_meter(client, {"userId": "u1", "meterKey": key, "meterTypeId": meter_type["id"]})
    for _ in range(2):
        tasks.execution_run(client.post(f"{STREAMS}/{stream['id']}/executions").json()["id"])
        tasks.flushes_run()
    assert meter_values(client, key) == {"u1": 0}
    flushed = [line.payload for line in StreamLogLine.objects.order_by("id")]
    assert [record["value"] for record in flushed] == [10, 10]
    assert flushed[0]["periodEnd"] <= flushed[1]["periodStart"]
