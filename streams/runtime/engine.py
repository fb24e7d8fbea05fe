"""Compiling a stream version into a graph, and running items through it.

`graph_run` is one pass: every node in topological order gets, at once, all the items
that reached it. `batch_run` is what callers use: it runs passes inside a savepoint
until one pass fails no record. A pass that fails records is rolled back whole and run
again without them, so the records that succeed have exactly the effects they would
have had alone (meter updates, deduplication keys, thresholds), and the failed ones
have none. Each pass removes at least one record, so this ends; in the usual case
(nothing fails) there is one pass.
"""

from __future__ import annotations

import copy
import datetime
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, transaction

import streams.runtime.functions  # noqa: F401 (registers the functions)
from streams.catalogue import declared_outputs
from streams.runtime.base import REGISTRY, Emit, Item, NodeContext, Reader

logger = logging.getLogger(__name__)

# Failures kept per node and execution for display; the counts are complete.
FIRST_ERRORS = 10


class GraphInvalid(ValueError):
    """A stored configuration the runtime cannot run (a function it does not know)."""


@dataclass(frozen=True)
class Graph:
    """A stream version, ready to run."""

    operator_id: uuid.UUID
    stream_id: uuid.UUID
    version_id: uuid.UUID
    nodes: dict[str, dict[str, Any]]
    order: tuple[str, ...]
    # (node id, output id or None) -> the nodes its edges lead to
    targets: dict[tuple[str, str | None], tuple[str, ...]]
    sources: tuple[str, ...]
    # node id -> generated keys ({"meterKey": "<uuid>"})
    keys: dict[str, dict[str, str]] = field(default_factory=dict)

    def label(self, node_id: str) -> str:
        return self.nodes[node_id].get("name") or node_id

    def nodes_of_type(self, node_type: str) -> list[dict[str, Any]]:
        return [
            self.nodes[node_id]
            for node_id in self.order
            if self.nodes[node_id]["type"] == node_type
        ]

    def downstream(self, node_id: str, output: str | None) -> tuple[str, ...]:
        return self.targets.get((node_id, output), ())

    def reachable_from(self, starts: Iterable[str]) -> list[str]:
        """The nodes `starts` lead to, themselves included, in topological order (what a
        pass that begins at them must run)."""
        successors: dict[str, list[str]] = {}
        for (source, _), targets in self.targets.items():
            successors.setdefault(source, []).extend(targets)
        seen: set[str] = set()
        stack = list(starts)
        while stack:
            node_id = stack.pop()
            if node_id not in seen:
                seen.add(node_id)
                stack.extend(successors.get(node_id, ()))
        return [node_id for node_id in self.order if node_id in seen]


def graph_compile(
    *,
    operator_id: uuid.UUID,
    stream_id: uuid.UUID,
    version_id: uuid.UUID,
    config: dict[str, Any],
    keys: dict[str, dict[str, str]] | None = None,
) -> Graph:
    """Order the nodes (Kahn's algorithm, ties in the order the export lists them) and
    index the edges by the output they leave from."""
    nodes = {node["id"]: node for node in config.get("nodes", [])}
    for node in nodes.values():
        if node.get("type") not in REGISTRY:
            raise GraphInvalid(
                f"Node {node.get('name') or node['id']}: {node.get('type')!r} cannot run."
            )
    targets: dict[tuple[str, str | None], list[str]] = {}
    indegree = dict.fromkeys(nodes, 0)
    for edge in config.get("edges", []):
        source, target = edge.get("from"), edge.get("to")
        if source not in nodes or target not in nodes:
            continue
        output = edge.get("output") if declared_outputs(nodes[source]) is not None else None
        targets.setdefault((source, output), []).append(target)
        indegree[target] += 1
    position = {node_id: index for index, node_id in enumerate(nodes)}
    ready = sorted((node_id for node_id, count in indegree.items() if count == 0), key=position.get)
    order: list[str] = []
    successors: dict[str, list[str]] = {}
    for (source, _), found in targets.items():
        successors.setdefault(source, []).extend(found)
    while ready:
        node_id = ready.pop(0)
        order.append(node_id)
        for target in successors.get(node_id, ()):
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
                ready.sort(key=position.get)
    if len(order) != len(nodes):
        raise GraphInvalid("The edges form a cycle.")
    sources = tuple(
        node_id for node_id in order if issubclass(REGISTRY[nodes[node_id]["type"]], Reader)
    )
    return Graph(
        operator_id=operator_id,
        stream_id=stream_id,
        version_id=version_id,
        nodes=nodes,
        order=tuple(order),
        targets={key: tuple(value) for key, value in targets.items()},
        sources=sources,
        keys=keys or {},
    )


