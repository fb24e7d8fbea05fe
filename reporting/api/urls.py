from django.urls import path

from reporting.api.views import (
    MetricDefinitionViewSet,
    MetricsViewSet,
    PlatformConnectorsView,
    PlatformOperatorsView,
    PlatformSummaryView,
    UsageReportView,
)

metric_definitions = MetricDefinitionViewSet.as_view({"get": "list", "post": "create"})
metric_definition = MetricDefinitionViewSet.as_view({"get": "retrieve"})
metric_update = MetricDefinitionViewSet.as_view({"post": "update"})
metric_delete = MetricDefinitionViewSet.as_view({"post": "remove"})
metric_value = MetricDefinitionViewSet.as_view({"get": "value"})
metric_preview = MetricDefinitionViewSet.as_view({"post": "preview"})
METRIC = "v1/metrics/<str:metric_id>"

urlpatterns = [
    path("v1/metrics", metric_definitions, name="metric-definitions"),
    # Before the id routes: "preview" is not an id.
    path("v1/metrics/preview", metric_preview, name="metric-preview"),
    path(METRIC, metric_definition, name="metric-definition"),
    path(f"{METRIC}/update", metric_update, name="metric-update"),
    path(f"{METRIC}/delete", metric_delete, name="metric-delete"),
    path(f"{METRIC}/value", metric_value, name="metric-value"),
    path("metrics", MetricsViewSet.as_view({"post": "query"}), name="metrics"),
    path(
        "platform-api/metrics/summary",
        PlatformSummaryView.as_view(),
        name="platform-metrics-summary",
    ),
    path(
        "platform-api/metrics/operators",
        PlatformOperatorsView.as_view(),
        name="platform-metrics-operators",
    ),
    path(
        "platform-api/metrics/connectors",
        PlatformConnectorsView.as_view(),
        name="platform-metrics-connectors",
    ),
    path("platform-api/usage/report", UsageReportView.as_view(), name="platform-usage-report"),
]
