"""Running streams for real: realtime batches, batch executions, meter flushes and
previews, with what they leave behind (node state, counters, errors, log lines).

Everything here runs inside the caller's transaction: the records' new statuses, the
execution's status or the flush rows' deletion commit with the effects, or nothing does.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import uuid
from collections import Counter
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from collection.processing import ProcessorRetry
from common.json import encode, format_datetime
from streams.models import (
    NodeCounter,
    NodeCounterDelta,
    NodeError,
    NodeState,
    PendingFlush,
    Stream,
    StreamKey,
    StreamLogLine,
    StreamVersion,
)
from streams.runtime.base import REGISTRY, Item, NodeContext, fixed_output_id
from streams.runtime.engine import (
    FIRST_ERRORS,
    BatchResult,
    Failure,
    Graph,
    RunSettings,
    batch_run,
    graph_compile,
)

logger = logging.getLogger(__name__)

ONLINE_COLLECTION = "readers/online_collection"

# Compiled graphs by (version id, version saved at): the latest version is rewritten in
# place on import, so its save time tells a stale entry.
_graphs: dict[tuple[uuid.UUID, datetime.datetime], Graph] = {}
_GRAPH_CACHE_SIZE = 256


class StateConflict(ProcessorRetry):
    """Another worker saved a node's state first; the batch is claimed again."""


def graph_for(version: StreamVersion) -> Graph:
    key = (version.pk, version.created_at)
    graph = _graphs.get(key)
    if graph is None:
        keys: dict[str, dict[str, str]] = {}
        for node_id, kind, value in StreamKey.objects.filter(
            stream_id=version.stream_id
        ).values_list("node_id", "kind", "value"):
            keys.setdefault(node_id, {})[kind] = str(value)
        graph = graph_compile(
            operator_id=version.operator_id,
            stream_id=version.stream_id,
            version_id=version.pk,
            config=version.config,
            keys=keys,
        )
        if len(_graphs) >= _GRAPH_CACHE_SIZE:
            _graphs.clear()
        _graphs[key] = graph
    return graph


def realtime_versions(*, operator_id, collector_id) -> list[StreamVersion]:
    """The latest versions of the operator's enabled realtime streams that read this
    collector (jsonb containment finds the reader node)."""
    reader = [{"type": ONLINE_COLLECTION, "params": {"collectorId": str(collector_id)}}]
    return list(
        StreamVersion.objects.filter(
            operator_id=operator_id,
            is_latest=True,
            stream__enabled=True,
            stream__processing_type=Stream.ProcessingType.REALTIME,
            config__nodes__contains=reader,
        ).order_by("stream__created_at", "stream_id")
    )


# -- State, counters, errors, logs ------------------------------------------------------


def states_load(stream_ids) -> tuple[dict, dict]:
    """Stored node states and their revisions, by (stream id, node id)."""
    states, revisions = {}, {}
    for row in NodeState.objects.filter(stream_id__in=list(stream_ids)):
        states[(row.stream_id, row.node_id)] = row.state
        revisions[(row.stream_id, row.node_id)] = row.revision
    return states, revisions


def _states_save(graphs_and_results, states, revisions, now) -> None:
    """Compare-and-set every node state the batch changed."""
    for graph, result in graphs_and_results:
        for node_id, ctx in result.contexts.items():
            key = (graph.stream_id, node_id)
            if ctx.state == states.get(key, {}):
                continue
            revision = revisions.get(key)
            if revision is None:
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"""
                        INSERT INTO {NodeState._meta.db_table}
                            (operator_id, stream_id, node_id, state, revision, updated_at)
                        VALUES (%s, %s, %s, %s::jsonb, 1, %s)
                        ON CONFLICT (stream_id, node_id) DO NOTHING
                        """,  # noqa: S608 (our table)
                        [
                            graph.operator_id,
                            graph.stream_id,
                            node_id,
                            encode(ctx.state).decode(),
                            now,
                        ],
                    )
                    saved = cursor.rowcount
            else:
                saved = NodeState.objects.filter(
                    stream_id=graph.stream_id, node_id=node_id, revision=revision
                ).update(state=ctx.state, revision=revision + 1, updated_at=now)
            if not saved:
                raise StateConflict(f"The state of node {node_id} changed meanwhile.")