@dataclass
class Failure:
    stream_id: uuid.UUID
    node_id: str
    node_name: str
    reason: str

    def describe(self) -> str:
        """How a failure is stored on its record (`failure_reason`); `read` reads it."""
        return f"{self.node_name} ({self.node_id}): {self.reason}"

    @staticmethod
    def read(text: str | None) -> tuple[str, str, str]:
        """(node id, node name, reason) of a stored failure; the node is empty when the
        text did not come from `describe` (a processor error, say)."""
        match = _DESCRIBED.fullmatch(text or "")
        if match is None:
            return "", "", text or ""
        return match["node_id"], match["name"], match["reason"]


# `Failure.describe`'s text: the node id is the last parenthesis before the first ": "
# that follows one, so a node name may hold parentheses of its own.
_DESCRIBED = re.compile(r"(?P<name>.*?) \((?P<node_id>[^()]+)\): (?P<reason>.*)", re.S)


@dataclass
class PassResult:
    """What one pass did: failures by origin, per-node counts, and the node contexts
    (their logs, state and preview changes)."""

    failures: dict[int, Failure] = field(default_factory=dict)
    # node -> (in, out) of this pass; records failed in earlier passes are not in it
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    contexts: dict[str, NodeContext] = field(default_factory=dict)
    # Up to 10 inputs and outputs per node, for previews.
    samples: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


@dataclass
class RunSettings:
    """What a run needs besides its items."""

    now: datetime.datetime
    side_effects: bool = True
    end_of_execution: bool = False
    samples: bool = False


def graph_run(
    graph: Graph,
    inputs: dict[str, list[Item]],
    *,
    states: dict[str, dict[str, Any]],
    memos: dict[str, dict[Any, Any]],
    run: RunSettings,
    only: Iterable[str] | None = None,
) -> PassResult:
    """One pass over the graph. `inputs` gives items to nodes directly (a reader's, or
    the targets of a meter's reset output); `only`, when given, limits the pass to
    those nodes (and needs them in topological order)."""
    result = PassResult()
    pending: dict[str, list[Item]] = {node_id: list(items) for node_id, items in inputs.items()}
    for node_id in only if only is not None else graph.order:
        node = graph.nodes[node_id]
        items = pending.pop(node_id, [])
        if result.failures and items:
            items = [item for item in items if item.origin not in result.failures]
        ctx = NodeContext(
            operator_id=graph.operator_id,
            stream_id=graph.stream_id,
            version_id=graph.version_id,
            node=node,
            now=run.now,
            state=copy.deepcopy(states.get(node_id, {})),
            side_effects=run.side_effects,
            keys=graph.keys.get(node_id, {}),
            memo=memos.setdefault(node_id, {}),
        )
        result.contexts[node_id] = ctx
        function = REGISTRY[node["type"]](ctx)
        emit = Emit()
        try:
            if items:
                if function.replay_on_rerun:
                    _process_replaying(function, items, emit, ctx)
                else:
                    function.process(items, emit)
            function.finish(emit, end_of_execution=run.end_of_execution)
        except DatabaseError:
            raise  # the transaction is unusable: the caller decides
        except Exception as exc:
            # A fault of the function itself fails the node's records, not the worker.
            logger.exception("Node %s of stream %s raised", node_id, graph.stream_id)
            for item in items:
                emit.fail(item, f"{type(exc).__name__}: {exc}")
            emit.outputs.clear()
        name = graph.label(node_id)
        for origin, reason in emit.failed.items():
            result.failures.setdefault(origin, Failure(graph.stream_id, node_id, name, reason))
        out = 0
        for output, produced in emit.outputs.items():
            if result.failures:
                produced = [item for item in produced if item.origin not in result.failures]
            out += len(produced)
            targets = graph.downstream(node_id, output)
            for index, target in enumerate(targets):
                # Each branch gets its own copy, so no function sees another's changes.
                batch = (
                    produced
                    if index == 0
                    else [Item(copy.deepcopy(i.payload), i.origin) for i in produced]
                )
                pending.setdefault(target, []).extend(batch)
            if run.samples:
                result.samples.setdefault(node_id, {}).setdefault("outputs", []).extend(
                    {"output": output, "payload": copy.deepcopy(item.payload)}
                    for item in produced[:10]
                )
        if run.samples:
            sample = result.samples.setdefault(node_id, {})
            sample.setdefault("outputs", [])
            sample["outputs"] = sample["outputs"][:10]
            sample["inputs"] = [copy.deepcopy(item.payload) for item in items[:10]]
        result.counts[node_id] = (len(items), out)
    return result


