"""Streams in the reference product's export format: solutions, streams and versions.

A stream's configuration (nodes, edges, node groups, annotation, and any key Tally does
not interpret) is kept verbatim as JSON, so that an exported stream is the imported one.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils.timezone import now

from common.json import ExactJSONDecoder, ExactJSONEncoder
from tenants.models import Operator


def _config_field(**kwargs) -> models.JSONField:
    return models.JSONField(encoder=ExactJSONEncoder, decoder=ExactJSONDecoder, **kwargs)


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
        return self.tag or "latest"


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
        return f"{self.kind} {self.value}"
