"""Realtime streams as a user reaches them: records sent over HTTP to a collector, the
work queue's processor running the collector's streams, meters moving."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from collection.models import Record
from collection.services import records_requeue_failed
from metering.models import Meter, Notification
from metering.resets import meters_reset_due
from streams.models import DedupeKey, NodeCounterDelta, NodeError, PendingFlush, StreamLogLine
from streams.runtime.runner import flushes_run, node_counts
from tests.conftest import assert_error_body
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


@pytest.fixture
def setup(client):
    """A collector, the stream reading it (enabled), a meter type and meters 101 to 103."""
    collector = create_collector(client)
    stream = import_stream(client, simple_stream(collector["id"]))
    set_stream(client, stream["id"], enabled=True)
    key = meter_key(client, stream["id"])
    meter_type = create_meter_type(
        client,
        {
            **PRINTING_TYPE,
            "thresholds": [
                {"name": "SOON", "capacityPercentage": 50, "customFields": {"action": "EMAIL"}}
            ],
        },
    )
    for user in ("101", "102", "103"):
        create_meter(client, {"userId": user, "meterKey": key, "meterTypeId": meter_type["id"]})
    return {"collector": collector, "stream": stream, "key": key, "type": meter_type}


def printer(record_id: str, printer_id, sheets, **extra) -> dict:
    return {"id": record_id, "type": "print", "printerId": printer_id, "sheets": sheets, **extra}


def statuses(collector_id: str) -> dict[str, str]:
    return {
        r.record_id: r.get_status_display()
        for r in Record.objects.filter(collector_id=collector_id)
    }


def test_records_sent_over_http_move_the_meters(client, setup):
    ingest(
        client,
        setup["collector"]["id"],
        [
            printer("a", 101, 3),
            printer("b", 101, Decimal("2.5")),
            printer("c", 102, 7),
            printer("d", "103", 1),
        ],
    )
    assert process_all(setup["collector"]["id"]) == 4
    assert meter_values(client, setup["key"]) == {"101": 5.5, "102": 7, "103": 1}
    assert set(statuses(setup["collector"]["id"]).values()) == {"PROCESSED"}
    counts = node_counts(setup["stream"]["id"])
    assert counts["normalize"] == {"in": 4, "out": 4, "failed": 0}
    assert counts["meter"]["in"] == 4


def test_a_record_no_rule_places_fails_with_node_and_reason_and_applies_once_when_requeued(
    client, setup
):
    collector_id = setup["collector"]["id"]
    ingest(client, collector_id, [printer("ok", 101, 4), printer("lost", 999, 6)])
    process_all(collector_id)
    failed = Record.objects.get(collector_id=collector_id, record_id="lost")
    assert failed.status == Record.Status.FAILED
    assert failed.failure_reason.startswith("Meter (meter): No meter for user 999")
    assert meter_values(client, setup["key"])["101"] == 4
    error = NodeError.objects.get(stream_id=setup["stream"]["id"], node_id="meter")
    assert "999" in error.reason

    # The user provisions the meter, then re-queues the record: it counts once.
    create_meter(
        client, {"userId": "999", "meterKey": setup["key"], "meterTypeId": setup["type"]["id"]}
    )
    assert records_requeue_failed(record_ids=[failed.id]) == 1
    process_all(collector_id)
    process_all(collector_id)
    assert meter_values(client, setup["key"])["999"] == 6
    assert meter_values(client, setup["key"])["101"] == 4


def test_bad_values_and_timestamps_fail_alone(client, setup):
    collector_id = setup["collector"]["id"]
    ingest(
        client,
        collector_id,
        [
            printer("good", 101, 2),
            printer("text", 101, "many"),
            {"id": "nouser", "sheets": 1},
        ],
    )
    process_all(collector_id)
    assert statuses(collector_id) == {"good": "PROCESSED", "text": "FAILED", "nouser": "FAILED"}
    reasons = dict(
        Record.objects.filter(collector_id=collector_id, status=Record.Status.FAILED).values_list(
            "record_id", "failure_reason"
        )
    )
    assert "is not a number" in reasons["text"]
    assert "no userId" in reasons["nouser"]
    assert meter_values(client, setup["key"])["101"] == 2


def test_a_record_failed_by_one_stream_has_no_effect_in_another(client, setup):
    """Two streams read the collector; the second rejects one record: the first must not
    have metered it."""
    strict = {
        "name": "Strict",
        "nodes": [
            {
                "id": "source",
                "type": "readers/online_collection",
                "params": {"collectorId": setup["collector"]["id"]},
            },
            {
                "id": "check",
                "name": "Check",
                "type": "transforms/validate",
                "params": {"schema": {"properties": {"sheets": {"type": "integer"}}}},
            },
            {"id": "sink", "type": "writers/noop", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "check"},
            {"id": "e2", "from": "check", "to": "sink"},
        ],
    }
    second = import_stream(client, strict)
    set_stream(client, second["id"], enabled=True)
    collector_id = setup["collector"]["id"]
    ingest(client, collector_id, [printer("int", 101, 3), printer("dec", 101, Decimal("0.5"))])
    process_all(collector_id)
    assert statuses(collector_id) == {"int": "PROCESSED", "dec": "FAILED"}
    assert "Check (check)" in Record.objects.get(record_id="dec").failure_reason
    assert meter_values(client, setup["key"])["101"] == 3


def test_a_disabled_stream_leaves_records_queued(client, setup):
    set_stream(client, setup["stream"]["id"], enabled=False)
    ingest(client, setup["collector"]["id"], [printer("a", 101, 3)])
    assert process_all(setup["collector"]["id"]) == 0
    assert statuses(setup["collector"]["id"]) == {"a": "UNPROCESSED"}


def test_thresholds_leave_through_the_threshold_output_and_notify(client, setup):
    ingest(client, setup["collector"]["id"], [printer("big", 102, 6000)])
    process_all(setup["collector"]["id"])
    (line,) = StreamLogLine.objects.filter(stream_id=setup["stream"]["id"], node_id="thresholds")
    assert line.payload["userId"] == "102"
    assert line.payload["value"] == 6000
    reached = line.payload["thresholdReached"]
    assert reached["name"] == "SOON"
    assert reached["kind"] == "capacityPercentage"
    assert reached["customFields"] == {"action": "EMAIL"}
    assert line.payload["thresholds"][0]["capacityPercentage"] == 50
    assert Notification.objects.filter(kind="meter.threshold_crossed").count() == 1
    # Crossing it again in the same period emits nothing more.
    ingest(client, setup["collector"]["id"], [printer("more", 102, 10)])
    process_all(setup["collector"]["id"])
    assert StreamLogLine.objects.filter(node_id="thresholds").count() == 1


def test_a_closed_period_is_flushed_down_the_reset_output_once(client, setup):
    ingest(client, setup["collector"]["id"], [printer("a", 101, 8)])
    process_all(setup["collector"]["id"])
    Meter.objects.filter(meter_key=setup["key"]).update(
        period_end=timezone.now() - timedelta(seconds=1)
    )
    meters_reset_due()
    assert PendingFlush.objects.count() == 3  # every meter of the node, used or not
    assert flushes_run() == 3
    assert flushes_run() == 0
    lines = {
        line.payload["userId"]: line.payload
        for line in StreamLogLine.objects.filter(node_id="billing")
    }
    assert set(lines) == {"101", "102", "103"}
    assert lines["101"]["value"] == 8
    assert lines["101"]["meterKey"] == setup["key"]
    assert lines["101"]["meterTypeName"] == "Pay-Per-Print"
    assert lines["101"]["periodEnd"]
    assert meter_values(client, setup["key"])["101"] == 0


def test_preview_runs_without_side_effects(client, setup):
    url = f"{STREAMS}/{setup['stream']['id']}/preview"
    response = client.post(url, {"records": [printer("p", 101, 5), printer("q", 555, 1)]})
    assert response.status_code == 200, response.content
    body = response.json()
    nodes = {node["nodeId"]: node for node in body["nodes"]}
    assert nodes["normalize"]["outputs"][0]["payload"]["userId"] == 101
    assert nodes["meter"]["in"] == 2
    (change,) = body["meterChanges"]
    assert change["userId"] == "101" and change["value"] == 5
    (failure,) = body["failures"]
    assert "No meter for user 555" in failure["reason"]
    assert meter_values(client, setup["key"])["101"] == 0
    assert not StreamLogLine.objects.exists()
    assert not NodeCounterDelta.objects.exists()


def test_preview_of_last_records_reads_the_collector(client, setup):
    ingest(client, setup["collector"]["id"], [printer("x", 101, 1), printer("y", 102, 2)])
    url = f"{STREAMS}/{setup['stream']['id']}/preview"
    body = client.post(url, {"lastRecords": 5}).json()
    nodes = {node["nodeId"]: node for node in body["nodes"]}
    assert [p["id"] for p in nodes["source"]["inputs"]] == ["x", "y"]
    assert statuses(setup["collector"]["id"]) == {"x": "UNPROCESSED", "y": "UNPROCESSED"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"records": "nope"}, "records"),
        ({"records": [1]}, "records"),
        ({"lastRecords": 0}, "lastRecords"),
        ({"lastRecords": "5"}, "lastRecords"),
        ({"lastRecords": 101}, "lastRecords"),
        ({"records": [{}] * 101}, "records"),
        ({"records": [], "lastRecords": 1}, None),
    ],
)
def test_bad_preview_bodies_are_400(client, setup, body, field):
    response = client.post(f"{STREAMS}/{setup['stream']['id']}/preview", body)
    error = assert_error_body(response, 400)
    if field is not None:
        assert field in [detail["field"] for detail in error["details"]], error


def test_logs_are_listed_newest_first_with_a_cursor(client, setup):
    for index in range(3):
        ingest(client, setup["collector"]["id"], [printer(f"r{index}", 101, 5000 + index)])
        process_all(setup["collector"]["id"])
    Meter.objects.update(period_end=timezone.now() - timedelta(seconds=1))
    meters_reset_due()
    flushes_run()
    url = f"{STREAMS}/{setup['stream']['id']}/logs"
    first = client.get(url, {"limit": 2}).json()
    assert len(first["logs"]) == 2
    rest = client.get(url, {"limit": 50, "before": first["nextCursor"]}).json()
    ids = [line["id"] for line in first["logs"] + rest["logs"]]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 4  # one threshold line, three flushed meters


def test_another_operators_stream_is_404_everywhere(client, setup, globex, api_client):
    other = api_client(globex.token)
    stream_id = setup["stream"]["id"]
    for method, path, body in (
        ("get", f"{STREAMS}/{stream_id}/logs", None),
        ("get", f"{STREAMS}/{stream_id}/executions", None),
        ("post", f"{STREAMS}/{stream_id}/executions", {}),
        ("post", f"{STREAMS}/{stream_id}/preview", {"records": [{}]}),
    ):
        response = getattr(other, method)(path, body) if body is not None else other.get(path)
        assert response.status_code == 404, (method, path)


def test_a_stream_writes_only_its_operators_meters(client, setup, globex, api_client):
    """Globex has a meter with the same meter key and user: it never moves."""
    other = api_client(globex.token)
    their_type = create_meter_type(other, PRINTING_TYPE)
    create_meter(
        other, {"userId": "101", "meterKey": setup["key"], "meterTypeId": their_type["id"]}
    )
    ingest(client, setup["collector"]["id"], [printer("a", 101, 9)])
    process_all(setup["collector"]["id"])
    assert meter_values(other, setup["key"]) == {"101": 0}
    assert meter_values(client, setup["key"])["101"] == 9


def test_deduplicate_keys_are_kept_per_stream_and_node(client, setup):
    dedupe = simple_stream(setup["collector"]["id"], name="Deduplicated")
    dedupe["nodes"].insert(
        1,
        {
            "id": "dedupe",
            "name": "Deduplicate",
            "type": "transforms/deduplicate",
            "params": {
                "key": "${payload.eventId}",
                "lifeTimeDays": 1,
                "multiOutput": {"fixed": {"unique": {"id": "u"}}},
            },
        },
    )
    dedupe["edges"][0] = {"id": "e1", "from": "source", "to": "dedupe"}
    dedupe["edges"].append({"id": "e0", "from": "dedupe", "to": "normalize", "output": "u"})
    set_stream(client, setup["stream"]["id"], enabled=False)
    stream = import_stream(client, dedupe)
    set_stream(client, stream["id"], enabled=True)
    key = meter_key(client, stream["id"])
    create_meter(client, {"userId": "101", "meterKey": key, "meterTypeId": setup["type"]["id"]})
    collector_id = setup["collector"]["id"]
    ingest(
        client,
        collector_id,
        [printer("a", 101, 1, eventId="e1"), printer("b", 101, 1, eventId="e1")],
    )
    process_all(collector_id)
    ingest(
        client,
        collector_id,
        [printer("c", 101, 1, eventId="e1"), printer("d", 101, 2, eventId="e2")],
    )
    process_all(collector_id)
    assert meter_values(client, key) == {"101": 3}
    assert DedupeKey.objects.count() == 2
    counts = node_counts(stream["id"])
    assert counts["dedupe"] == {"in": 4, "out": 2, "failed": 0}


def test_a_stream_never_reads_another_operators_collector(client, setup, globex, api_client):
    """Even a configuration written past the import checks (straight into the database)
    does not make another operator's records reach a stream."""
    from streams.models import StreamVersion

    other = api_client(globex.token)
    their_collector = create_collector(other, "Theirs")
    theirs = import_stream(other, simple_stream(their_collector["id"], name="Sneaky"))
    set_stream(other, theirs["id"], enabled=True)
    version = StreamVersion.objects.get(stream_id=theirs["id"], is_latest=True)
    version.config = simple_stream(setup["collector"]["id"], name="Sneaky")
    version.save()
    ingest(client, setup["collector"]["id"], [printer("a", 101, 4)])
    process_all(setup["collector"]["id"])
    assert not NodeCounterDelta.objects.filter(stream_id=theirs["id"]).exists()
    assert meter_values(client, setup["key"])["101"] == 4


