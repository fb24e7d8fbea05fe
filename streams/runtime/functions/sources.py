"""`readers/online_collection`: the records a collector received. The collection work
queue hands them over batch by batch (streams.runtime.runner.RealtimeProcessor), so
the reader itself produces nothing when a stream is executed on demand."""

from __future__ import annotations

from typing import Any

from streams.runtime.base import Reader, function


@function("readers/online_collection")
class OnlineCollectionReader(Reader):
    def read(self) -> list[Any]:
        return []
