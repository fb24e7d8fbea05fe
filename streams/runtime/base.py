"""The contract between the stream engine and the functions it runs.

A function node gets the items that reached it, all at once (a batch is the "file"),
and hands each result to `Emit`: on to an output, or failed with a reason. Every item
remembers the source record it came from (`origin`): when any node fails an item, that
source record fails as a whole and none of its effects apply (the engine runs the batch
again without it), so functions never undo anything themselves.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(slots=True)
class Item:
    """One record travelling through the graph: its JSON (numbers are int or Decimal)
    and the id of the source record it stems from."""

    payload: Any
    origin: int


class RecordFailed(Exception):
    """Raised for one item: its source record fails at this node with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class LogLine:
    """A line for the stream's log: from `writers/log` (the record) or a script's
    `log.info/warn/error` (a message)."""

    node_id: str
    level: str  # "info" | "warn" | "error"
    message: str
    payload: Any = None


@dataclass
class NodeContext:
    """What a function may know and touch besides its items.

    `state` is the node's persistent JSON (`state.node` in scripts): loaded before the
    batch, saved with it. `side_effects` is False in a preview: a function then writes
    nothing (no meters, no keys, no HTTP) and reports what it would have done in
    `changes`.
    """

    operator_id: uuid.UUID
    stream_id: uuid.UUID
    version_id: uuid.UUID
    node: dict[str, Any]
    now: datetime.datetime
    state: dict[str, Any] = field(default_factory=dict)
    side_effects: bool = True
    logs: list[LogLine] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    # Keys generated for nodes (StreamKey): {"meterKey": "<uuid>"}.
    keys: dict[str, str] = field(default_factory=dict)
    # Survives the engine's reruns of one batch (it runs a batch again without the
    # records that failed): for work that must not be repeated, such as an HTTP call,
    # keyed by the item's origin and what was done.
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return self.node["id"]

    @property
    def node_name(self) -> str:
        return self.node.get("name") or self.node["id"]

    @property
    def params(self) -> dict[str, Any]:
        return self.node.get("params") or {}

    def log(self, level: str, message: str, payload: Any = None) -> None:
        self.logs.append(LogLine(self.node_id, level, message, payload))


class Emit:
    """Where a function puts its results. `output` is the output id an edge names
    (None for a function with a single output)."""

    def __init__(self) -> None:
        self.outputs: dict[str | None, list[Item]] = {}
        self.failed: dict[int, str] = {}  # origin -> reason (the first one wins)
        self.emitted = 0

    def __call__(self, item: Item, output: str | None = None) -> None:
        self.outputs.setdefault(output, []).append(item)
        self.emitted += 1

    def fail(self, item: Item, reason: str) -> None:
        self.failed.setdefault(item.origin, reason)


class Function:
    """A node's behaviour. One instance per node per batch run (state lives in the
    context, not the instance), except where a subclass caches something costly across
    batches itself (a compiled script).

    A function never changes the payloads it is given: it emits new objects (copying
    only what it changes). The engine relies on it to hand one payload to a branch
    without copying it, and to replay a node's output."""

    type: ClassVar[str]
    # True for functions whose results may differ from one run to the next (a script
    # reading the clock, counting in its state): when the engine runs a batch again
    # without the records that failed, it replays what such a node emitted for each
    # surviving record, and its state, instead of running it again.
    replay_on_rerun: ClassVar[bool] = False

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.params = ctx.params

    def process(self, items: list[Item], emit: Emit) -> None:
        raise NotImplementedError

    def finish(self, emit: Emit, *, end_of_execution: bool) -> None:
        """Called once after the batch has been through `process` (also when no item
        reached the node); `end_of_execution` is True at the end of a batch stream's
        execution. For flushes; most functions have nothing to do."""


class PerItem(Function):
    """A function that handles each item alone: `apply` returns (output, payload)
    pairs, or raises RecordFailed; anything else it raises fails the item too."""

    def apply(self, payload: Any) -> Iterable[tuple[str | None, Any]]:
        raise NotImplementedError

    def process(self, items: list[Item], emit: Emit) -> None:
        for item in items:
            try:
                results = list(self.apply(item.payload))
            except RecordFailed as failure:
                emit.fail(item, failure.reason)
                continue
            except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
                emit.fail(item, f"{type(exc).__name__}: {exc}")
                continue
            for output, payload in results:
                emit(Item(payload, item.origin), output)


class Reader(Function):
    """A source of a batch stream: produces the execution's items."""

    def read(self) -> list[Any]:
        raise NotImplementedError

    def process(self, items: list[Item], emit: Emit) -> None:  # readers take no input
        for item in items:
            emit(item)


REGISTRY: dict[str, type[Function]] = {}


def function(type_: str):
    """Class decorator: register a function implementation for a node type."""

    def register(cls: type[Function]) -> type[Function]:
        cls.type = type_
        REGISTRY[type_] = cls
        return cls

    return register


def fixed_output_id(node: dict[str, Any], name: str) -> str | None:
    """The id of a fixed output (`params.multiOutput.fixed.<name>.id`), which is what
    edges leaving the node name; None when the node does not declare it."""
    fixed = ((node.get("params") or {}).get("multiOutput") or {}).get("fixed") or {}
    entry = fixed.get(name)
    return entry.get("id") if isinstance(entry, dict) else None