def _process_replaying(function, items: list[Item], emit: Emit, ctx: NodeContext) -> None:
    """Run a replayed function (see Function.replay_on_rerun). The first pass records
    what it emitted per origin, what it was given, and the state it ended with; later
    passes of the same batch emit those records again for the origins they still hold
    and that reach it unchanged, and run the function for the rest (starting from the
    recorded state). An input can change between passes when an upstream node folds
    records together (an aggregator without the failed record)."""
    memo = ctx.memo
    seen: dict[int, list[tuple[str | None, Any]]] | None = memo.get("replay")
    if seen is None:
        function.process(items, emit)
        # Functions never change their input (base.py), so the emitted payloads and the
        # inputs can be kept as they are; a replay hands out copies.
        recorded: dict[int, list[tuple[str | None, Any]]] = {item.origin: [] for item in items}
        for output, produced in emit.outputs.items():
            for item in produced:
                recorded.setdefault(item.origin, []).append((output, item.payload))
        given: dict[int, list[Any]] = {}
        for item in items:
            given.setdefault(item.origin, []).append(item.payload)
        memo["replay"] = recorded
        memo["inputs"] = given
        memo["state"] = copy.deepcopy(ctx.state)
        return
    ctx.state.clear()
    ctx.state.update(copy.deepcopy(memo["state"]))
    given_now: dict[int, list[Any]] = {}
    for item in items:
        given_now.setdefault(item.origin, []).append(item.payload)
    inputs = memo["inputs"]
    for origin, payloads in given_now.items():
        if origin in seen and inputs.get(origin) != payloads:
            del seen[origin]  # what it was given changed: run it again
    fresh = [item for item in items if item.origin not in seen]
    if fresh:
        extra = Emit()
        function.process(fresh, extra)
        for item in fresh:
            inputs[item.origin] = given_now[item.origin]
            seen[item.origin] = []
        for output, produced in extra.outputs.items():
            for item in produced:
                seen.setdefault(item.origin, []).append((output, item.payload))
        for origin, reason in extra.failed.items():
            emit.failed.setdefault(origin, reason)
        memo["state"] = copy.deepcopy(ctx.state)
    # Everything goes out in input order, replayed or not.
    done: set[int] = set()
    for item in items:
        if item.origin not in done and item.origin not in emit.failed:
            done.add(item.origin)
            for output, payload in seen.get(item.origin, ()):
                emit(Item(copy.deepcopy(payload), item.origin), output)


@dataclass
class BatchResult:
    """The outcome of a batch: failures by origin (accumulated over the passes) and the
    successful pass."""

    failures: dict[int, Failure]
    final: list[PassResult]
    passes: int


def batch_run(
    runs: list[tuple[Graph, dict[str, list[Item]], list[str] | None]],
    *,
    states: dict[tuple[uuid.UUID, str], dict[str, Any]],
    run: RunSettings,
) -> BatchResult:
    """Run several graphs over their inputs as one unit, inside savepoints of the
    caller's transaction, until a pass fails nothing (see the module docstring). A
    record failed by any graph is taken out of all of them: its effects apply nowhere.

    `runs` holds (graph, inputs, only) triples; `states` the stored node states by
    (stream id, node id)."""
    failures: dict[int, Failure] = {}
    memos: dict[tuple[uuid.UUID, str], dict[str, dict]] = {}
    graph_states = {
        graph.stream_id: {
            node_id: states.get((graph.stream_id, node_id), {}) for node_id in graph.nodes
        }
        for graph, _, _ in runs
    }
    passes = 0
    while True:
        passes += 1
        savepoint = transaction.savepoint() if run.side_effects else None
        results = []
        new: dict[int, Failure] = {}
        for graph, inputs, only in runs:
            kept = {
                node_id: [item for item in items if item.origin not in failures]
                for node_id, items in inputs.items()
            }
            result = graph_run(
                graph,
                kept,
                states=graph_states[graph.stream_id],
                memos=memos.setdefault((graph.stream_id, graph.version_id), {}),
                run=run,
                only=only,
            )
            results.append(result)
            for origin, failure in result.failures.items():
                new.setdefault(origin, failure)
        # A preview writes nothing, so it has nothing to roll back: one pass shows the
        # failures and the records that got through alike.
        if not new or not run.side_effects:
            if savepoint is not None:
                transaction.savepoint_commit(savepoint)
            failures.update(new)
            return BatchResult(failures, results, passes)
        transaction.savepoint_rollback(savepoint)
        failures.update(new)
        # Each pass took out at least one more record; a pass with nothing left to take
        # out cannot fail again, so this ends.
