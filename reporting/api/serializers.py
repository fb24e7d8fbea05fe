"""The metrics query's request and answer, as the reference product's clients send and
read them (the shape is checked here; the rules of each metric in `reporting.metrics`),
and the platform API's answers."""

from __future__ import annotations

import datetime
import re

from rest_framework import serializers

from common.api.serializers import (
    AwareDateTimeField,
    DateTimeField,
    NumberField,
    StrictCharField,
    TallySerializer,
)
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
from reporting.platform import MAX_REPORT_DAYS
from streams.models import Connector
from tenants.models import Operator

ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The report reads up to the month after the day after `end`: later days cannot be
# represented (Python's dates end with 9999).
LAST_REPORT_DAY = datetime.date(9998, 12, 31)


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


# -- The platform API ---------------------------------------------------------------------
# Answers are written from `reporting.platform`'s dataclasses by these serializers, so
# the OpenAPI document describes exactly what is sent.


class PlatformOperatorCountsSerializer(TallySerializer):
    active = serializers.IntegerField()
    suspended = serializers.IntegerField()
    total = serializers.IntegerField()


class PlatformSummarySerializer(TallySerializer):
    operators = PlatformOperatorCountsSerializer()
    api_calls = serializers.IntegerField(help_text="Authenticated operator API requests.")
    gateway_requests = serializers.IntegerField(
        help_text="HTTP requests through connections: ingestion requests, webhook delivery "
        "attempts, HTTP calls from stream nodes."
    )
    events_ingested = serializers.IntegerField(help_text="Records accepted by collectors.")
    active_connections = serializers.IntegerField()


class PlatformOperatorSerializer(TallySerializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=Operator.Status.values)
    active_connections = serializers.IntegerField()
    api_calls = serializers.IntegerField()
    events_ingested = serializers.IntegerField()
    last_active_at = DateTimeField(
        allow_null=True, help_text="The operator's last authenticated API request."
    )


class PlatformOperatorListSerializer(serializers.Serializer):
    operators = PlatformOperatorSerializer(many=True)
    total = serializers.IntegerField()


class PlatformConnectionsSerializer(TallySerializer):
    active = serializers.IntegerField()
    inactive = serializers.IntegerField(
        help_text="Deleted collectors, disabled webhook endpoints, HTTP nodes of disabled streams."
    )
    total = serializers.IntegerField()


class PlatformConnectorSerializer(TallySerializer):
    id = serializers.CharField(help_text="The connector's slug, e.g. online-collection.")
    name = serializers.CharField()
    direction = serializers.ChoiceField(choices=Connector.Direction.values)
    operators_using = serializers.IntegerField(
        help_text="Operators with at least one active connection of this connector."
    )
    connections = PlatformConnectionsSerializer()
    gateway_calls = serializers.IntegerField(
        help_text="Requests through its connections, all time (inactive ones included)."
    )


class PlatformConnectorListSerializer(serializers.Serializer):
    connectors = PlatformConnectorSerializer(many=True)


class IsoDateField(serializers.DateField):
    """A calendar date written exactly YYYY-MM-DD (no week dates, no times)."""

    default_error_messages = {"invalid": "Must be a date written YYYY-MM-DD."}

    def to_internal_value(self, value):
        if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
            self.fail("invalid")
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            self.fail("invalid")


class UsageReportQuerySerializer(TallySerializer):
    start = IsoDateField(help_text="The first day of the report (UTC), YYYY-MM-DD.")
    end = IsoDateField(help_text="The last day of the report (UTC, inclusive), YYYY-MM-DD.")

    def validate(self, data: dict) -> dict:
        if data["end"] > LAST_REPORT_DAY:
            raise serializers.ValidationError(
                {"end": [f"end must be on or before {LAST_REPORT_DAY.isoformat()}."]}
            )
        days = (data["end"] - data["start"]).days + 1
        if days < 1:
            raise serializers.ValidationError({"end": ["end must not be before start."]})
        if days > MAX_REPORT_DAYS:
            raise serializers.ValidationError(
                {"end": [f"The range may span at most {MAX_REPORT_DAYS} days."]}
            )
        return data


class UsageReportTotalsSerializer(TallySerializer):
    api_calls_by_category = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="API calls per endpoint category (every category, 0 when none).",
    )
    gateway_requests_by_connector = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Gateway requests per connector slug (every connector, 0 when none).",
    )
    events_by_type = serializers.DictField(
        child=serializers.IntegerField(), help_text="Events ingested per record type."
    )
    storage_bytes = serializers.IntegerField(
        help_text="Estimated bytes of the records and rollups kept for the operator at "
        "the end of the range: records stored by then * the record and rollup tables' "
        "bytes per record."
    )
    # Exact, with as many digits as the weights and storage give: no bounds to document.
    billable_units = NumberField(
        max_digits=None,
        decimal_places=None,
        help_text="apiCalls * apiCallWeight + gatewayRequests * gatewayRequestWeight + "
        "events * eventWeight + storage GB (10^9 bytes) * storageGbWeight, exact, with the "
        "weights of the platform settings.",
    )


class UsageReportLineSerializer(UsageReportTotalsSerializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class UsageReportSerializer(TallySerializer):
    start = serializers.DateField()
    end = serializers.DateField()
    operators = UsageReportLineSerializer(many=True)
    totals = UsageReportTotalsSerializer(help_text="The sums of the operators' figures.")