def node_counts_of(
    outcome: BatchResult, graphs: list[Graph]
) -> dict[tuple[uuid.UUID, str], dict[str, int]]:
    """In, out and failed per (stream, node) for a finished batch: what the successful
    pass counted, plus the records earlier passes failed at each node (they count as
    having come in)."""
    failed: Counter = Counter(
        (failure.stream_id, failure.node_id) for failure in outcome.failures.values()
    )
    counts = {}
    for graph, result in zip(graphs, outcome.final, strict=True):
        for node_id, (count_in, count_out) in result.counts.items():
            key = (graph.stream_id, node_id)
            counts[key] = {"in": count_in + failed[key], "out": count_out, "failed": failed[key]}
    return counts


def _outcome_save(graphs: list[Graph], outcome: BatchResult, now) -> None:
    """Counter deltas, the last error per node, and log lines."""
    operators = {graph.stream_id: graph.operator_id for graph in graphs}
    deltas = [
        NodeCounterDelta(
            operator_id=operators[stream_id],
            stream_id=stream_id,
            node_id=node_id,
            kind=kind,
            count=count,
        )
        for (stream_id, node_id), counts in node_counts_of(outcome, graphs).items()
        for kind, count in counts.items()
        if count
    ]
    if deltas:
        NodeCounterDelta.objects.bulk_create(deltas)
    last_failure = {
        (failure.stream_id, failure.node_id): failure for failure in outcome.failures.values()
    }
    if last_failure:
        # One upsert for every node that failed records, not a round trip per node.
        NodeError.objects.bulk_create(
            [
                NodeError(
                    operator_id=operators[stream_id],
                    stream_id=stream_id,
                    node_id=node_id,
                    node_name=failure.node_name[:200],
                    reason=failure.reason,
                    at=now,
                )
                for (stream_id, node_id), failure in sorted(last_failure.items())
            ],
            update_conflicts=True,
            unique_fields=["stream", "node_id"],
            update_fields=["operator", "node_name", "reason", "at"],
        )
    for graph, result in zip(graphs, outcome.final, strict=True):
        log_lines_save(graph, [line for ctx in result.contexts.values() for line in ctx.logs], now)


def log_lines_save(graph: Graph, lines, now) -> None:
    """Store a graph's log lines (writers/log records, script log calls)."""
    if lines:
        StreamLogLine.objects.bulk_create(
            StreamLogLine(
                operator_id=graph.operator_id,
                stream_id=graph.stream_id,
                node_id=line.node_id,
                node_name=graph.label(line.node_id)[:200],
                level=line.level,
                message=line.message[:2000],
                payload=line.payload,
                created_at=now,
            )
            for line in lines
        )


def batch_finish(
    runs: list[tuple[Graph, dict[str, list[Item]], list[str] | None]],
    *,
    run: RunSettings,
) -> BatchResult:
    """Run the graphs as one unit and save what they leave behind."""
    states, revisions = states_load({graph.stream_id for graph, _, _ in runs})
    outcome = batch_run(runs, states=states, run=run)
    if run.side_effects:
        graphs = [graph for graph, _, _ in runs]
        _states_save(list(zip(graphs, outcome.final, strict=True)), states, revisions, run.now)
        _outcome_save(graphs, outcome, run.now)
    return outcome


# -- Realtime: the collection work queue's processor ----------------------------------


