"""Writes for solutions and streams: importing a stream configuration."""

from __future__ import annotations

import copy
import datetime
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

import streams.runtime.functions  # noqa: F401 (registers the functions)
from collection.models import Collector
from common.errors import ServiceConflict
from common.ids import uuid_or_none
from common.tasks import enqueue_on_commit
from streams.catalogue import FUNCTIONS, declared_outputs, params_problems
from streams.models import (
    AggregationStore,
    Solution,
    Stream,
    StreamExecution,
    StreamKey,
    StreamVersion,
)
from streams.runtime.base import REGISTRY
from tenants.models import Operator

logger = logging.getLogger(__name__)

MAX_NODES = 200
ON_NAME_CONFLICT = ("overwrite", "create-new", "skip")
# Node types that get a generated key: which key, and what it names.
KEYED_TYPES = {
    "transforms/meter": (StreamKey.Kind.METER_KEY, StreamKey.Resource.METER_KEY),
    "transforms/data_aggregate": (
        StreamKey.Kind.STORE_ID,
        StreamKey.Resource.DATA_AGGREGATION_STORE,
    ),
    "transforms/script_aggregate": (
        StreamKey.Kind.STORE_ID,
        StreamKey.Resource.SCRIPT_AGGREGATION_STORE,
    ),
}
# Shown on nodes by Tally, never taken from an import (an imported copy gets its own).
GENERATED_NODE_KEYS = ("meterKey", "storeId")


class StreamConfigInvalid(ValueError):
    """A configuration that cannot be imported: (where, message) pairs, where naming the
    node or edge ("nodes[3]", "edges[0]")."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {message}" for where, message in problems))
        self.problems = problems


class StreamConflict(ServiceConflict):
    """An import that would drop nodes without allowNodeDeletion, or reuse a tag (409)."""


@dataclass(frozen=True)
class ImportResult:
    action: str  # created, overwritten, created-new, skipped
    stream: Stream
    tag: str | None


def solution_default(*, operator: Operator) -> Solution:
    """The operator's default solution, created on first use (safe against a race)."""
    solution = Solution.objects.filter(operator=operator, is_default=True).first()
    if solution is not None:
        return solution
    with transaction.atomic():
        solution, _ = Solution.objects.get_or_create(
            operator=operator, is_default=True, defaults={"name": Solution.DEFAULT_NAME}
        )
    return solution


def stream_config_problems(*, operator: Operator, config: Any) -> list[tuple[str, str]]:
    """Why `config` cannot be imported for this operator; empty when it can."""
    if not isinstance(config, dict):
        return [("streamConfig", "Must be a JSON object.")]
    problems: list[tuple[str, str]] = []
    name = config.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        problems.append(("streamConfig.name", "Must be a name of 1 to 200 characters."))
    nodes, edges = config.get("nodes"), config.get("edges", [])
    if not isinstance(nodes, list):
        return [*problems, ("streamConfig.nodes", "Must be a list of nodes.")]
    if not isinstance(edges, list):
        return [*problems, ("streamConfig.edges", "Must be a list of edges.")]
    if len(nodes) > MAX_NODES:
        return [*problems, ("streamConfig.nodes", f"At most {MAX_NODES} nodes.")]

    by_id: dict[str, dict] = {}
    for index, node in enumerate(nodes):
        where = f"streamConfig.nodes[{index}]"
        if not isinstance(node, dict) or not isinstance(node.get("id"), str) or not node["id"]:
            problems.append((where, "Must be an object with a string id."))
            continue
        label = _label(node)
        if node["id"] in by_id:
            problems.append((where, f"{label}: another node has this id."))
            continue
        by_id[node["id"]] = node
        node_type = node.get("type")
        if node_type not in FUNCTIONS:
            problems.append((where, f"{label}: unknown function type {node_type!r}."))
            continue
        for message in params_problems(node_type, node.get("params", {})):
            problems.append((where, f"{label}: {message}"))
    problems += _collector_problems(operator, nodes)

    successors: dict[str, list[str]] = {node_id: [] for node_id in by_id}
    for index, edge in enumerate(edges):
        where = f"streamConfig.edges[{index}]"
        if not isinstance(edge, dict):
            problems.append((where, "Must be an object."))
            continue
        source, target = by_id.get(edge.get("from")), by_id.get(edge.get("to"))
        if source is None or target is None:
            missing = edge.get("from") if source is None else edge.get("to")
            problems.append((where, f"Edge {edge.get('id', index)}: no node {missing!r}."))
            continue
        outputs = declared_outputs(source)
        if outputs is not None and edge.get("output") not in outputs:
            problems.append(
                (
                    where,
                    f"Edge {edge.get('id', index)}: {_label(source)} has no output "
                    f"{edge.get('output')!r}.",
                )
            )
        successors[source["id"]].append(target["id"])
    cycle = _cycle(successors)
    if cycle:
        names = " → ".join(_label(by_id[node_id]) for node_id in cycle)
        problems.append(("streamConfig.edges", f"The edges form a cycle: {names}."))
    return problems