def test_a_disabled_streams_flushes_wait_until_it_is_enabled(client, setup):
    set_stream(client, setup["stream"]["id"], enabled=False)
    Meter.objects.filter(meter_key=setup["key"]).update(
        period_end=timezone.now() - timedelta(seconds=1)
    )
    meters_reset_due()
    assert flushes_run() == 0
    assert PendingFlush.objects.count() == 3
    set_stream(client, setup["stream"]["id"], enabled=True)
    assert flushes_run() == 3
    assert StreamLogLine.objects.filter(node_id="billing").count() == 3


def test_failures_are_counted_in_the_stream_that_failed_them(client, setup):
    """Two streams read one collector with the same node ids; the second's meter node
    finds no meter. The failures (and the record's FAILED state) are the second's; the
    first stream's meter node neither counts them nor shows an error."""
    other = simple_stream(setup["collector"]["id"], name="Other", category="Elsewhere")
    second = import_stream(client, other)
    set_stream(client, second["id"], enabled=True)
    ingest(client, setup["collector"]["id"], [printer("a", 101, 2)])
    process_all(setup["collector"]["id"])
    assert statuses(setup["collector"]["id"]) == {"a": "FAILED"}
    assert node_counts(second["id"])["meter"]["failed"] == 1
    assert node_counts(setup["stream"]["id"]).get("meter", {}).get("failed", 0) == 0
    assert [str(e.stream_id) for e in NodeError.objects.all()] == [second["id"]]


