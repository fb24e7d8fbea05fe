"""Writes of collection, one module per concern:

- `collectors`: create, rename, delete and provision collectors;
- `ingestion`: receive a request's records and store them in one statement;
- `idempotency`: Idempotency-Keys;
- `work_queue`: signal, claim, process and finish batches of records;
- `housekeeping`: fold rollup deltas, forget old record ids.

The names callers use are gathered here.
"""

from collection.services.collectors import (
    CollectorConflict,
    collector_create,
    collector_delete,
    collector_provision,
    collector_rename,
    record_partitions_ensure,
)
from collection.services.housekeeping import record_keys_sweep, rollups_fold
from collection.services.idempotency import (
    IdempotencyState,
    body_digest,
    idempotency_begin,
    idempotency_keys_sweep,
    idempotency_release,
)
from collection.services.ingestion import (
    CONNECTOR,
    IngestionResult,
    ingest,
    ingestion_count_gateway_request,
    ingestion_count_refused_request,
    record_key_hash,
)
from collection.services.work_queue import (
    Claim,
    ClaimLost,
    claim_finish,
    records_claim,
    records_process_batch,
    records_requeue_failed,
    records_signal,
)

__all__ = [
    "CONNECTOR",
    "Claim",
    "ClaimLost",
    "CollectorConflict",
    "IdempotencyState",
    "IngestionResult",
    "body_digest",
    "claim_finish",
    "collector_create",
    "collector_delete",
    "collector_provision",
    "collector_rename",
    "idempotency_begin",
    "idempotency_keys_sweep",
    "idempotency_release",
    "ingest",
    "ingestion_count_gateway_request",
    "ingestion_count_refused_request",
    "record_key_hash",
    "record_keys_sweep",
    "record_partitions_ensure",
    "records_claim",
    "records_process_batch",
    "records_requeue_failed",
    "records_signal",
    "rollups_fold",
]
