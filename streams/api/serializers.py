from __future__ import annotations

from rest_framework import serializers

from common.api.serializers import (
    StrictCharField,
    StrictIntegerField,
    TallyModelSerializer,
    TallySerializer,
)
from metering.schedule import cron_problem
from streams.models import Solution, Stream
from streams.services import ON_NAME_CONFLICT, PREVIEW_MAX_RECORDS


class StreamImportSerializer(TallySerializer):
    solution_id = serializers.UUIDField()
    stream_config = serializers.JSONField()
    on_name_conflict = serializers.ChoiceField(choices=ON_NAME_CONFLICT, required=False)
    allow_node_deletion = serializers.BooleanField(required=False)

    def validate_allow_node_deletion(self, value):
        if not isinstance(self.initial_data.get("allowNodeDeletion"), bool):
            raise serializers.ValidationError("Must be true or false.")
        return value


class SolutionSerializer(TallyModelSerializer):
    name = StrictCharField(read_only=True)

    class Meta:
        model = Solution
        fields = ["id", "name", "is_default", "created_at"]
        read_only_fields = fields


class StreamUpdateSerializer(TallySerializer):
    enabled = serializers.BooleanField(required=False)
    processing_type = serializers.ChoiceField(choices=Stream.ProcessingType.values, required=False)
    description = StrictCharField(required=False, allow_blank=True, max_length=2000)
    schedule = StrictCharField(required=False, allow_blank=True, max_length=120)

    def validate_enabled(self, value):
        if not isinstance(self.initial_data.get("enabled"), bool):
            raise serializers.ValidationError("Must be true or false.")
        return value

    def validate_schedule(self, value: str) -> str:
        if value:
            problem = cron_problem(value)
            if problem:
                raise serializers.ValidationError(problem)
        return " ".join(value.split())

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send at least one field to change.")
        return attrs


class StreamPreviewSerializer(TallySerializer):
    """Records to preview with (JSON objects), or how many of the collector's last
    records to take; neither: a batch stream's readers produce the records."""

    records = serializers.ListField(
        child=serializers.JSONField(), required=False, max_length=PREVIEW_MAX_RECORDS
    )
    last_records = StrictIntegerField(required=False, min_value=1, max_value=PREVIEW_MAX_RECORDS)

    def validate_records(self, value):
        for index, record in enumerate(value):
            if not isinstance(record, dict):
                raise serializers.ValidationError(f"Item {index} must be a JSON object.")
        return value

    def validate(self, attrs):
        if "records" in attrs and "last_records" in attrs:
            raise serializers.ValidationError("Send records or lastRecords, not both.")
        return attrs
