"""The pluggable processor registry: who turns a collector's records into results.

Collection stores records and runs a work queue; it does not know what processing
means. Another app (the stream runtime) registers a *resolver*: given a collector, it
returns a `Processor` for it, or None when nothing reads that collector. Records of a
collector without a processor stay UNPROCESSED until one appears.

A processor gets a claimed batch inside the transaction that will mark the records
PROCESSED, so whatever it writes commits with them or not at all. It returns the ids of
the records it could not process, each with a reason (they become FAILED).

Apps that keep something per processed record (reporting's indexed metrics) register a
*processed hook*: it is called with the records of a batch that became PROCESSED, in
the same transaction, so what it writes commits with the new statuses or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collection.models import Collector


@dataclass(slots=True)
class ClaimedRecord:
    """A claimed record: the Record fields a processor reads, without building a model
    instance per row (the claim is on every batch's path)."""

    id: int
    record_id: str
    operator_id: uuid.UUID
    collector_id: uuid.UUID
    ingestion_id: uuid.UUID
    type: str
    customer_id: str
    account_id: str
    event_time: datetime
    received_at: datetime
    payload: Any
    old_status: int


class ProcessorRetry(Exception):
    """Raised by a processor when the batch should simply be claimed again later (a
    concurrent change it must not overwrite): nothing is applied, no record fails."""


class Processor(Protocol):
    def process(self, records: list[ClaimedRecord]) -> dict[int, str]:
        """Process the batch; return {record pk: reason} for the records that failed."""


Resolver = Callable[["Collector"], "Processor | None"]

_resolvers: list[Resolver] = []


def register_resolver(resolver: Resolver) -> Resolver:
    """Add a resolver (usable as a decorator). The first one to answer wins."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)
    return resolver


def unregister_resolver(resolver: Resolver) -> None:
    if resolver in _resolvers:
        _resolvers.remove(resolver)


def processor_for(collector: Collector) -> Processor | None:
    for resolver in _resolvers:
        processor = resolver(collector)
        if processor is not None:
            return processor
    return None


def has_resolvers() -> bool:
    return bool(_resolvers)


ProcessedHook = Callable[[list[ClaimedRecord]], None]

_processed_hooks: list[ProcessedHook] = []


def register_processed_hook(hook: ProcessedHook) -> ProcessedHook:
    """Call `hook` with every batch's newly PROCESSED records (usable as a decorator)."""
    if hook not in _processed_hooks:
        _processed_hooks.append(hook)
    return hook


def processed_hooks() -> tuple[ProcessedHook, ...]:
    return tuple(_processed_hooks)
