"""The reference product's printing example, run in Tally as it ran there.

Everything goes through the API: the stream is imported unchanged, the meter type and
meters are created with the bodies the provisioning streams' own scripts build, the
stream is executed, and the meters, threshold routing, deduplication and validation
are checked against what the export's scripts mean to happen.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import combinations
from math import floor

import pytest
from django.utils import timezone

from metering.models import Meter, MeterType
from metering.resets import meters_reset_due
from streams import tasks
from streams.models import StreamExecution, StreamLogLine
from streams.runtime.base import Item
from streams.runtime.engine import RunSettings, graph_compile, graph_run
from streams.runtime.runner import flushes_run
from tests.streams.runtime.helpers import (
    METERS,
    STREAMS,
    create_meter,
    create_meter_type,
    fixture,
    import_stream,
    meter_key,
    set_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

PRINTING = "printing-as-a-service-with-metering.json"


def script_outputs(file: str, node_name: str, payload: dict) -> list[dict]:
    """Run one script node of an export over one record, as the runtime would, and
    return what it pushed."""
    config = fixture(file)
    (node,) = [n for n in config["nodes"] if n.get("name") == node_name]
    graph = graph_compile(
        operator_id=uuid.uuid4(), stream_id=uuid.uuid4(), version_id=uuid.uuid4(), config=config
    )
    result = graph_run(
        graph,
        {node["id"]: [Item(payload, 1)]},
        states={},
        memos={},
        run=RunSettings(now=datetime.now(UTC), side_effects=False, samples=True),
        only=[node["id"]],
    )
    assert not result.failures, result.failures
    return [entry["payload"] for entry in result.samples[node["id"]]["outputs"]]


def sheets_by_printer() -> dict[str, list[int]]:
    """What "Simulate Usage" makes of counter values 1 to 10, per printer in order:
    printer ((v-1) % 5) + 101 prints floor(v * 3.55) sheets; count 3 is made invalid."""
    sheets: dict[str, list[int]] = {}
    for value in range(1, 11):
        if value % 10 == 3:
            continue
        sheets.setdefault(str((value - 1) % 5 + 101), []).append(floor(value * 355 / 100))
    return sheets


def metered(client, key: str) -> dict[str, tuple[object, int]]:
    meters = client.get(METERS, {"meterKey": key, "limit": 100}).json()["meters"]
    return {m["userId"]: (m["value"], m["meterMetaData"]["recordCount"]) for m in meters}


def expected_for(counts: dict[str, int]) -> dict[str, int]:
    """The sums the meters must hold, given how many of each printer's records reached
    them. The example's eventId joins the printer id and the timestamp's text, whose
    resolution is a second: two events of one printer within a second (random times
    over a minute, so rarely) are duplicates, and the first one is kept, as in the
    reference product."""
    sheets = sheets_by_printer()
    return {printer: sum(sheets[printer][:count]) for printer, count in counts.items()}


@pytest.fixture
def printing(client):
    stream = import_stream(client, fixture(PRINTING))
    set_stream(client, stream["id"], processingType="batch", enabled=True)
    key = meter_key(client, stream["id"])
    (body,) = script_outputs("provisioning-meter-types.json", "Prepare Meter Types", {"value": 1})
    meter_type = create_meter_type(client, body["meterType"])
    assert meter_type["category"] == "Printing"
    # A new type is active from its creation (the API refuses an activeFrom in the
    # past) and the simulated printers report up to a minute back: as if the type had
    # been provisioned the day before, its start moves back a day.
    MeterType.objects.filter(pk=meter_type["id"]).update(
        active_from=timezone.now() - timedelta(days=1)
    )
    bodies = script_outputs(
        "provisioning-meters.json",
        "Prepare Meters",
        {"httpResponse": {"meterTypes": [meter_type]}},
    )
    meters = {}
    for body in bodies:
        # The provisioning script says "REPLACE THIS VALUE" with the meter node's key.
        meter = create_meter(client, {**body["meter"], "meterKey": key})
        meters[meter["userId"]] = meter
    assert sorted(meters) == ["101", "102", "103", "104", "105"]
    # Two printers get limits the example's small run reaches: 105 a capacity of 50
    # (its 90 % EMAIL_MAINTENANCE fires at 45), 104 a DEACTIVATE_PRINTER at 40.
    client.patch(f"{METERS}/{meters['105']['id']}", {"capacity": 50})
    client.patch(
        f"{METERS}/{meters['104']['id']}",
        {
            "thresholds": [
                {
                    "name": "DEACTIVATE_PRINTER",
                    "absoluteValue": 40,
                    "customFields": {"action": "DEACTIVATE_PRINTER"},
                }
            ]
        },
    )
    return {"stream": stream, "key": key, "meters": meters}


def execute(client, stream_id: str) -> dict:
    response = client.post(f"{STREAMS}/{stream_id}/executions")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "QUEUED"
    tasks.execution_run(response.json()["id"])
    (latest, *_) = client.get(f"{STREAMS}/{stream_id}/executions").json()["executions"]
    assert latest["id"] == response.json()["id"]
    return latest


def logged(stream_id: str, node_name: str) -> list[dict]:
    return [
        line.payload
        for line in StreamLogLine.objects.filter(stream_id=stream_id, node_name=node_name).order_by(
            "id"
        )
    ]


def test_the_printing_example_meters_routes_and_counts_as_intended(client, printing):
    stream_id = printing["stream"]["id"]
    execution = execute(client, stream_id)
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["recordsRead"] == 10
    # Count 3 is made invalid by the script: it fails at Validate with the schema's words.
    assert execution["recordsFailed"] == 1, execution["errors"]
    (error,) = execution["errors"]
    assert error["nodeName"] == "Validate"
    assert "printerId" in error["reason"] and "integer" in error["reason"]

    nodes = execution["nodes"]
    by_name = {node["name"]: node["id"] for node in fixture(PRINTING)["nodes"]}
    # 12 pushes for 9 good counts minus the invalid one (counts 5 and 10 push twice).
    assert nodes[by_name["Simulate Usage"]]["out"] == 11
    assert nodes[by_name["Validate"]]["failed"] == 1
    dedupe = nodes[by_name["Deduplicate 1"]]
    assert dedupe["in"] == 11 and dedupe["failed"] == 0
    state = metered(client, printing["key"])
    counts = {printer: count for printer, (_, count) in state.items()}
    assert dedupe["out"] == sum(counts.values())
    assert 9 - sum(counts.values()) <= 1  # a collision in a second is already rare
    expected = expected_for(counts)
    assert {printer: value for printer, (value, _) in state.items()} == expected

    # Threshold records leave the meter and the split routes them by custom field
    # (105 at 90 % of a capacity of 50, 104 at 40 sheets: both reached unless one of
    # their two records was a same-second duplicate).
    emails = logged(stream_id, "Email maintenance")
    assert len(emails) == (expected["105"] >= 45)
    for email in emails:
        assert email["userId"] == "105"
        assert email["thresholdReached"]["name"] == "EMAIL_MAINTENANCE"
        assert "reached 90" in email["message"]
    deactivations = logged(stream_id, "Deactivate printer")
    assert len(deactivations) == (expected["104"] >= 40)
    for deactivate in deactivations:
        assert deactivate["userId"] == "104"
        assert deactivate["message"].endswith("Prints taken: 40")

    # Low ink (printer 104) and "Needs service" (102 and 105), once per printer a day.
    (ink,) = logged(stream_id, "To Order Ink")
    assert ink == {
        "customer": "Guz Inc",
        "department": "Special Ops",
        "printerId": 104,
        "inkLevel": 15,
    }
    service = logged(stream_id, "To Service")
    assert sorted(line["printerId"] for line in service) == [102, 105]


def test_a_second_execution_continues_the_scripts_state(client, printing):
    stream_id = printing["stream"]["id"]
    execute(client, stream_id)
    first = metered(client, printing["key"])
    second = execute(client, stream_id)
    assert second["status"] == "SUCCEEDED"
    # state.node.count goes on from 10: count 13 is the invalid one now, value 3 again.
    assert second["recordsFailed"] == 1
    totals = metered(client, printing["key"])
    # Same-second duplicates may now also match events of the first execution, so any
    # of a printer's records may be the one left out: the added value is the sum of as
    # many of its records as reached the meter.
    # The simulated timestamps are random within the last minute, so which records
    # collide is chance: a few at most, and what did reach each meter adds up exactly.
    sheets = sheets_by_printer()
    left_out = 0
    for printer, (value, count) in totals.items():
        added = count - first[printer][1]
        left_out += len(sheets[printer]) - added
        possible = {sum(chosen) for chosen in combinations(sheets[printer], added)}
        assert value - first[printer][0] in possible
    assert 0 <= left_out <= 2
    # Deduplicate 2 and 3 keep printer ids for a day: no second ink or service line.
    assert len(logged(stream_id, "To Order Ink")) == 1
    assert len(logged(stream_id, "To Service")) == 2


def test_a_closed_period_goes_to_billing_with_the_meters_custom_fields(client, printing):
    stream_id = printing["stream"]["id"]
    execute(client, stream_id)
    before = metered(client, printing["key"])
    Meter.objects.filter(meter_key=printing["key"]).update(
        period_end=timezone.now() - timedelta(seconds=1)
    )
    meters_reset_due()
    assert flushes_run() == 5
    billing = {line["printerId"]: line for line in logged(stream_id, "To Billing")}
    assert set(billing) == {"101", "102", "103", "104", "105"}
    assert billing["101"]["sheets"] == before["101"][0] > 0
    assert billing["101"]["brand"] == "Acme" and billing["101"]["model"] == "MPS-Plus"
    assert billing["104"]["customer"] == "Guz Inc"


def test_executions_are_listed_newest_first(client, printing):
    stream_id = printing["stream"]["id"]
    ids = [execute(client, stream_id)["id"] for _ in range(3)]
    listed = client.get(f"{STREAMS}/{stream_id}/executions").json()["executions"]
    assert [e["id"] for e in listed] == list(reversed(ids))
    assert StreamExecution.objects.filter(status="SUCCEEDED").count() == 3


def test_a_realtime_stream_is_not_executed_on_demand(client, acme):
    from tests.streams.runtime.helpers import create_collector, simple_stream

    collector = create_collector(client)
    stream = import_stream(client, simple_stream(collector["id"]))
    response = client.post(f"{STREAMS}/{stream['id']}/executions")
    assert response.status_code == 409
    assert "realtime" in response.json()["message"]
