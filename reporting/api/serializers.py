"""The metrics query's request and answer, as the reference product's clients send and
read them. The shape is checked here; the rules of each metric in `reporting.metrics`."""

from __future__ import annotations

from rest_framework import serializers

from common.api.serializers import AwareDateTimeField, StrictCharField, TallySerializer
from reporting.metrics import (
    CURRENCIES,
    DEFAULT_PERIOD,
    FIELD_NAMES,
    MAX_FILTER_VALUES,
    MAX_FILTERS,
    MAX_QUERIES,
    METRIC_NAMES,
    PERIODS,
)


class MetricFilterSerializer(TallySerializer):
    field_name = serializers.ChoiceField(choices=FIELD_NAMES)
    field_values = serializers.ListField(
        child=StrictCharField(max_length=320),
        min_length=1,
        max_length=MAX_FILTER_VALUES,
    )


class MetricConfigsSerializer(TallySerializer):
    CURRENCY = serializers.ChoiceField(
        choices=CURRENCIES, required=False, help_text="Currency of revenue (default BASE)."
    )


class MetricQuerySerializer(TallySerializer):
    id = StrictCharField(max_length=100, help_text="Names this query's result.")
    name = serializers.ChoiceField(
        choices=list(METRIC_NAMES), required=False, help_text="Default EVENTS."
    )
    aggregation_period = serializers.ChoiceField(
        choices=PERIODS, required=False, help_text=f"Default {DEFAULT_PERIOD}; weeks start Monday."
    )
    group_by = serializers.ChoiceField(choices=FIELD_NAMES, required=False)
    filters = serializers.ListField(
        child=MetricFilterSerializer(), min_length=1, max_length=MAX_FILTERS, required=False
    )
    configs = MetricConfigsSerializer(required=False)


class MetricsSerializer(TallySerializer):
    start_time = AwareDateTimeField(help_text="Inclusive; a whole hour, UTC.")
    end_time = AwareDateTimeField(help_text="Exclusive; a whole hour, UTC.")
    metric_queries = serializers.ListField(
        child=MetricQuerySerializer(), min_length=1, max_length=MAX_QUERIES
    )

    def validate_metric_queries(self, queries: list[dict]) -> list[dict]:
        seen: set[str] = set()
        for index, query in enumerate(queries):
            if query["id"] in seen:
                raise serializers.ValidationError(
                    {index: {"id": [f"Query id {query['id']!r} is used twice."]}}
                )
            seen.add(query["id"])
        return queries


class GroupedBySerializer(serializers.Serializer):
    fieldName = serializers.ChoiceField(choices=FIELD_NAMES)
    fieldValue = serializers.CharField()


class MetricDataSerializer(serializers.Serializer):
    timestamps = serializers.ListField(child=serializers.DateTimeField())
    metricValues = serializers.ListField(child=serializers.FloatField())
    groupedBy = GroupedBySerializer(required=False)


class MetricResultSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.ChoiceField(choices=list(METRIC_NAMES))
    data = MetricDataSerializer(many=True)


class MetricsAnswerSerializer(serializers.Serializer):
    results = MetricResultSerializer(many=True)
