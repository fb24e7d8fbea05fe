"""`transforms/script_aggregate` as a user reaches it: records ingested into a collector,
sessions folded by the node's JavaScript across batches, flushed by the script or by Beat
when they time out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from collection.models import Record
from streams.models import AggregationFlush, AggregationSession, AggregationStore
from streams.runtime import runner
from tests.streams.runtime.helpers import (
    create_collector,
    import_stream,
    ingest,
    logged,
    process_all,
    set_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

COUNTING = """
session.data.count = (session.data.count || 0) + 1;
session.data.total = (session.data.total || 0) + payload.amount;
session.data.customer = payload.customer;
if (payload.last) {
    await session.flush();
}
"""


@pytest.fixture
def collector(client):
    return create_collector(client, "Orders")


def script_stream(collector_id: str, params: dict) -> dict:
    return {
        "name": "Orders per customer",
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
                "params": params,
            },
            {"id": "out", "name": "Out", "type": "writers/log", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "sessions"},
            {"id": "e2", "from": "sessions", "to": "out"},
        ],
    }


def start(client, collector, **params) -> dict:
    params = {
        "groupByRules": [{"fields": ["customer", "order"]}],
        "onTransform": COUNTING,
        **params,
    }
    stream = import_stream(client, script_stream(collector["id"], params))
    set_stream(client, stream["id"], enabled=True)
    return stream


def send(client, collector, records) -> None:
    ingest(client, collector["id"], records)
    process_all(collector["id"])


def order(customer, number, amount, **extra) -> dict:
    return {"customer": customer, "order": number, "amount": amount, **extra}


def test_sessions_count_per_key_across_batches(client, collector):
    stream = start(client, collector)
    send(client, collector, [order("c1", 1, 5), order("c2", 1, 1), order("c1", 1, 2)])
    send(client, collector, [order("c1", 1, 3), order("c1", 2, 10)])
    sessions = {s.key: s for s in AggregationSession.objects.all()}
    assert set(sessions) == {"c1|1", "c2|1", "c1|2"}
    assert sessions["c1|1"].data == {"count": 3, "total": 10, "customer": "c1"}
    assert sessions["c1|1"].meta["count"] == 3
    assert sessions["c1|1"].key_values == ["c1", 1]
    assert logged(stream["id"]) == []
    # The lookup endpoint finds a session from its values, in the order of the fields.
    store = AggregationStore.objects.get(stream_id=stream["id"])
    lookup = f"/aggregation/v1/stores/{store.id}/sessions/lookup"
    found = client.get(lookup, {"fieldValues": ["c1", "1"]})
    assert found.status_code == 200, found.content
    body = found.json()
    assert body["data"] == {"count": 3, "total": 10, "customer": "c1"}
    assert body["meta"]["count"] == 3
    assert set(body) == {"createdAt", "updatedAt", "timeoutAt", "data", "meta"}
    assert client.get(lookup, {"fieldValues": ["1", "c1"]}).status_code == 404
    assert client.get(lookup, {"fieldValues": ["c1"]}).status_code == 400
    # The script flushes a session: its data goes on and the session ends; the next
    # record of that key starts again.
    send(client, collector, [order("c1", 1, 1, last=True), order("c1", 1, 7)])
    assert logged(stream["id"]) == [{"count": 4, "total": 11, "customer": "c1"}]
    again = AggregationSession.objects.get(key="c1|1")
    assert again.data == {"count": 1, "total": 7, "customer": "c1"}
    assert AggregationFlush.objects.get().flush_type == "FLUSH"


def test_a_record_matching_no_rule_fails_alone(client, collector):
    start(client, collector)
    send(client, collector, [order("c1", 1, 5), {"customer": "c9", "amount": 1}])
    failed = Record.objects.get(status=Record.Status.FAILED)
    assert failed.failure_reason == (
        "Sessions (sessions): the record has none of the group-by fields (customer+order)"
    )
    assert AggregationSession.objects.get().data["total"] == 5


def test_a_throwing_record_leaves_its_session_as_it_was(client, collector):
    script = COUNTING + "\nif (payload.amount < 0) throw new Error('negative amount');"
    start(client, collector, onTransform=script)
    send(client, collector, [order("c1", 1, 5), order("c1", 1, -1), order("c1", 1, 2)])
    assert AggregationSession.objects.get().data == {"count": 2, "total": 7, "customer": "c1"}
    failed = Record.objects.get(status=Record.Status.FAILED)
    assert failed.failure_reason == "Sessions (sessions): Error: negative amount"


def test_timed_out_sessions_are_flushed_once_after_on_timeout(client, collector):
    on_timeout = "session.data.closedBy = 'timeout';"
    stream = start(
        client, collector, timeout={"value": 10, "unit": "MINUTES"}, onTimeout=on_timeout
    )
    send(client, collector, [order("c1", 1, 5), order("c2", 1, 1)])
    session = AggregationSession.objects.get(key="c1|1")
    assert session.timeout_at == session.created_at + timedelta(minutes=10)
    assert runner.sessions_flush_due() == 0
    later = timezone.now() + timedelta(minutes=11)
    assert runner.sessions_flush_due(now=later) == 2
    assert runner.sessions_flush_due(now=later) == 0
    assert sorted(logged(stream["id"]), key=lambda row: row["customer"]) == [
        {"count": 1, "total": 5, "customer": "c1", "closedBy": "timeout"},
        {"count": 1, "total": 1, "customer": "c2", "closedBy": "timeout"},
    ]
    assert not AggregationSession.objects.exists()
    assert AggregationFlush.objects.filter(flush_type="TIMEOUT").count() == 2


def test_on_timeout_may_give_a_session_more_time(client, collector):
    on_timeout = """
    if (!session.data.extended) {
        session.data.extended = true;
        session.setTimeout(new Date(Date.parse(session.timeoutAt) + 60 * 60 * 1000));
    }
    """
    stream = start(client, collector, timeout={"value": 1, "unit": "MINUTES"}, onTimeout=on_timeout)
    send(client, collector, [order("c1", 1, 5)])
    first = timezone.now() + timedelta(minutes=2)
    assert runner.sessions_flush_due(now=first) == 1
    assert logged(stream["id"]) == []
    session = AggregationSession.objects.get()
    assert session.data["extended"] is True
    assert runner.sessions_flush_due(now=first + timedelta(hours=1)) == 1
    assert [row["total"] for row in logged(stream["id"])] == [5]


def test_scripts_set_and_clear_timeouts(client, collector):
    script = (
        COUNTING
        + """
    if (payload.hold) session.clearTimeout();
    else session.setTimeout("2030-01-01T00:00:00Z");
    """
    )
    start(client, collector, onTransform=script, timeout={"value": 1, "unit": "MINUTES"})
    send(client, collector, [order("c1", 1, 5), order("c2", 1, 1, hold=True)])
    sessions = {s.key: s for s in AggregationSession.objects.all()}
    assert sessions["c1|1"].timeout_at.isoformat() == "2030-01-01T00:00:00+00:00"
    assert sessions["c2|1"].timeout_at is None


def test_the_store_belongs_to_the_node(client, collector):
    stream = start(client, collector)
    store = AggregationStore.objects.get(stream_id=stream["id"])
    assert (store.kind, store.node_id) == ("script", "sessions")
    exported = client.get(f"/stream-management/v1/streams/{stream['id']}/export").json()
    (node,) = [n for n in exported["nodes"] if n["id"] == "sessions"]
    assert node["storeId"] == str(store.id)


def test_a_record_failed_downstream_leaves_no_trace_in_the_sessions(client, collector):
    # The batch runs again without the record a later node failed (a retried pass): the
    # sessions then hold exactly what the surviving records made of them.
    script = COUNTING + "\nawait push({...session.data, bad: payload.bad || false});"
    config = script_stream(
        collector["id"],
        {"groupByRules": [{"fields": ["customer", "order"]}], "onTransform": script},
    )
    config["nodes"].insert(
        2,
        {
            "id": "check",
            "name": "Check",
            "type": "transforms/script",
            "params": {
                "transform": "if (payload.bad) throw new Error('refused'); await push(payload);"
            },
        },
    )
    config["edges"] = [
        {"id": "e1", "from": "source", "to": "sessions"},
        {"id": "e2", "from": "sessions", "to": "check"},
        {"id": "e3", "from": "check", "to": "out"},
    ]
    stream = import_stream(client, config)
    set_stream(client, stream["id"], enabled=True)
    send(
        client,
        collector,
        [order("c1", 1, 5), order("c1", 1, 100, bad=True), order("c1", 1, 2), order("c2", 1, 1)],
    )
    assert Record.objects.get(status=Record.Status.FAILED).failure_reason == (
        "Check (check): Error: refused"
    )
    sessions = {s.key: s for s in AggregationSession.objects.all()}
    assert sessions["c1|1"].data == {"count": 2, "total": 7, "customer": "c1"}
    assert sessions["c1|1"].meta["count"] == 2
    assert [row["total"] for row in logged(stream["id"])] == [5, 7, 1]


def test_a_preview_shows_session_changes_and_writes_nothing(client, collector):
    stream = start(client, collector)
    send(client, collector, [order("c1", 1, 5)])
    before = AggregationSession.objects.get()
    response = client.post(
        f"/stream-management/v1/streams/{stream['id']}/preview",
        {"records": [order("c1", 1, 2, last=True), order("c9", 3, 1)]},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    nodes = {node["nodeId"]: node for node in body["nodes"]}
    assert [o["payload"] for o in nodes["sessions"]["outputs"]] == [
        {"count": 2, "total": 7, "customer": "c1"}
    ]
    changes = {change["key"]: change for change in body["changes"]}
    assert changes["c1|1"] == {"store": changes["c1|1"]["store"], "key": "c1|1", "flushed": True}
    assert changes["c9|3"]["data"] == {"count": 1, "total": 1, "customer": "c9"}
    after = AggregationSession.objects.get()
    assert (after.data, after.updated_at) == (before.data, before.updated_at)
    assert not AggregationFlush.objects.exists()


def test_a_flush_already_claimed_is_not_sent_again(client, collector):
    # The claim is what lets a session go downstream: a session whose flush is claimed
    # (by a worker that raced this one) is not emitted a second time.
    stream = start(client, collector, timeout={"value": 1, "unit": "MINUTES"})
    send(client, collector, [order("c1", 1, 5), order("c2", 1, 1)])
    taken = AggregationSession.objects.get(key="c1|1")
    AggregationFlush.objects.create(
        operator_id=taken.operator_id,
        store_id=taken.store_id,
        session_id=taken.id,
        key=taken.key,
        flush_type="TIMEOUT",
    )
    assert runner.sessions_flush_due(now=timezone.now() + timedelta(minutes=2)) == 2
    assert [row["customer"] for row in logged(stream["id"])] == ["c2"]
    assert not AggregationSession.objects.exists()


def test_beats_task_flushes_due_sessions_and_the_sweep_forgets_old_claims(client, collector):
    from streams import tasks

    stream = start(client, collector, timeout={"value": 1, "unit": "HOURS"})
    send(client, collector, [order("c1", 1, 5), order("c2", 1, 1)])
    assert tasks.sessions_flush_due() == 0  # nothing due yet
    # An hour has gone by for one of them.
    AggregationSession.objects.filter(key="c1|1").update(
        timeout_at=timezone.now() - timedelta(seconds=1)
    )
    assert tasks.sessions_flush_due() == 1
    assert [row["customer"] for row in logged(stream["id"])] == ["c1"]
    assert list(AggregationSession.objects.values_list("key", flat=True)) == ["c2|1"]
    # Claims are kept a week, then the sweep forgets them.
    AggregationFlush.objects.update(flushed_at=timezone.now() - timedelta(days=8))
    AggregationSession.objects.update(timeout_at=timezone.now() - timedelta(seconds=1))
    assert tasks.sessions_flush_due() == 1
    tasks.streams_sweep()
    assert list(AggregationFlush.objects.values_list("key", flat=True)) == ["c2|1"]
