from __future__ import annotations

from rest_framework import serializers

from common.api.serializers import StrictCharField, TallyModelSerializer, TallySerializer
from streams.models import Solution
from streams.services import ON_NAME_CONFLICT


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


class FunctionSerializer(TallySerializer):
    """Only for the schema: one function of the catalogue."""

    type = serializers.CharField()
    kind = serializers.CharField()
    description = serializers.CharField()
