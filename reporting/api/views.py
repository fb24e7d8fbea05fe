"""`POST /metrics`: usage, revenue and event metrics, answered from rollups."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.renderers import CSVRenderer, DecimalJSONRenderer
from common.json import format_datetime
from reporting.api.serializers import MetricsAnswerSerializer, MetricsSerializer
from reporting.metrics import MetricsInvalid, metric_query_check, window_check
from reporting.selectors import MetricResult, metrics_answer
from tenants.api.base import caller_operator

EXAMPLE = {
    "startTime": "2024-07-01T00:00:00Z",
    "endTime": "2024-07-03T00:00:00Z",
    "metricQueries": [
        {
            "id": "m1",
            "name": "USAGE",
            "aggregationPeriod": "DAY",
            "groupBy": "USAGE_METER_ID",
            "filters": [{"fieldName": "CUSTOMER_ID", "fieldValues": ["customer#1"]}],
        }
    ],
}


class MetricsViewSet(viewsets.ViewSet):
    """Metrics over a window, in UTC buckets: EVENTS, USAGE (METER_USAGE), REVENUE,
    USAGE_FOR_CYCLE and REVENUE_FOR_CYCLE, several per request. `Accept: text/csv`
    answers the same data as one row per query, series and timestamp."""

    renderer_classes = [DecimalJSONRenderer, CSVRenderer]
    required_scopes = {"query": "metrics:read"}
    rate_limit_group = "metrics"

    @extend_schema(
        operation_id="getMetrics",
        request=MetricsSerializer,
        responses={
            (200, "application/json"): OpenApiResponse(
                MetricsAnswerSerializer,
                description="One result per query, in the order asked; each series has "
                "the same timestamps, with 0 where nothing was counted.",
            ),
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The same data, one row per query, series and timestamp: "
                "id,name,groupByField,groupByValue,timestamp,value.",
            ),
        },
        examples=[OpenApiExample("Daily usage by meter type", value=EXAMPLE, request_only=True)],
    )
    def query(self, request: Request) -> Response:
        serializer = MetricsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        start, end = data["start_time"], data["end_time"]
        problems = window_check(start, end)
        queries = []
        for index, raw in enumerate(data["metric_queries"]):
            try:
                queries.append(metric_query_check(raw))
            except MetricsInvalid as invalid:
                problems += [(f"metricQueries[{index}].{w}", m) for w, m in invalid.problems]
        try:
            if problems:
                raise MetricsInvalid(problems)
            results = metrics_answer(
                operator=caller_operator(self), start=start, end=end, queries=queries
            )
        except MetricsInvalid as invalid:
            raise serializers.ValidationError(
                {where: [message] for where, message in invalid.problems}
            ) from invalid
        if isinstance(request.accepted_renderer, CSVRenderer):
            return Response(_csv_table(results))
        return Response({"results": [_result_json(result) for result in results]})

    def finalize_response(self, request, response, *args, **kwargs):
        # Errors are JSON in the shared shape whatever the client accepts.
        if response.status_code >= 400:
            request.accepted_renderer = DecimalJSONRenderer()
            request.accepted_media_type = DecimalJSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


def _result_json(result: MetricResult) -> dict:
    timestamps = [format_datetime(moment) for moment in result.timestamps]
    data = []
    for series in result.series:
        item = {"timestamps": timestamps, "metricValues": series.values}
        if series.group is not None:
            item["groupedBy"] = {"fieldName": series.group[0], "fieldValue": series.group[1]}
        data.append(item)
    return {"id": result.id, "name": result.name, "data": data}


CSV_COLUMNS = ["id", "name", "groupByField", "groupByValue", "timestamp", "value"]


def _csv_table(results: list[MetricResult]) -> dict:
    rows = []
    for result in results:
        for series in result.series:
            field, value = series.group or ("", "")
            for moment, number in zip(result.timestamps, series.values, strict=True):
                rows.append([result.id, result.name, field, value, format_datetime(moment), number])
    return {"columns": CSV_COLUMNS, "rows": rows}
