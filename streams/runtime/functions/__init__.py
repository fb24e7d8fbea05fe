"""Function implementations, one module per family; importing this package registers
them all in `streams.runtime.base.REGISTRY`."""

from streams.runtime.functions import (  # noqa: F401
    aggregate,
    basic,
    dedupe,
    http,
    meter,
    script,
    script_aggregate,
    sources,
)
