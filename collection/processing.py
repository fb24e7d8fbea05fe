"""The pluggable processor registry: who turns a collector's records into results.

Collection stores records and runs a work queue; it does not know what processing
means. Another app (the stream runtime) registers a *resolver*: given a collector, it
returns a `Processor` for it, or None when nothing reads that collector. Records of a
collector without a processor stay UNPROCESSED until one appears.

A processor gets a claimed batch inside the transaction that will mark the records
PROCESSED, so whatever it writes commits with them or not at all. It returns the ids of
the records it could not process, each with a reason (they become FAILED).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collection.models import Collector
    from collection.services.work_queue import ClaimedRecord


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