class RealtimeProcessor:
    """Runs every enabled realtime stream reading a collector over a claimed batch."""

    def __init__(self, versions: list[StreamVersion], collector_id) -> None:
        self.versions = versions
        self.collector_id = str(collector_id)

    def process(self, records) -> dict[int, str]:
        now = timezone.now()
        # Built once and shared by every reader: functions never change their input.
        payloads = [record_payload(record) for record in records]
        runs = []
        for version in self.versions:
            graph = graph_for(version)
            inputs: dict[str, list[Item]] = {}
            for node in graph.nodes_of_type(ONLINE_COLLECTION):
                if str(node.get("params", {}).get("collectorId")) == self.collector_id:
                    inputs[node["id"]] = [
                        Item(payload, record.id)
                        for payload, record in zip(payloads, records, strict=True)
                    ]
            runs.append((graph, inputs, None))
        outcome = batch_finish(runs, run=RunSettings(now=now))
        return {origin: failure.describe() for origin, failure in outcome.failures.items()}


def record_payload(record) -> dict[str, Any]:
    """What a stream sees of a stored record: the record as sent, its envelope fields
    included (the timestamp as ISO 8601 UTC; empty envelope fields left out)."""
    payload: dict[str, Any] = {
        "id": record.record_id,
        "timestamp": format_datetime(record.event_time),
    }
    for name, value in (
        ("type", record.type),
        ("customerId", record.customer_id),
        ("accountId", record.account_id),
    ):
        if value:
            payload[name] = value
    if isinstance(record.payload, dict):
        payload.update(record.payload)
    return payload


def realtime_processor_for(collector) -> RealtimeProcessor | None:
    versions = realtime_versions(operator_id=collector.operator_id, collector_id=collector.pk)
    return RealtimeProcessor(versions, collector.pk) if versions else None


# -- Counters read back ------------------------------------------------------------------


def node_counts(stream_id) -> dict[str, dict[str, int]]:
    """{node id: {"in", "out", "failed"}}: folded counters plus deltas not folded yet."""
    counts: dict[str, dict[str, int]] = {}
    for model in (NodeCounter, NodeCounterDelta):
        for node_id, kind, count in model.objects.filter(stream_id=stream_id).values_list(
            "node_id", "kind", "count"
        ):
            entry = counts.setdefault(node_id, {"in": 0, "out": 0, "failed": 0})
            entry[kind] += count
    return counts


def first_errors(failures: dict[int, Failure]) -> list[dict[str, str]]:
    return [
        {"nodeId": failure.node_id, "nodeName": failure.node_name, "reason": failure.reason}
        for failure in list(failures.values())[:FIRST_ERRORS]
    ]


def reader_items(graph: Graph, node_id: str, now) -> list[Any]:
    """What a batch stream's reader produces for one execution."""
    node = graph.nodes[node_id]
    ctx = NodeContext(
        operator_id=graph.operator_id,
        stream_id=graph.stream_id,
        version_id=graph.version_id,
        node=node,
        now=now,
    )
    return REGISTRY[node["type"]](ctx).read()


# -- Meter flushes: closed periods down the meter node's `reset` output ------------------


