from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.api.serializers import StrictCharField, TallyModelSerializer, TallySerializer
from parameters.models import Parameter
from parameters.rules import (
    DESCRIPTION_MAX_LENGTH,
    VALUE_MAX_LENGTH,
    name_problem,
    value_problem,
)


class ParameterSerializer(TallyModelSerializer):
    """How a parameter reads: sensitive values are always masked."""

    value = serializers.CharField(source="shown_value", read_only=True)

    class Meta:
        model = Parameter
        fields = ["name", "type", "description", "value", "updated_at"]
        read_only_fields = fields


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": VALUE_MAX_LENGTH})
class ParameterValueField(StrictCharField):
    """A value of 1 to 8,192 characters (checked by the rules, with their own message)."""


class ParameterCreateSerializer(TallySerializer):
    name = StrictCharField(trim_whitespace=False)
    type = serializers.ChoiceField(choices=Parameter.Type.values)
    value = ParameterValueField(trim_whitespace=False)
    description = StrictCharField(
        required=False, allow_blank=True, max_length=DESCRIPTION_MAX_LENGTH, trim_whitespace=False
    )

    def validate_name(self, name: str) -> str:
        problem = name_problem(name)
        if problem:
            raise serializers.ValidationError(problem)
        return name

    def validate_type(self, value):
        # ChoiceField would accept 1 for "1"; the type is a case-sensitive string.
        if not isinstance(self.initial_data.get("type"), str):
            raise serializers.ValidationError("Must be the string standard or sensitive.")
        return value

    def validate_value(self, value: str) -> str:
        problem = value_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class ParameterUpdateSerializer(TallySerializer):
    value = ParameterValueField(required=False, trim_whitespace=False)
    description = StrictCharField(
        required=False, allow_blank=True, max_length=DESCRIPTION_MAX_LENGTH, trim_whitespace=False
    )

    class Meta:
        # Refused by the shared mixin when the view passes the parameter as instance.
        immutable_fields = ["name", "type"]

    def validate_value(self, value: str) -> str:
        problem = value_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send at least one of description and value.")
        return attrs


class ParameterDeleteSerializer(TallySerializer):
    parameters = serializers.ListField(
        child=StrictCharField(trim_whitespace=False, allow_blank=True),
        allow_empty=False,
        max_length=100,
    )


class ParameterNameSerializer(TallySerializer):
    name = serializers.CharField(read_only=True)


class ParameterDeleteResultSerializer(TallySerializer):
    deleted_count = serializers.IntegerField()
    deleted_parameters = serializers.ListField(child=serializers.CharField())
    invalid_parameters = serializers.ListField(child=serializers.CharField())
