from django.urls import path

from reporting.api.views import MetricsViewSet

urlpatterns = [
    path("metrics", MetricsViewSet.as_view({"post": "query"}), name="metrics"),
]
