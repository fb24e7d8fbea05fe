"""`POST /metrics`: usage, revenue and event metrics, answered from rollups; and the
platform API's metrics and billing report (`/platform-api/...`, platform keys)."""

from __future__ import annotations

import datetime
import re
from decimal import Decimal, localcontext

from django.http import Http404
from django.utils import timezone
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

from collection.api.serializers import DeletedCountSerializer
from common.api.exceptions import Conflict
from common.api.filters import SORT_ORDERS
from common.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, query_int
from common.api.renderers import CSVRenderer, DecimalJSONRenderer
from common.json import WithoutDatetimes, format_datetime, normalize_decimal
from common.json import loads as json_loads
from reporting import definitions
from reporting.api.serializers import (
    MetricCreateSerializer,
    MetricDefinitionSerializer,
    MetricPreviewSerializer,
    MetricsAnswerSerializer,
    MetricsSerializer,
    MetricUpdateSerializer,
    MetricValueSerializer,
    PlatformConnectorListSerializer,
    PlatformOperatorListSerializer,
    PlatformOperatorSerializer,
    PlatformSummarySerializer,
    UsageReportQuerySerializer,
    UsageReportSerializer,
    definition_errors,
)
from reporting.metrics import MetricsInvalid, metrics_request_check
from reporting.models import MetricDefinition
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
from reporting.sandbox import SqlFailed, SqlRejected
from reporting.selectors import (
    MetricBackfilling,
    MetricResult,
    NoCurrentCycle,
    metric_value,
    metrics_answer,
    timeframe_window,
)
from reporting.services import MetricNameTaken, metric_create, metric_delete, metric_update
from tenants.api.base import OperatorViewSet, PlatformAPIView, caller_operator


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


# -- Metric definitions (/v1/metrics) ------------------------------------------------------

METRIC_ID = OpenApiParameter(
    "metric_id", str, OpenApiParameter.PATH, description="The metric's id."
)
TIMEFRAME_PARAMETER = OpenApiParameter(
    "timeframe",
    str,
    description='JSON, e.g. {"type": "RANGE", "start": "2026-01-01T00:00:00Z", "end": '
    '"2026-02-01T00:00:00Z"}, or a bare type (ALL, CURRENT_CYCLE); the same fields may '
    "also be sent as timeframe[type]=RANGE&timeframe[start]=…&timeframe[end]=…. Types: ALL "
    "(the default), RANGE (start inclusive, end exclusive; ABSOLUTE is read as RANGE), "
    "CURRENT_CYCLE (the customer's current pricing cycle; accountId picks the billing "
    "account when the customer has several).",
)
CUSTOMER_PARAMETER = OpenApiParameter(
    "customerId", str, required=True, description="The customer (records' customerId)."
)
# An indexed metric still backfilling: how soon to ask again.
BACKFILL_RETRY_SECONDS = 5


def _timeframe_from_query(params) -> dict | None:
    """The timeframe of a value request: JSON in `timeframe`, a bare type, or the
    fields as `timeframe[field]=…`."""
    raw = params.get("timeframe")
    fields = {
        key[len("timeframe[") : -1]: value
        for key, value in params.items()
        if key.startswith("timeframe[") and key.endswith("]")
    }
    if raw is not None and fields:
        raise serializers.ValidationError(
            {"timeframe": ["Send the timeframe once: as JSON or as timeframe[…] fields."]}
        )
    if fields:
        return fields
    if raw is None or raw == "":
        return None
    try:
        return json_loads(raw)
    except ValueError as error:
        if re.fullmatch(r"\s*[A-Za-z_]+\s*", raw):  # a bare type: timeframe=ALL
            return {"type": raw.strip()}
        raise serializers.ValidationError(
            {"timeframe": ['timeframe must be JSON, e.g. {"type": "ALL"}.']}
        ) from error


def _bare_timeframe(raw):
    """A timeframe given as its type alone ("ALL") means {"type": "ALL"}."""
    return {"type": raw} if isinstance(raw, str) else raw


def _value_answer(
    *,
    operator,
    spec: definitions.MetricSpec | None,
    customer_id: str,
    raw_timeframe,
    metric: MetricDefinition | None,
    name: str | None,
) -> dict:
    try:
        if spec is None:  # a stored metric: checked again, the rules may have tightened
            spec = metric.spec()
        timeframe = definitions.timeframe_parse(raw_timeframe)
        window, answered = timeframe_window(
            operator_id=operator.pk,
            customer_id=customer_id,
            timeframe=timeframe,
            now=timezone.now(),
        )
        value = metric_value(
            operator_id=operator.pk,
            spec=spec,
            customer_id=customer_id,
            window=window,
            metric=metric,
        )
    except definitions.DefinitionInvalid as invalid:
        raise definition_errors(invalid) from invalid
    except NoCurrentCycle as missing:
        raise serializers.ValidationError({"timeframe": [str(missing)]}) from missing
    except MetricBackfilling as backfilling:
        raise MetricStillBackfilling(backfilling.progress) from backfilling
    except (SqlFailed, SqlRejected) as failed:
        raise serializers.ValidationError({"sql": [str(failed)]}) from failed
    if isinstance(value, Decimal):
        value = normalize_decimal(value)
    return {
        "id": metric.pk if metric is not None else None,
        "name": name,
        "customerId": customer_id,
        "value": value,
        "queryType": spec.query_type,
        "timeframe": {
            key: format_datetime(item) if isinstance(item, datetime.datetime) else item
            for key, item in answered.items()
        },
    }


