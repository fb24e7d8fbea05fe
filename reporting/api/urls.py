from django.urls import path

from reporting.api.views import (
    MetricsViewSet,
    PlatformConnectorsView,
    PlatformOperatorsView,
    PlatformSummaryView,
    UsageReportView,
)

urlpatterns = [
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
