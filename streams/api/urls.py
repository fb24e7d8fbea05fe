from django.urls import path

from streams.api.views import (
    AggregationStoreViewSet,
    FunctionViewSet,
    SolutionViewSet,
    StreamViewSet,
)

BASE = "stream-management/v1"
AGGREGATION = "aggregation/v1"

urlpatterns = [
    path(f"{BASE}/streams", StreamViewSet.as_view({"get": "page"}), name="stream-list"),
    path(
        f"{BASE}/streams/import",
        StreamViewSet.as_view({"post": "import_stream"}),
        name="stream-import",
    ),
    path(
        f"{BASE}/streams/<str:pk>",
        StreamViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
        name="stream",
    ),
    path(
        f"{BASE}/streams/<str:pk>/export",
        StreamViewSet.as_view({"get": "export"}),
        name="stream-export",
    ),
    path(
        f"{BASE}/streams/<str:pk>/versions",
        StreamViewSet.as_view({"get": "versions"}),
        name="stream-versions",
    ),
    path(
        f"{BASE}/streams/<str:pk>/executions",
        StreamViewSet.as_view({"get": "executions", "post": "execute"}),
        name="stream-executions",
    ),
    path(
        f"{BASE}/streams/<str:pk>/logs", StreamViewSet.as_view({"get": "logs"}), name="stream-logs"
    ),
    path(
        f"{BASE}/streams/<str:pk>/preview",
        StreamViewSet.as_view({"post": "preview"}),
        name="stream-preview",
    ),
    path(f"{BASE}/functions", FunctionViewSet.as_view({"get": "catalogue"}), name="functions"),
    path(f"{BASE}/solutions", SolutionViewSet.as_view({"get": "list"}), name="solutions"),
    path(
        f"{AGGREGATION}/stores",
        AggregationStoreViewSet.as_view({"get": "page"}),
        name="aggregation-stores",
    ),
    path(
        f"{AGGREGATION}/stores/<str:pk>/sessions/lookup",
        AggregationStoreViewSet.as_view({"get": "session_lookup"}),
        name="aggregation-session-lookup",
    ),
]
