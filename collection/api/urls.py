from django.urls import path

from collection.api.views import CollectorViewSet, IngestionViewSet

COLLECTOR = "online-collection/v1/collectors/<str:collector_id>"

urlpatterns = [
    path(
        "online-collection/v1/collectors",
        CollectorViewSet.as_view({"get": "list", "post": "create"}),
        name="collector-list",
    ),
    path(
        COLLECTOR,
        CollectorViewSet.as_view(
            {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
        ),
        name="collector-detail",
    ),
    path(f"{COLLECTOR}/data", IngestionViewSet.as_view({"post": "create"}), name="collector-data"),
    path(f"{COLLECTOR}/stats", CollectorViewSet.as_view({"get": "stats"}), name="collector-stats"),
]
