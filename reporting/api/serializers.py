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
from common.json import ExactJSONEncoder
from reporting import definitions
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


# -- Metric definitions (/v1/metrics) ------------------------------------------------------


class ExactJSONField(serializers.JSONField):
    """Any JSON value, numbers kept as the exact decimals the parser made of them."""

    def __init__(self, **kwargs) -> None:
        super().__init__(encoder=ExactJSONEncoder, **kwargs)


class MetricDefinitionSerializer(TallySerializer):
    """A metric definition as answered."""

    id = serializers.UUIDField(read_only=True)
    name = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
    query_type = serializers.ChoiceField(choices=definitions.QUERY_TYPES, read_only=True)
    aggregation_type = serializers.SerializerMethodField()
    event_name = serializers.SerializerMethodField()
    value_type = serializers.ChoiceField(choices=definitions.VALUE_TYPES, read_only=True)
    value_property = serializers.SerializerMethodField()
    filters = ExactJSONField(read_only=True)
    sql = serializers.SerializerMethodField()
    index_status = serializers.SerializerMethodField(
        help_text="Indexed metrics: BACKFILLING until existing records are counted, then "
        "READY (values answer 409 until then); null for the others."
    )
    backfill_progress = serializers.SerializerMethodField(
        help_text="Indexed metrics: how far the backfill has come, 0 to 1."
    )
    created_at = DateTimeField(read_only=True)
    updated_at = DateTimeField(read_only=True)

    def get_aggregation_type(self, metric) -> str | None:
        return metric.aggregation_type or None

    def get_event_name(self, metric) -> str | None:
        return metric.event_name or None

    def get_value_property(self, metric) -> str | None:
        return metric.value_property or None

    def get_sql(self, metric) -> str | None:
        return metric.sql or None

    def get_index_status(self, metric) -> str | None:
        return metric.index_status or None

    def get_backfill_progress(self, metric) -> float | None:
        progress = metric.backfill_progress
        return None if progress is None else round(progress, 4)


class MetricComputingSerializer(TallySerializer):
    """The fields that say what a metric computes (checked together by
    `reporting.definitions`)."""

    query_type = serializers.ChoiceField(choices=definitions.QUERY_TYPES)
    aggregation_type = serializers.ChoiceField(
        choices=definitions.AGGREGATIONS, required=False, allow_null=True
    )
    event_name = StrictCharField(
        max_length=definitions.MAX_EVENT_NAME_LENGTH, required=False, allow_null=True
    )
    value_type = serializers.ChoiceField(
        choices=definitions.VALUE_TYPES, required=False, allow_null=True
    )
    value_property = StrictCharField(
        max_length=definitions.MAX_PATH_LENGTH,
        required=False,
        allow_null=True,
        help_text="Where the value is in a record's fields: $.tokens.output, $.items[0].n, "
        '$["a key"].',
    )
    filters = ExactJSONField(
        required=False,
        allow_null=True,
        help_text='[{"property": "$.model", "op": "eq", "value": "gpt-4"}]; op is one of '
        f"{', '.join(definitions.FILTER_OPS)}. A record lacking the property never matches "
        "(except `exists: false`).",
    )
    sql = StrictCharField(
        max_length=definitions.MAX_SQL_LENGTH,
        required=False,
        allow_null=True,
        trim_whitespace=False,
        help_text="Complex metrics: one SELECT over events(id, type, customer_id, account_id, "
        "event_time, payload) returning one number.",
    )

    def validate(self, attrs: dict) -> dict:
        try:
            # Kept for the view: a preview computes it (a SQL one is parsed once here).
            self.spec = definitions.definition_from(attrs)
        except definitions.DefinitionInvalid as invalid:
            raise definition_errors(invalid) from invalid
        return attrs


def definition_errors(invalid: definitions.DefinitionInvalid) -> serializers.ValidationError:
    """A definition's problems as the API answers them, each under its field."""
    return serializers.ValidationError({where: [message] for where, message in invalid.problems})


class MetricCreateSerializer(MetricComputingSerializer):
    name = StrictCharField(max_length=definitions.MAX_NAME_LENGTH)
    description = StrictCharField(required=False, allow_blank=True, max_length=2000)


class MetricUpdateSerializer(TallySerializer):
    """What an update may change; `queryType`, `aggregationType` and `valueType` are
    fixed at creation (400)."""

    name = StrictCharField(max_length=definitions.MAX_NAME_LENGTH, required=False)
    description = StrictCharField(required=False, allow_blank=True, max_length=2000)
    event_name = StrictCharField(
        max_length=definitions.MAX_EVENT_NAME_LENGTH, required=False, allow_null=True
    )
    value_property = StrictCharField(
        max_length=definitions.MAX_PATH_LENGTH, required=False, allow_null=True
    )
    filters = ExactJSONField(required=False, allow_null=True)
    sql = StrictCharField(
        max_length=definitions.MAX_SQL_LENGTH,
        required=False,
        allow_null=True,
        trim_whitespace=False,
    )

    class Meta:
        immutable_fields = ("queryType", "aggregationType", "valueType")

    def validate(self, attrs: dict) -> dict:
        if not attrs:
            raise serializers.ValidationError("Send at least one field to change.")
        return attrs


class TimeframeSerializer(TallySerializer):
    """For the schema only: the timeframe object (parsed by reporting.definitions)."""

    type = serializers.ChoiceField(choices=definitions.TIMEFRAME_TYPES)
    start = DateTimeField(required=False, help_text="RANGE: inclusive.")
    end = DateTimeField(required=False, help_text="RANGE: exclusive.")
    account_id = serializers.CharField(
        required=False,
        help_text="CURRENT_CYCLE: the billing account whose cycle, when the customer has "
        "several with a current cycle.",
    )


class MetricPreviewSerializer(MetricComputingSerializer):
    name = StrictCharField(max_length=definitions.MAX_NAME_LENGTH, required=False)
    description = StrictCharField(required=False, allow_blank=True, max_length=2000)
    customer_id = StrictCharField(max_length=320)
    timeframe = ExactJSONField(required=False, allow_null=True)


class MetricValueSerializer(TallySerializer):
    id = serializers.UUIDField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    customer_id = serializers.CharField()
    value = serializers.JSONField(
        allow_null=True,
        help_text="A number (a string or boolean for LATEST of STRING and BOOLEAN "
        "metrics); null when no record counted for MIN, MAX, AVG and LATEST.",
    )
    query_type = serializers.ChoiceField(choices=definitions.QUERY_TYPES)
    timeframe = TimeframeSerializer()
