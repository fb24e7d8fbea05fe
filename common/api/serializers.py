"""Serializer conventions shared by every endpoint.

- Field names are camelCase on the wire; models keep snake_case (renamed here, once).
- Unknown and read-only fields in a request body are a 400, not silently dropped.
- Fields listed in `Meta.immutable_fields` are a 400 when sent to an update.
- Timestamps are ISO 8601 UTC with milliseconds; quantities are exact JSON numbers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models
from django.utils import timezone
from rest_framework import serializers

from common.json import format_datetime, normalize_decimal


def camel_case(name: str) -> str:
    if not name.islower():
        return name  # constant-style names (IN_PROGRESS) are values, not attributes
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class DateTimeField(serializers.DateTimeField):
    def to_representation(self, value):
        if value is None:
            return None
        return format_datetime(value)


class AwareDateTimeField(DateTimeField):
    """A moment that must name its offset (`Z`, `+02:00`): a bare date or a local time is
    a 400, not silently taken as UTC."""

    default_error_messages = {
        "naive": "Must name its time zone (for example 2024-01-01T00:00:00Z).",
    }

    def enforce_timezone(self, value):
        if timezone.is_naive(value):
            self.fail("naive")
        return super().enforce_timezone(value)


class NumberField(serializers.DecimalField):
    """An exact decimal that must arrive as a JSON number (a string or boolean is a 400)."""

    default_error_messages = {"not_a_number": "Must be a number."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 30)
        kwargs.setdefault("decimal_places", 10)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, int | float | Decimal):
            self.fail("not_a_number")
        return super().to_internal_value(data)

    def to_representation(self, value: Any) -> Decimal | None:
        if value is None:
            return None
        return normalize_decimal(Decimal(value))


class StrictCharField(serializers.CharField):
    """A string that must arrive as a JSON string (DRF would turn 12 into "12")."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A whole number that must arrive as a JSON number (DRF would take "5")."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class TallySerializerMixin:
    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        renamed: dict[str, serializers.Field] = {}
        for name, field in fields.items():
            wire_name = camel_case(name)
            if wire_name != name and field.source is None:
                field.source = name
            # DRF calls `validate_<field name>`, and the field is now named in camelCase:
            # point that name at the snake_case method the serializer defines.
            if isinstance(field, serializers.SerializerMethodField) and not field.method_name:
                field.method_name = f"get_{name}"
            field_validator = getattr(self, f"validate_{name}", None)
            if wire_name != name and field_validator is not None:
                setattr(self, f"validate_{wire_name}", field_validator)
            renamed[wire_name] = field
        return renamed

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            errors: dict[str, list[str]] = {}
            writable = {name for name, field in self.fields.items() if not field.read_only}
            for key in data:
                if key in self.fields and key not in writable:
                    errors[key] = ["This field is read-only."]
                elif key not in self.fields:
                    errors[key] = ["Unknown field."]
            if self.instance is not None:
                for key in getattr(getattr(self, "Meta", None), "immutable_fields", ()):
                    if key in data:
                        errors[key] = ["This field cannot be changed after creation."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class TallySerializer(TallySerializerMixin, serializers.Serializer):
    pass


class TallyModelSerializer(TallySerializerMixin, serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DateTimeField: DateTimeField,
        models.DecimalField: NumberField,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
    }