class MetricStillBackfilling(Conflict):
    retry_after = BACKFILL_RETRY_SECONDS

    def __init__(self, progress: float) -> None:
        super().__init__(
            f"The metric is backfilling: its rollups cover {progress:.0%} of the records "
            "stored before it; ask again shortly (its indexStatus says when it is READY)."
        )


class MetricDefinitionViewSet(OperatorViewSet):
    """Metric definitions: the caller's live ones only (a deleted metric is a 404).

    The list answers a bare JSON array, as the reference does, paged by `limit` and
    `skip`; the `X-Total-Count` header gives the number of definitions."""

    queryset = MetricDefinition.objects.live()
    serializer_class = MetricDefinitionSerializer
    lookup_url_kwarg = "metric_id"
    extra_error_statuses = ["409"]
    required_scopes = {
        "list": "metrics:read",
        "retrieve": "metrics:read",
        "value": "metrics:read",
        "preview": "metrics:read",
        "create": "metrics:write",
        "update": "metrics:write",
        "remove": "metrics:write",
    }
    rate_limit_group = "metrics"
    # The list is a bare array (X-Total-Count gives the total), not the paged object.
    pagination_class = None

    @extend_schema(
        operation_id="metric_definitions_list",
        parameters=[
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
                description=f"How many (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}).",
            ),
            OpenApiParameter(
                "skip", {"type": "integer", "minimum": 0}, description="How many to skip."
            ),
            OpenApiParameter(
                "X-Total-Count",
                int,
                OpenApiParameter.HEADER,
                response=[200],
                description="How many live definitions the operator has.",
            ),
        ],
        responses=MetricDefinitionSerializer(many=True),
    )
    def list(self, request: Request) -> Response:
        limit = query_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        skip = min(query_int(request, "skip", 0), SKIP_CEILING)
        queryset = self.get_queryset().order_by("created_at", "id")
        total = queryset.count()
        page = list(queryset[skip : skip + limit]) if limit and skip < total else []
        return Response(
            MetricDefinitionSerializer(page, many=True).data, headers={"X-Total-Count": str(total)}
        )

    @extend_schema(
        operation_id="metric_definitions_create",
        request=MetricCreateSerializer,
        responses={201: MetricDefinitionSerializer},
    )
    def create(self, request: Request) -> Response:
        serializer = MetricCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        try:
            metric = metric_create(operator=caller_operator(self), **data)
        except MetricNameTaken as taken:
            raise Conflict(f"A metric named {data['name']!r} exists already.") from taken
        return Response(MetricDefinitionSerializer(metric).data, status=201)

    @extend_schema(operation_id="metric_definitions_get", parameters=[METRIC_ID])
    def retrieve(self, request: Request, metric_id: str) -> Response:
        return Response(MetricDefinitionSerializer(self.get_object()).data)

    @extend_schema(
        operation_id="metric_definitions_update",
        parameters=[METRIC_ID],
        request=MetricUpdateSerializer,
        responses={200: MetricDefinitionSerializer},
    )
    def update(self, request: Request, metric_id: str) -> Response:
        metric = self.get_object()
        serializer = MetricUpdateSerializer(metric, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            metric = metric_update(metric=metric, changes=dict(serializer.validated_data))
        except definitions.DefinitionInvalid as invalid:
            raise definition_errors(invalid) from invalid
        except MetricNameTaken as taken:
            raise Conflict(f"A metric named {str(taken)!r} exists already.") from taken
        except MetricDefinition.DoesNotExist as gone:
            raise Http404 from gone
        return Response(MetricDefinitionSerializer(metric).data)

    @extend_schema(
        operation_id="metric_definitions_delete",
        parameters=[METRIC_ID],
        request=None,
        responses={200: DeletedCountSerializer},
    )
    def remove(self, request: Request, metric_id: str) -> Response:
        """Soft delete. (Not named `delete`: DRF would route HTTP DELETE to it.)"""
        try:
            metric_delete(metric=self.get_object())
        except MetricDefinition.DoesNotExist as gone:
            raise Http404 from gone
        return Response({"deletedCount": 1})

    @extend_schema(
        operation_id="metric_definitions_value",
        parameters=[METRIC_ID, CUSTOMER_PARAMETER, TIMEFRAME_PARAMETER],
        responses={200: MetricValueSerializer},
    )
    def value(self, request: Request, metric_id: str) -> Response:
        """The metric's value for one customer over a timeframe."""
        metric = self.get_object()
        customer_id = request.query_params.get("customerId")
        if not customer_id:
            raise serializers.ValidationError({"customerId": ["This parameter is required."]})
        if "\x00" in customer_id or len(customer_id) > 320:
            raise serializers.ValidationError({"customerId": ["Not a customer id."]})
        answer = _value_answer(
            operator=caller_operator(self),
            spec=None,
            customer_id=customer_id,
            raw_timeframe=_timeframe_from_query(request.query_params),
            metric=metric,
            name=metric.name,
        )
        return Response(answer)

    @extend_schema(
        operation_id="metric_definitions_preview",
        request=MetricPreviewSerializer,
        responses={200: MetricValueSerializer},
    )
    def preview(self, request: Request) -> Response:
        """A definition's value for one customer, without storing it: check a metric
        (a SQL one especially) before creating it. Indexed definitions are computed
        from the records, as simple ones (the same value)."""
        serializer = MetricPreviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        answer = _value_answer(
            operator=caller_operator(self),
            spec=serializer.spec,
            customer_id=data["customer_id"],
            raw_timeframe=_bare_timeframe(data.get("timeframe")),
            metric=None,
            name=data.get("name"),
        )
        return Response(answer)
