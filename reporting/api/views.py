"""`POST /metrics`: usage, revenue and event metrics, answered from rollups; and the
platform API's metrics and billing report (`/platform-api/...`, platform keys)."""

from __future__ import annotations

from decimal import Decimal, localcontext

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.filters import SORT_ORDERS
from common.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, query_int
from common.api.renderers import CSVRenderer, DecimalJSONRenderer
from common.json import WithoutDatetimes, format_datetime, normalize_decimal
from reporting.api.serializers import (
    MetricsAnswerSerializer,
    MetricsSerializer,
    PlatformConnectorListSerializer,
    PlatformOperatorListSerializer,
    PlatformOperatorSerializer,
    PlatformSummarySerializer,
    UsageReportQuerySerializer,
    UsageReportSerializer,
)
from reporting.metrics import MetricsInvalid, metrics_request_check
from reporting.platform import (
    DEFAULT_OPERATOR_SORT,
    EXACT,
    OPERATOR_SORTS,
    ReportLine,
    UsageReport,
    connector_figures,
    operator_figures_page,
    platform_summary,
    usage_report,
)
from reporting.selectors import MetricResult, metrics_answer
from tenants.api.base import PlatformAPIView, caller_operator


class JSONErrorsMixin:
    """For views that also answer CSV: errors are JSON in the shared shape whatever the
    client accepts (a CSV renderer has no table to write for them)."""

    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code >= 400:
            request.accepted_renderer = DecimalJSONRenderer()
            request.accepted_media_type = DecimalJSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


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


class MetricsViewSet(JSONErrorsMixin, viewsets.ViewSet):
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
        try:
            queries = metrics_request_check(start, end, data["metric_queries"])
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


# -- The platform API ---------------------------------------------------------------------


class PlatformSummaryView(PlatformAPIView):
    """The platform's KPIs across every operator, all time: operators by status, API
    calls, gateway requests, events ingested and active connections."""

    @extend_schema(operation_id="platform_metrics_summary", responses=PlatformSummarySerializer)
    def get(self, request: Request) -> Response:
        return Response(PlatformSummarySerializer(platform_summary()).data)


def _sort_parameters() -> list[OpenApiParameter]:
    return [
        OpenApiParameter(
            "limit",
            {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
            description=f"How many operators to return (default {DEFAULT_LIMIT}, at most "
            f"{MAX_LIMIT}; empty: the default).",
        ),
        OpenApiParameter(
            "skip", {"type": "integer", "minimum": 0}, description="How many to skip."
        ),
        OpenApiParameter(
            "sortBy",
            {"type": "string", "enum": OPERATOR_SORTS},
            description=f"Empty: {DEFAULT_OPERATOR_SORT}. Ties are ordered by id; an "
            "operator never active sorts as the least recently active.",
        ),
        OpenApiParameter(
            "sortOrder", {"type": "string", "enum": list(SORT_ORDERS)}, description="Empty: ASC."
        ),
    ]


SKIP_CEILING = 2**62


class PlatformOperatorsView(PlatformAPIView):
    """Every operator with its figures, all time: status, active connections, API calls,
    events ingested and when it was last active. Sorted and paged like every list."""

    @extend_schema(
        operation_id="platform_metrics_operators",
        parameters=_sort_parameters(),
        responses=PlatformOperatorListSerializer,
    )
    def get(self, request: Request) -> Response:
        limit = query_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        # Past every operator either way; PostgreSQL's OFFSET is a bigint.
        skip = min(query_int(request, "skip", 0), SKIP_CEILING)
        sort_by = request.query_params.get("sortBy") or DEFAULT_OPERATOR_SORT
        if sort_by not in OPERATOR_SORTS:
            allowed = ", ".join(OPERATOR_SORTS)
            raise serializers.ValidationError({"sortBy": [f"sortBy must be one of: {allowed}."]})
        order = (request.query_params.get("sortOrder") or "ASC").upper()
        if order not in SORT_ORDERS:
            raise serializers.ValidationError({"sortOrder": ["sortOrder must be ASC or DESC."]})
        page, total = operator_figures_page(
            sort_by=sort_by, descending=order == "DESC", skip=skip, limit=limit
        )
        operators = PlatformOperatorSerializer(page, many=True).data
        return Response({"operators": operators, "total": total})


class PlatformConnectorsView(PlatformAPIView):
    """The connector catalogue with each connector's adoption: operators using it (with
    an active connection), its connections (active, inactive, total) and the gateway
    calls through them, all time."""

    @extend_schema(
        operation_id="platform_metrics_connectors", responses=PlatformConnectorListSerializer
    )
    def get(self, request: Request) -> Response:
        return Response(PlatformConnectorListSerializer({"connectors": connector_figures()}).data)


class UsageReportView(JSONErrorsMixin, PlatformAPIView):
    """Every operator's usage over whole UTC days, for invoicing: API calls by endpoint
    category, gateway requests by connector, events ingested by record type, estimated
    storage at the end of the range, and billable units from the platform settings'
    weights; `totals` sums the operators. `Accept: text/csv` answers the same report as
    a table: one row per operator, then a totals row (empty operatorId)."""

    renderer_classes = [DecimalJSONRenderer, CSVRenderer]

    @extend_schema(
        operation_id="platform_usage_report",
        parameters=[UsageReportQuerySerializer],
        responses={
            (200, "application/json"): UsageReportSerializer,
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The same report: columns start, end, operatorId, "
                "operatorName, apiCalls:<category>…, gatewayRequests:<connector>…, "
                "events:<type>…, storageBytes, billableUnits; a row per operator, then "
                "the totals (operatorId empty).",
            ),
        },
    )
    def get(self, request: Request) -> Response:
        params = {
            name: request.query_params[name]
            for name in ("start", "end")
            if name in request.query_params
        }
        query = UsageReportQuerySerializer(data=params)
        query.is_valid(raise_exception=True)
        report = usage_report(start=query.validated_data["start"], end=query.validated_data["end"])
        if not isinstance(request.accepted_renderer, CSVRenderer):
            return Response(_report_json(report))
        response = Response(_report_table(report))
        response["Content-Disposition"] = (
            f'attachment; filename="usage-report-{report.start}-{report.end}.csv"'
        )
        return response


