from django.urls import path

from common.api.health import HealthView

urlpatterns = [path("", HealthView.as_view(), name="health")]
