"""Streams in the reference product's export format: solutions, streams and versions.

A stream's configuration (nodes, edges, node groups, annotation, and any key Tally does
not interpret) is kept verbatim as JSON, so that an exported stream is the imported one.
"""

from __future__ import annotations

import uuid

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q
from django.utils.timezone import now

from common.json import ExactJSONDecoder, ExactJSONEncoder
from tenants import accounting
from tenants.models import Operator


def _config_field(**kwargs) -> models.JSONField:
    return models.JSONField(encoder=ExactJSONEncoder, decoder=ExactJSONDecoder, **kwargs)


class Connector(models.Model):
    """A kind of integration the platform offers, the same for every operator.

    The catalogue is seeded by migration (0004) and only read afterwards. An operator's
    configured instance of a connector is a *connection*, derived from the rows that
    configure it rather than stored (`reporting.platform.connection_counts`): each
    collector is one of `online-collection`, each webhook endpoint one of `webhook`,
    each `transforms/http` node of a stream one of `http`. A *gateway request* is one
    HTTP request through a connection, counted under the connector's slug.
    """

    class Direction(models.TextChoices):
        INBOUND = "inbound", "Inbound"
        OUTBOUND = "outbound", "Outbound"

    # The slugs gateway requests are counted under (`tenants.accounting`).
    ONLINE_COLLECTION = accounting.ONLINE_COLLECTION
    WEBHOOK = accounting.WEBHOOK
    HTTP = accounting.HTTP

    id = models.SlugField(primary_key=True, max_length=50)
    name = models.CharField(max_length=100)
    direction = models.CharField(max_length=16, choices=Direction.choices)
    description = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["direction", "id"]

    def __str__(self) -> str:
        return self.name


class Solution(models.Model):
    """A named group of an operator's streams; every operator has a default one."""

    DEFAULT_NAME = "Default"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="solutions")
    name = models.CharField(max_length=100)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["operator", "name"], name="solution_unique_name"),
            models.UniqueConstraint(
                fields=["operator"], condition=Q(is_default=True), name="solution_one_default"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Stream(models.Model):
    """A stream: its identity and settings. Its configuration lives in its versions."""

    class ProcessingType(models.TextChoices):
        REALTIME = "realtime"
        BATCH = "batch"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="streams")
    solution = models.ForeignKey(Solution, on_delete=models.PROTECT, related_name="streams")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    processing_type = models.CharField(
        max_length=16, choices=ProcessingType.choices, default=ProcessingType.REALTIME
    )
    enabled = models.BooleanField(default=False)
    # For batch streams: when they run, a 5-field cron line in UTC ("" : on demand only).
    schedule = models.CharField(max_length=120, blank=True, default="")
    # When the schedule fires next (NULL: no schedule, or not enabled).
    next_run_at = models.DateTimeField(null=True, blank=True)
    # Compare-and-set counter: goes up by one on every save of the stream.
    cas = models.PositiveIntegerField(default=1)
    created_by = _config_field(default=dict)
    updated_by = _config_field(default=dict)
    created_at = models.DateTimeField(default=now, editable=False)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["solution", "name"], name="stream_unique_name"),
        ]
        indexes = [
            # The list's cursor order.
            models.Index(fields=["operator", "created_at", "id"], name="stream_cursor_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class StreamVersion(models.Model):
    """A stream's configuration: the latest (autosaved, `tag` empty; one per stream) or a
    tagged snapshot (tag unique per stream)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The stream's operator, kept on every row so the tables can be distributed by tenant.
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="versions")
    is_latest = models.BooleanField(default=False)
    tag = models.CharField(max_length=100, blank=True, default="")
    schema_version = models.PositiveIntegerField(default=1)
    # The configuration as imported, generated keys excluded (they live in StreamKey).
    config = _config_field()
    created_by = _config_field(default=dict)
    created_at = models.DateTimeField(default=now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["stream"], condition=Q(is_latest=True), name="streamversion_one_latest"
            ),
            models.UniqueConstraint(
                fields=["stream", "tag"],
                condition=Q(is_latest=False),
                name="streamversion_unique_tag",
            ),
        ]
        indexes = [models.Index(fields=["operator", "stream"], name="streamversion_stream_idx")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.stream.name} · {self.tag or 'latest'}"


class StreamKey(models.Model):
    """A key Tally generates for a node the first time it appears (a meter node's
    `meterKey`, an aggregator's `storeId`); it stays with the node id across versions."""

    class Kind(models.TextChoices):
        METER_KEY = "meterKey"
        STORE_ID = "storeId"

    class Resource(models.TextChoices):
        """What the key names, as `resourceRefs` spell it."""

        METER_KEY = "meterKey"
        DATA_AGGREGATION_STORE = "dataAggregationStore"
        SCRIPT_AGGREGATION_STORE = "scriptAggregationStore"

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="keys")
    node_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    resource = models.CharField(max_length=32, choices=Resource.choices)
    value = models.UUIDField(default=uuid.uuid4)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "node_id", "kind"], name="streamkey_unique"),
        ]
        indexes = [
            models.Index(fields=["operator", "resource", "value"], name="streamkey_resource_idx")
        ]

    def __str__(self) -> str:
        return f"{self.node_id} {self.kind}: {self.value}"