def _report_json(report: UsageReport) -> dict:
    """The report as `UsageReportSerializer` documents it, written directly: a report
    has a line per operator, and a serializer per line costs more than the query
    (tests/reporting/test_platform_schema.py holds the answer to the document)."""

    def figures(line: ReportLine) -> dict:
        return {
            "apiCallsByCategory": line.api_calls_by_category,
            "gatewayRequestsByConnector": line.gateway_requests_by_connector,
            "eventsByType": line.events_by_type,
            "storageBytes": line.storage_bytes,
            "billableUnits": _units(line.billable_units),
        }

    return WithoutDatetimes(
        start=report.start.isoformat(),
        end=report.end.isoformat(),
        operators=[
            {"id": str(line.id), "name": line.name, **figures(line)} for line in report.operators
        ],
        totals=figures(report.totals),
    )


def _units(value: Decimal) -> Decimal:
    """Billable units without trailing zeros and with every digit: `normalize` rounds to
    the context's precision (28 digits by default), and units are exact."""
    with localcontext(EXACT):
        return normalize_decimal(value)


def _report_table(report: UsageReport) -> dict:
    columns = [
        "start",
        "end",
        "operatorId",
        "operatorName",
        *(f"apiCalls:{key}" for key in report.categories),
        *(f"gatewayRequests:{key}" for key in report.connectors),
        *(f"events:{key}" for key in report.event_types),
        "storageBytes",
        "billableUnits",
    ]
    rows = []
    for line in [*report.operators, report.totals]:
        rows.append(
            [
                report.start.isoformat(),
                report.end.isoformat(),
                "" if line.id is None else str(line.id),
                line.name or "",
                *(line.api_calls_by_category[key] for key in report.categories),
                *(line.gateway_requests_by_connector[key] for key in report.connectors),
                *(line.events_by_type.get(key, 0) for key in report.event_types),
                line.storage_bytes,
                line.billable_units,
            ]
        )
    return {
        "columns": [_cell(column) for column in columns],
        "rows": [[_cell(value) for value in row] for row in rows],
    }


# A cell a spreadsheet would run as a formula. Operator names and record types come
# from operators; the report is opened by the platform's staff.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    if isinstance(value, Decimal):
        return format(_units(value), "f")
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value
