from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from collection.models import Collector
from collection.rules import NAME_MAX_LENGTH, name_problem
from common.api.serializers import StrictCharField, TallyModelSerializer, TallySerializer


class CollectorSerializer(TallyModelSerializer):
    class Meta:
        model = Collector
        fields = ["id", "name", "status", "created_at", "updated_at"]
        read_only_fields = fields


def _validated_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise serializers.ValidationError(problem)
    return name


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH})
class CollectorNameField(StrictCharField):
    """A collector name (checked by the rules, with their own message)."""


class CollectorCreateSerializer(TallySerializer):
    name = CollectorNameField(trim_whitespace=False)

    def validate_name(self, name: str) -> str:
        return _validated_name(name)


class CollectorUpdateSerializer(TallySerializer):
    name = CollectorNameField(trim_whitespace=False)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            fixed = {
                key: ["This field cannot be changed."]
                for key in ("id", "status", "createdAt", "updatedAt")
                if key in data
            }
            if fixed:
                raise serializers.ValidationError(fixed)
        return super().to_internal_value(data)

    def validate_name(self, name: str) -> str:
        return _validated_name(name)


class DeletedCountSerializer(TallySerializer):
    deleted_count = serializers.IntegerField()


class RejectedRecordSerializer(TallySerializer):
    index = serializers.IntegerField()
    reason = serializers.CharField()


class IngestionResultSerializer(TallySerializer):
    ingestion_id = serializers.UUIDField()
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = RejectedRecordSerializer(many=True)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "object", "additionalProperties": True},
            {
                "type": "array",
                "items": {"type": "object", "additionalProperties": True},
                "minItems": 1,
                "maxItems": 10_000,
            },
            {"type": "string", "minLength": 1},
        ]
    }
)
class IngestionDataField(serializers.JSONField):
    """Records: never null."""


class IngestionBodySerializer(TallySerializer):
    """Only for the schema: the view reads the body itself (msgspec, in bulk)."""

    data = IngestionDataField(
        help_text="One record (object), a batch (array of objects, at most 10,000), or a "
        "string holding either as JSON. Or send application/x-ndjson, one record a line."
    )


class StatusCountsSerializer(TallySerializer):
    UNPROCESSED = serializers.IntegerField()
    IN_PROGRESS = serializers.IntegerField()
    PROCESSED = serializers.IntegerField()
    FAILED = serializers.IntegerField()


class CollectorStatsSerializer(TallySerializer):
    collector_id = serializers.UUIDField()
    counts = StatusCountsSerializer()
    oldest_unprocessed_at = serializers.DateTimeField(allow_null=True)
    oldest_unprocessed_age_seconds = serializers.FloatField(allow_null=True)