class StreamExecution(models.Model):
    """One run of a batch stream (on demand, from the admin or on its schedule)."""

    class Status(models.TextChoices):
        QUEUED = "QUEUED"
        RUNNING = "RUNNING"
        SUCCEEDED = "SUCCEEDED"
        FAILED = "FAILED"

    class Trigger(models.TextChoices):
        API = "api"
        ADMIN = "admin"
        SCHEDULE = "schedule"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="executions")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.API)
    created_at = models.DateTimeField(default=now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # {node id: {"in": n, "out": n, "failed": n}}
    node_counts = _config_field(default=dict)
    # The first errors: [{"nodeId", "nodeName", "reason"}]
    errors = _config_field(default=list)
    records_read = models.PositiveIntegerField(default=0)
    records_failed = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["operator", "stream", "-created_at"], name="execution_stream_idx"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.stream.name} · {self.status} · {self.created_at:%Y-%m-%d %H:%M:%S}"


class NodeCounter(models.Model):
    """Records in, out and failed per stream node, all time. Writers append
    `NodeCounterDelta` rows (no hot row to wait on); Beat folds them in here."""

    class Kind(models.TextChoices):
        IN = "in"
        OUT = "out"
        FAILED = "failed"

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="+")
    node_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["operator", "stream", "node_id", "kind"], name="nodecounter_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} {self.kind}: {self.count}"


class NodeCounterDelta(models.Model):
    """A change to a NodeCounter not folded in yet (append-only)."""

    id = models.BigAutoField(primary_key=True)
    operator = models.ForeignKey(
        Operator, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    node_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=NodeCounter.Kind.choices)
    count = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.node_id} {self.kind} {self.count:+d}"


class NodeError(models.Model):
    """The last error a stream node met (written only when records fail)."""

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="+")
    node_id = models.CharField(max_length=100)
    node_name = models.CharField(max_length=200, blank=True, default="")
    reason = models.TextField()
    at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "node_id"], name="nodeerror_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.node_name or self.node_id}: {self.reason[:60]}"


class NodeState(models.Model):
    """A node's persistent JSON (`state.node` in scripts), saved with the batch that
    changed it. `revision` makes the save a compare-and-set: two workers running
    batches of one stream cannot overwrite each other's state."""

    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="+")
    node_id = models.CharField(max_length=100)
    state = _config_field(default=dict)
    revision = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "node_id"], name="nodestate_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} r{self.revision}"


class DedupeKey(models.Model):
    """A key a deduplicate node has seen, until it expires. The primary key is the MD5
    of (stream, node, key): one row per key, whatever its length."""

    key_hash = models.UUIDField(primary_key=True)
    operator = models.ForeignKey(
        Operator, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [BrinIndex(fields=["expires_at"], name="dedupekey_expires_brin")]

    def __str__(self) -> str:
        return str(self.key_hash)


class StreamLogLine(models.Model):
    """A line of a stream's log (writers/log records, script log calls); Beat keeps
    the newest TALLY_STREAM_LOG_MAX_LINES per stream."""

    id = models.BigAutoField(primary_key=True)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="log_lines")
    node_id = models.CharField(max_length=100)
    node_name = models.CharField(max_length=200, blank=True, default="")
    level = models.CharField(max_length=8, default="info")
    message = models.TextField(blank=True, default="")
    payload = _config_field(null=True, blank=True)
    created_at = models.DateTimeField(default=now)

    class Meta:
        indexes = [models.Index(fields=["operator", "stream", "-id"], name="streamlog_stream_idx")]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.level} {self.message[:60]}"


class PendingFlush(models.Model):
    """A meter period closed by a reset, waiting to go down its meter node's `reset`
    output. Written in the reset's transaction, deleted in the one that runs it: each
    flushed record goes downstream once."""

    id = models.BigAutoField(primary_key=True)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="+")
    node_id = models.CharField(max_length=100)
    period_id = models.UUIDField()
    created_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["stream", "node_id", "period_id"], name="pendingflush_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} {self.period_id}"


class AggregationStore(models.Model):
    """Where an aggregator node keeps its sessions. Its id is the node's `storeId`
    (the StreamKey Tally generated for it), so a store stays with its node across
    versions and is found by the id the stream shows."""

    class Kind(models.TextChoices):
        DATA = "data"
        SCRIPT = "script"

    id = models.UUIDField(primary_key=True, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="stores")
    node_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    created_at = models.DateTimeField(default=now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "node_id"], name="aggregationstore_node"),
        ]
        indexes = [
            models.Index(fields=["operator", "created_at"], name="aggregationstore_operator_idx")
        ]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} store of {self.stream.name} · {self.node_id}"


class AggregationSession(models.Model):
    """One group of an aggregator: its key (from the group values), the data folded so
    far and the meta the runtime keeps (count, first and last event). Changed only in
    the transaction of the batch that changes it; `timeout_at` is when Beat flushes it."""

    id = models.BigAutoField(primary_key=True)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    store = models.ForeignKey(AggregationStore, on_delete=models.CASCADE, related_name="sessions")
    key = models.TextField()
    key_values = _config_field(default=list)
    data = _config_field(default=dict)
    meta = _config_field(default=dict)
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)
    timeout_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "key"], name="aggregationsession_key"),
        ]
        indexes = [
            models.Index(
                fields=["timeout_at"],
                condition=Q(timeout_at__isnull=False),
                name="aggregationsession_due_idx",
            ),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return self.key


class AggregationFlush(models.Model):
    """That a stored session was flushed. The unique session id is what makes a flush
    happen once: whoever inserts this row (in the flush's transaction) emits the
    session, a racing worker or retried batch finds it taken. Swept after a week."""

    id = models.BigAutoField(primary_key=True)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="+")
    store = models.ForeignKey(AggregationStore, on_delete=models.CASCADE, related_name="flushes")
    session_id = models.BigIntegerField(unique=True)
    key = models.TextField()
    flush_type = models.CharField(max_length=16)
    flushed_at = models.DateTimeField(default=now)

    class Meta:
        indexes = [BrinIndex(fields=["flushed_at"], name="aggregationflush_at_brin")]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.key} ({self.flush_type})"
