from django.urls import path

from collection.api.views import (
    CollectorDetailView,
    CollectorListView,
    CollectorStatsView,
    IngestionView,
)

urlpatterns = [
    path("online-collection/v1/collectors", CollectorListView.as_view(), name="collector-list"),
    path(
        "online-collection/v1/collectors/<str:collector_id>",
        CollectorDetailView.as_view(),
        name="collector-detail",
    ),
    path(
        "online-collection/v1/collectors/<str:collector_id>/data",
        IngestionView.as_view(),
        name="collector-data",
    ),
    path(
        "online-collection/v1/collectors/<str:collector_id>/stats",
        CollectorStatsView.as_view(),
        name="collector-stats",
    ),
]