def periods_queue_flushes(period_ids: list) -> None:
    """Reset listener: one pending flush per closed period whose meter belongs to a meter
    node of a stream (in the reset's transaction). A disabled realtime stream's flushes
    wait until it is enabled again: a closed period is never dropped."""
    from metering.models import MeterPeriod

    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {PendingFlush._meta.db_table}
                (operator_id, stream_id, node_id, period_id, created_at)
            SELECT p.operator_id, k.stream_id, k.node_id, p.id, now()
            FROM {MeterPeriod._meta.db_table} p
            JOIN {StreamKey._meta.db_table} k
              ON k.kind = %s AND k.value::text = p.meter_key AND k.operator_id = p.operator_id
            WHERE p.id = ANY(%s::uuid[])
            ORDER BY p.id
            ON CONFLICT (stream_id, node_id, period_id) DO NOTHING
            """,  # noqa: S608 (our tables)
            [StreamKey.Kind.METER_KEY, list(period_ids)],
        )
        queued = cursor.rowcount
    if queued:
        from common.tasks import enqueue_on_commit

        enqueue_on_commit("streams.tasks.flushes_run")


def flushed_record(period, meter, meter_type) -> dict[str, Any]:
    """The record a meter node sends down `reset` when a period closes: the meter's
    fields with the closed period's values (what the reference product calls flushing
    a metered record)."""
    from metering.api.serializers import MeterSerializer
    from streams.runtime.functions.meter import _exact_groups

    # A meter deleted on reset is gone: its period still says everything but its
    # custom fields.
    record = dict(MeterSerializer(meter).data) if meter is not None else {}
    record.update(
        {
            "id": str(period.meter_id) if period.meter_id else record.get("id"),
            "userId": period.user_id,
            "meterTypeId": str(period.meter_type_id),
            "meterTypeName": meter_type.name,
            "timezone": meter_type.timezone,
            "unit": meter_type.unit,
            "meterKey": period.meter_key,
            "value": period.value,
            "periodStart": format_datetime(period.period_start),
            "periodEnd": format_datetime(period.period_end),
            "groups": sorted(period.group_breakdowns),
            "groupBreakdowns": _exact_groups(period.group_breakdowns),
            "carryFirst": period.carry_first,
            "carryLast": period.carry_last,
            "meterMetaData": {
                "recordCount": period.record_count,
                "firstEventAt": format_datetime(period.first_event_at),
                "lastEventAt": format_datetime(period.last_event_at),
            },
        }
    )
    return record


def flushes_run(*, limit: int = 500) -> int:
    """Send pending flushes down their meter nodes' `reset` outputs, a batch per call,
    each batch in one transaction with the deletion of its rows (SKIP LOCKED: workers
    take disjoint rows). Returns how many were sent."""
    from django.db import transaction

    from metering.models import Meter, MeterPeriod, MeterType

    with transaction.atomic():
        runnable = Q(stream__enabled=True) | Q(stream__processing_type=Stream.ProcessingType.BATCH)
        pending = list(
            PendingFlush.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(runnable)
            .order_by("id")[:limit]
        )
        if not pending:
            return 0
        periods = MeterPeriod.objects.in_bulk([row.period_id for row in pending])
        meters = Meter.objects.select_related("meter_type").in_bulk(
            [p.meter_id for p in periods.values() if p.meter_id]
        )
        types = MeterType.objects.in_bulk({p.meter_type_id for p in periods.values()})
        by_stream: dict[uuid.UUID, list[PendingFlush]] = {}
        for row in pending:
            by_stream.setdefault(row.stream_id, []).append(row)
        versions = {
            v.stream_id: v
            for v in StreamVersion.objects.filter(stream_id__in=list(by_stream), is_latest=True)
        }
        runs = []
        # Origins are numbered across the whole call: batch_run takes a failed origin out
        # of every graph it runs, and two streams' flushes are different records.
        origins = itertools.count(1)
        for stream_id, rows in by_stream.items():
            version = versions.get(stream_id)
            if version is None:
                continue
            graph = graph_for(version)
            inputs: dict[str, list[Item]] = {}
            for row in rows:
                node = graph.nodes.get(row.node_id)
                period = periods.get(row.period_id)
                if node is None or period is None:
                    continue
                reset = fixed_output_id(node, "reset")
                record = flushed_record(
                    period, meters.get(period.meter_id), types[period.meter_type_id]
                )
                origin = next(origins)
                for target in graph.downstream(row.node_id, reset):
                    inputs.setdefault(target, []).append(Item(record, origin))
            if inputs:
                runs.append((graph, inputs, graph.reachable_from(inputs)))
        if runs:
            batch_finish(runs, run=RunSettings(now=timezone.now()))
        PendingFlush.objects.filter(pk__in=[row.pk for row in pending]).delete()
    return len(pending)


# -- Aggregation sessions past their timeout ---------------------------------------------


def sessions_flush_due(*, limit: int = 500, now: datetime.datetime | None = None) -> int:
    """Flush sessions whose `timeoutAt` has passed, a batch per call, in one transaction
    with their deletion. Rows are taken FOR UPDATE SKIP LOCKED (a batch changing a
    session holds its row, so it is flushed after, with that change); each flush is
    claimed in AggregationFlush, so a session goes downstream once. A script store's
    `onTimeout` runs first. Returns how many sessions were handled."""
    from django.db import transaction

    from streams.models import AggregationSession, AggregationStore

    now = now or timezone.now()
    with transaction.atomic():
        runnable = Q(store__stream__enabled=True) | Q(
            store__stream__processing_type=Stream.ProcessingType.BATCH
        )
        due = list(
            AggregationSession.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(runnable, timeout_at__lte=now)
            .order_by("timeout_at", "id")[:limit]
        )
        if not due:
            return 0
        stores = AggregationStore.objects.in_bulk({session.store_id for session in due})
        by_store: dict[uuid.UUID, list] = {}
        for session in due:
            by_store.setdefault(session.store_id, []).append(session)
        stream_ids = {stores[store_id].stream_id for store_id in by_store}
        versions = {
            v.stream_id: v
            for v in StreamVersion.objects.filter(stream_id__in=stream_ids, is_latest=True)
        }
        # onTimeout scripts read state.node (their changes are not kept).
        states, _ = states_load(stream_ids)
        origins = itertools.count(1)
        inputs_by_stream: dict[uuid.UUID, dict[str, list[Item]]] = {}
        graphs: dict[uuid.UUID, Graph] = {}
        for store_id, rows in by_store.items():
            store = stores[store_id]
            version = versions.get(store.stream_id)
            graph = graph_for(version) if version is not None else None
            node = graph.nodes.get(store.node_id) if graph is not None else None
            if graph is not None:
                graphs[store.stream_id] = graph
            emitted = _timed_out_outputs(store, node, graph, rows, states, now)
            if node is None:
                continue  # the node is gone: its sessions end with nothing downstream
            inputs = inputs_by_stream.setdefault(store.stream_id, {})
            for payloads in emitted:
                origin = next(origins)
                for payload in payloads:
                    for target in graph.downstream(store.node_id, None):
                        inputs.setdefault(target, []).append(Item(payload, origin))
        runs = [
            (graphs[stream_id], inputs, graphs[stream_id].reachable_from(inputs))
            for stream_id, inputs in inputs_by_stream.items()
            if inputs
        ]
        if runs:
            batch_finish(runs, run=RunSettings(now=now))
    return len(due)


def _timed_out_outputs(store, node, graph, rows, states, now) -> list[list[Any]]:
    """Flush one store's due sessions; returns, per session, the payloads it sends
    downstream (only sessions whose flush this transaction claimed)."""
    from streams.models import AggregationStore
    from streams.runtime import sessions as session_store
    from streams.runtime.functions.script_aggregate import on_timeout_run

    stored = {row.key: session_store.StoredSession.of(row) for row in rows}
    source = ((node or {}).get("params") or {}).get("onTimeout")
    if store.kind == AggregationStore.Kind.SCRIPT and isinstance(source, str) and source.strip():
        ctx = NodeContext(
            operator_id=store.operator_id,
            stream_id=store.stream_id,
            version_id=graph.version_id,
            node=node,
            now=now,
            state=dict(states.get((store.stream_id, store.node_id), {})),
        )
        emitted = on_timeout_run(ctx, store_id=store.id, source=source, stored=stored)
        log_lines_save(graph, ctx.logs, now)
        return emitted
    won = session_store.sessions_flush(
        operator_id=store.operator_id,
        store_id=store.id,
        sessions=list(stored.values()),
        flush_type="TIMEOUT",
        now=now,
    )
    return [[_timeout_payload(session)] for session in stored.values() if session.id in won]


def _timeout_payload(session) -> dict[str, Any]:
    """A data-aggregation session as it goes downstream on its timeout."""
    payload = dict(session.data)
    payload["createdAt"] = format_datetime(session.created_at)
    if session.timeout_at is not None:
        payload["timeoutAt"] = format_datetime(session.timeout_at)
    return payload