def test_one_streams_failing_flush_does_not_cost_another_streams_flushes(client, setup):
    """Flushes of several streams go through one batch: a flush failing downstream in
    one stream must not take out a flush of another."""
    strict = simple_stream(setup["collector"]["id"], name="Strict billing")
    strict["nodes"][-1] = {
        "id": "billing",
        "name": "Needs a field",
        "type": "transforms/validate",
        "params": {"schema": {"required": ["nope"]}},
    }
    second = import_stream(client, strict)
    set_stream(client, second["id"], enabled=True)
    create_meter(
        client,
        {
            "userId": "101",
            "meterKey": meter_key(client, second["id"]),
            "meterTypeId": setup["type"]["id"],
        },
    )
    Meter.objects.update(period_end=timezone.now() - timedelta(seconds=1))
    meters_reset_due()
    assert flushes_run() == 4
    assert StreamLogLine.objects.filter(stream_id=setup["stream"]["id"]).count() == 3
    assert NodeError.objects.get(stream_id=second["id"]).node_id == "billing"


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("logs", {"limit": "many"}, "limit"),
        ("logs", {"limit": 101}, "limit"),
        ("logs", {"before": "-1"}, "before"),
        ("logs", {"before": "yesterday"}, "before"),
        ("executions", {"limit": "x"}, "limit"),
        ("executions", {"limit": 1000}, "limit"),
    ],
)
def test_bad_list_parameters_are_400_naming_them(client, setup, path, query, field):
    response = client.get(f"{STREAMS}/{setup['stream']['id']}/{path}", query)
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == field


@pytest.mark.parametrize("stream_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_unknown_streams_are_404_on_every_runtime_endpoint(client, setup, stream_id):
    for method, path, body in (
        ("get", "logs", None),
        ("get", "executions", None),
        ("post", "executions", {}),
        ("post", "preview", {"records": [{}]}),
    ):
        url = f"{STREAMS}/{stream_id}/{path}"
        response = client.post(url, body) if method == "post" else client.get(url)
        assert response.status_code == 404, (method, path)
        assert response["Content-Type"].startswith("application/json")