def _label(node: dict) -> str:
    name = node.get("name")
    return f"node {node.get('id')} ({name})" if name else f"node {node.get('id')}"


def _collector_problems(operator: Operator, nodes: list) -> list[tuple[str, str]]:
    wanted = {
        index: node.get("params", {}).get("collectorId")
        for index, node in enumerate(nodes)
        if isinstance(node, dict)
        and node.get("type") == "readers/online_collection"
        and isinstance(node.get("params"), dict)
    }
    if not wanted:
        return []
    ids = {str(value) for value in wanted.values() if isinstance(value, str)}
    own = {
        str(pk)
        for pk in Collector.objects.live()
        .filter(operator=operator, pk__in=[i for i in ids if uuid_or_none(i) is not None])
        .values_list("pk", flat=True)
    }
    return [
        (f"streamConfig.nodes[{index}]", f"{_label(nodes[index])}: no such collector.")
        for index, collector_id in wanted.items()
        if str(collector_id) not in own
    ]


def _cycle(successors: dict[str, list[str]]) -> list[str] | None:
    """The nodes of one cycle, in order, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in successors:
        if start in state:
            continue
        path, stack = [], [(start, iter(successors[start]))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            for child in children:
                if state.get(child) == 1:
                    return path[path.index(child) :]
                if child not in state:
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(successors[child])))
                    break
            else:
                stack.pop()
                state[node] = 2
                path.pop()
    return None


def stream_import(
    *,
    operator: Operator,
    solution: Solution,
    config: Any,
    on_name_conflict: str = "overwrite",
    allow_node_deletion: bool = False,
    actor: dict[str, str],
) -> ImportResult:
    """Import a stream configuration into a solution.

    1. Validate it (StreamConfigInvalid names every problem); generated node keys in it
       are dropped (a copy gets keys of its own).
    2. A stream of that name in the solution: `skip` returns it; `create-new` imports a
       copy named "<name> (Copy)", "(Copy 2)"…; `overwrite` replaces its latest version,
       refusing (StreamConflict) to drop node ids unless `allow_node_deletion`.
    3. The latest version is saved; with a `tag` also a tagged snapshot (a tag used
       before on the stream is a StreamConflict); `cas` goes up by one.
    """
    problems = stream_config_problems(operator=operator, config=config)
    if problems:
        raise StreamConfigInvalid(problems)
    clean = copy.deepcopy(config)
    for node in clean["nodes"]:
        for key in GENERATED_NODE_KEYS:
            node.pop(key, None)
    tag = clean.get("tag") or None
    now = timezone.now()
    with transaction.atomic():
        # One import at a time per solution: names are checked and taken safely.
        Solution.objects.select_for_update().filter(pk=solution.pk).first()
        existing = Stream.objects.filter(solution=solution, name=clean["name"]).first()
        if existing is not None and on_name_conflict == "skip":
            return ImportResult("skipped", existing, None)
        if existing is not None and on_name_conflict == "overwrite":
            _overwrite(existing, clean, tag, allow_node_deletion, actor, now)
            return ImportResult("overwritten", existing, tag)
        action = "created"
        if existing is not None:
            clean["name"] = _free_copy_name(solution, clean["name"])
            action = "created-new"
        stream = Stream.objects.create(
            operator=operator,
            solution=solution,
            name=clean["name"],
            description=_description(clean),
            created_by=actor,
            updated_by=actor,
            created_at=now,
            updated_at=now,
        )
        _save_versions(stream, clean, tag, actor, now)
        _keys_ensure(stream, clean["nodes"])
    return ImportResult(action, stream, tag)


def _overwrite(stream, config, tag, allow_node_deletion, actor, now) -> None:
    latest = stream.versions.filter(is_latest=True).first()
    old_ids = {node.get("id") for node in (latest.config["nodes"] if latest else [])}
    dropped = sorted(old_ids - {node["id"] for node in config["nodes"]})
    if dropped and not allow_node_deletion:
        raise StreamConflict(
            "The import would delete these nodes (send allowNodeDeletion: true to allow "
            f"it): {', '.join(dropped)}."
        )
    stream.description = _description(config)
    stream.cas += 1
    stream.updated_by = actor
    stream.updated_at = now
    stream.save(update_fields=["description", "cas", "updated_by", "updated_at"])
    _save_versions(stream, config, tag, actor, now)
    _keys_ensure(stream, config["nodes"])


def _save_versions(stream, config, tag, actor, now) -> None:
    if tag and stream.versions.filter(is_latest=False, tag=tag).exists():
        raise StreamConflict(f"The stream already has a version tagged {tag!r}.")
    StreamVersion.objects.update_or_create(
        stream=stream,
        is_latest=True,
        defaults={
            "operator_id": stream.operator_id,
            "config": config,
            "tag": tag or "",
            "created_by": actor,
            "created_at": now,
        },
    )
    if tag:
        StreamVersion.objects.create(
            operator_id=stream.operator_id,
            stream=stream,
            tag=tag,
            config=config,
            created_by=actor,
            created_at=now,
        )


def _keys_ensure(stream: Stream, nodes: list[dict]) -> None:
    wanted = [
        StreamKey(
            operator_id=stream.operator_id,
            stream=stream,
            node_id=node["id"],
            kind=KEYED_TYPES[node["type"]][0],
            resource=KEYED_TYPES[node["type"]][1],
        )
        for node in nodes
        if node.get("type") in KEYED_TYPES
    ]
    StreamKey.objects.bulk_create(wanted, ignore_conflicts=True)
    store_kinds = {
        StreamKey.Resource.DATA_AGGREGATION_STORE: AggregationStore.Kind.DATA,
        StreamKey.Resource.SCRIPT_AGGREGATION_STORE: AggregationStore.Kind.SCRIPT,
    }
    AggregationStore.objects.bulk_create(
        [
            AggregationStore(
                id=key.value,
                operator_id=key.operator_id,
                stream=stream,
                node_id=key.node_id,
                kind=store_kinds[key.resource],
            )
            for key in StreamKey.objects.filter(
                stream=stream, kind=StreamKey.Kind.STORE_ID, resource__in=list(store_kinds)
            )
        ],
        ignore_conflicts=True,
    )


def _free_copy_name(solution: Solution, name: str) -> str:
    taken = set(
        Stream.objects.filter(solution=solution, name__startswith=name).values_list(
            "name", flat=True
        )
    )
    candidate, number = f"{name} (Copy)", 2
    while candidate in taken:
        candidate, number = f"{name} (Copy {number})", number + 1
    return candidate


def _description(config: dict) -> str:
    description = config.get("description")
    return description if isinstance(description, str) else ""


# Node types the stream runtime cannot run yet, with why (none today).
WAITING_TYPES: dict[str, str] = {}
RUNNABLE_TYPES: frozenset[str] = frozenset(REGISTRY) - frozenset(WAITING_TYPES)


def stream_update(*, stream: Stream, actor: dict[str, str], **fields) -> Stream:
    """Change a stream's settings: `enabled`, `processing_type`, `description`,
    `schedule` (batch streams only). Enabling a stream with a node that cannot run in
    it (or making an enabled stream one it cannot run in) is a StreamConflict naming the
    nodes."""
    processing_type = fields.get("processing_type", stream.processing_type)
    if fields.get("schedule") and processing_type != Stream.ProcessingType.BATCH:
        raise StreamConflict("Only batch streams run on a schedule.")
    if fields.get("enabled", stream.enabled) and (
        "enabled" in fields or "processing_type" in fields
    ):
        latest = stream.versions.filter(is_latest=True).first()
        idle = _idle_nodes(latest, processing_type)
        if idle:
            raise StreamConflict(f"These nodes cannot run in this stream: {', '.join(idle)}.")
    for name, value in fields.items():
        setattr(stream, name, value)
    if processing_type != Stream.ProcessingType.BATCH:
        stream.schedule = ""
    # The next scheduled run is worked out afresh by the schedule sweep.
    stream.next_run_at = None
    stream.cas += 1
    stream.updated_by = actor
    stream.updated_at = timezone.now()
    stream.save()
    return stream


def _idle_nodes(version: StreamVersion | None, processing_type: str) -> list[str]:
    """Labels of the version's nodes that cannot run in a stream of this processing
    type, each with why."""
    idle = []
    for node in version.config["nodes"] if version else []:
        node_type = node.get("type")
        if node_type not in RUNNABLE_TYPES:
            why = WAITING_TYPES.get(node_type, "the runtime cannot run this function")
            idle.append(f"{_label(node)} ({node_type}: {why})")
        elif (
            node_type == "transforms/data_aggregate"
            and processing_type != Stream.ProcessingType.BATCH
            and str((node.get("params") or {}).get("flushType") or "").upper() == "ALL_FILES"
        ):
            idle.append(
                f"{_label(node)} (flushType ALL_FILES flushes at the end of a batch "
                "execution, which a realtime stream never has: use EACH_FILE, TIMEOUT or "
                "CONDITION)"
            )
    return idle


# -- Batch executions -------------------------------------------------------------------


def execution_create(*, stream: Stream, trigger: str) -> StreamExecution:
    """Queue a run of a batch stream. A realtime stream runs as its records arrive, and
    a stream with a node that cannot run cannot be executed: both are conflicts."""
    if stream.processing_type != Stream.ProcessingType.BATCH:
        raise StreamConflict(
            "Only batch streams are executed on demand; a realtime stream runs as its "
            "collector receives records."
        )
    latest = stream.versions.filter(is_latest=True).first()
    if latest is None:
        raise StreamConflict("The stream has no configuration to run.")
    idle = _idle_nodes(latest, stream.processing_type)
    if idle:
        raise StreamConflict(f"These nodes cannot run in this stream: {', '.join(idle)}.")
    execution = StreamExecution.objects.create(
        operator_id=stream.operator_id, stream=stream, trigger=trigger
    )
    enqueue_on_commit("streams.tasks.execution_run", str(execution.pk))
    return execution


def execution_run(*, execution_id) -> StreamExecution | None:
    """Run a queued execution. RUNNING is committed first, so it shows; then the run and
    the final status commit together under the execution's row lock. A worker that dies
    mid-run leaves RUNNING with nothing applied; `executions_recover` queues it again."""
    from streams.runtime import runner
    from streams.runtime.base import Item
    from streams.runtime.engine import GraphInvalid, RunSettings

    now = timezone.now()
    started = StreamExecution.objects.filter(
        pk=execution_id, status=StreamExecution.Status.QUEUED
    ).update(status=StreamExecution.Status.RUNNING, started_at=now)
    try:
        with transaction.atomic():
            execution = (
                StreamExecution.objects.select_for_update(skip_locked=True)
                .filter(pk=execution_id, status=StreamExecution.Status.RUNNING)
                .select_related("stream")
                .first()
            )
            if execution is None:
                return None  # done, or another worker holds it
            if not started and execution.started_at is None:
                execution.started_at = now
            version = execution.stream.versions.filter(is_latest=True).first()
            graph = runner.graph_for(version)
            inputs, origin = {}, 0
            for node_id in graph.sources:
                items = []
                for payload in runner.reader_items(graph, node_id, now):
                    origin += 1
                    items.append(Item(payload, origin))
                inputs[node_id] = items
            outcome = runner.batch_finish(
                [(graph, inputs, None)],
                run=RunSettings(now=now, end_of_execution=True),
            )
            execution.status = StreamExecution.Status.SUCCEEDED
            execution.ended_at = timezone.now()
            execution.records_read = origin
            execution.records_failed = len(outcome.failures)
            execution.node_counts = {
                node_id: counts
                for (_, node_id), counts in runner.node_counts_of(outcome, [graph]).items()
            }
            execution.errors = runner.first_errors(outcome.failures)
            execution.save()
            return execution
    except (GraphInvalid, ValueError, TypeError, KeyError) as exc:
        StreamExecution.objects.filter(pk=execution_id).update(
            status=StreamExecution.Status.FAILED,
            ended_at=timezone.now(),
            errors=[{"nodeId": "", "nodeName": "", "reason": f"{type(exc).__name__}: {exc}"}],
        )
        return StreamExecution.objects.filter(pk=execution_id).first()


def executions_recover(*, older_than_seconds: int = 60) -> int:
    """Queue again the RUNNING executions nobody holds (their worker died)."""
    before = timezone.now() - datetime.timedelta(seconds=older_than_seconds)
    with transaction.atomic():
        stale = list(
            StreamExecution.objects.select_for_update(skip_locked=True).filter(
                status=StreamExecution.Status.RUNNING, started_at__lt=before
            )
        )
        for execution in stale:
            execution.status = StreamExecution.Status.QUEUED
            execution.save(update_fields=["status"])
            enqueue_on_commit("streams.tasks.execution_run", str(execution.pk))
    return len(stale)


def executions_schedule(*, now: datetime.datetime | None = None) -> int:
    """Queue the scheduled batch streams that are due, and set when each runs next."""
    from metering.schedule import next_fire

    now = now or timezone.now()
    queued = 0
    with transaction.atomic():
        due = (
            Stream.objects.select_for_update(skip_locked=True)
            .filter(enabled=True, processing_type=Stream.ProcessingType.BATCH)
            .exclude(schedule="")
        )
        for stream in due.filter(Q(next_run_at__isnull=True) | Q(next_run_at__lte=now)):
            try:
                following = next_fire(stream.schedule, "UTC", now)
            except Exception:  # a schedule that cannot be read never runs
                logger.warning(
                    "Stream %s has an unreadable schedule %r", stream.pk, stream.schedule
                )
                continue
            if stream.next_run_at is not None:
                try:
                    execution_create(stream=stream, trigger=StreamExecution.Trigger.SCHEDULE)
                    queued += 1
                except StreamConflict:
                    pass
            stream.next_run_at = following
            stream.save(update_fields=["next_run_at"])
    return queued


# -- Preview ----------------------------------------------------------------------------

PREVIEW_MAX_RECORDS = 100
PREVIEW_SAMPLES = 10


def stream_preview(
    *, stream: Stream, records: list | None = None, last_records: int | None = None
) -> dict:
    """Run the stream's latest version over some records with no side effects: nothing
    is written (the transaction is rolled back whatever happens), no HTTP request is
    made. Returns per node up to 10 inputs and outputs, the failures, and the meter
    changes that would happen."""
    from collection.models import Record
    from streams.runtime import runner
    from streams.runtime.base import Item
    from streams.runtime.engine import RunSettings, batch_run

    version = stream.versions.filter(is_latest=True).first()
    if version is None:
        raise StreamConflict("The stream has no configuration to preview.")
    graph = runner.graph_for(version)
    now = timezone.now()
    if records is None and last_records:
        collectors = [
            graph.nodes[node_id].get("params", {}).get("collectorId")
            for node_id in graph.sources
            if graph.nodes[node_id]["type"] == runner.ONLINE_COLLECTION
        ]
        found = Record.objects.filter(
            operator_id=stream.operator_id,
            collector_id__in=[c for c in collectors if uuid_or_none(c)],
        ).order_by("-received_at", "-id")[:last_records]
        records = [runner.record_payload(record) for record in reversed(list(found))]
    inputs: dict[str, list] = {}
    for node_id in graph.sources:
        payloads = records if records is not None else runner.reader_items(graph, node_id, now)
        inputs[node_id] = [Item(copy.deepcopy(p), n) for n, p in enumerate(payloads, 1)]
    states, _ = runner.states_load([stream.pk])
    with transaction.atomic():
        outcome = batch_run(
            [(graph, inputs, None)],
            states=states,
            run=RunSettings(
                now=now,
                side_effects=False,
                samples=True,
                # A batch stream's preview is one execution: ALL_FILES groups show.
                end_of_execution=stream.processing_type == Stream.ProcessingType.BATCH,
            ),
        )
        transaction.set_rollback(True)
    result = outcome.final[0]
    # One pass with nothing taken out: a node's input already holds the records that
    # failed there.
    failed_at = Counter(failure.node_id for failure in outcome.failures.values())
    nodes = []
    for node_id in graph.order:
        count_in, count_out = result.counts.get(node_id, (0, 0))
        failed = failed_at[node_id]
        sample = result.samples.get(node_id, {})
        nodes.append(
            {
                "nodeId": node_id,
                "name": graph.label(node_id),
                "type": graph.nodes[node_id]["type"],
                "in": count_in,
                "out": count_out,
                "failed": failed,
                "inputs": sample.get("inputs", [])[:PREVIEW_SAMPLES],
                "outputs": sample.get("outputs", [])[:PREVIEW_SAMPLES],
                "logs": [
                    {"level": line.level, "message": line.message, "payload": line.payload}
                    for line in result.contexts[node_id].logs[:PREVIEW_SAMPLES]
                ]
                if node_id in result.contexts
                else [],
            }
        )
    return {
        "nodes": nodes,
        "failures": [
            {"record": origin, "nodeId": f.node_id, "nodeName": f.node_name, "reason": f.reason}
            for origin, f in sorted(outcome.failures.items())
        ],
        "meterChanges": [
            change
            for ctx in result.contexts.values()
            for change in ctx.changes
            if "meterId" in change
        ],
        "changes": [
            change
            for ctx in result.contexts.values()
            for change in ctx.changes
            if "meterId" not in change
        ],
    }


# -- Housekeeping -----------------------------------------------------------------------


FLUSH_CLAIMS_KEPT = datetime.timedelta(days=7)


def streams_sweep(*, now: datetime.datetime | None = None) -> None:
    """Forget expired deduplication keys and week-old flush claims, trim each stream's
    log to its newest lines, and fold node counter deltas."""
    from django.conf import settings

    from common.db import deltas_fold
    from streams.models import (
        AggregationFlush,
        DedupeKey,
        NodeCounter,
        NodeCounterDelta,
        StreamLogLine,
    )

    now = now or timezone.now()
    DedupeKey.objects.filter(expires_at__lte=now).delete()
    # A claim only has to outlive the transactions that could race for its session.
    AggregationFlush.objects.filter(flushed_at__lte=now - FLUSH_CLAIMS_KEPT).delete()
    keep = settings.TALLY["STREAMS"]["LOG_MAX_LINES"]
    table = StreamLogLine._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM {table} l USING (
                SELECT id FROM (
                    SELECT id, row_number() OVER (PARTITION BY stream_id ORDER BY id DESC) AS n
                    FROM {table}
                ) ranked WHERE n > %s
            ) old WHERE l.id = old.id
            """,  # noqa: S608 (our table)
            [keep],
        )
    deltas_fold(
        deltas_table=NodeCounterDelta._meta.db_table,
        buckets_table=NodeCounter._meta.db_table,
        keys=["operator_id", "stream_id", "node_id", "kind"],
    )
