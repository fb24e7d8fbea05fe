"""The project's URLs plus one page built the way dashboard pages are (operator_page,
operator_object_or_404), to test the access rules that every object page inherits."""

from django.http import HttpResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns
from metering.models import Meter
from reporting.web.access import operator_object_or_404, operator_page


@operator_page
def meter_page(request, pk):
    meter = operator_object_or_404(request, Meter, pk=pk)
    if request.method == "POST":
        return HttpResponse(f"changed {meter.user_id}")
    return HttpResponse(f"meter {meter.user_id}")


urlpatterns = [
    path("test-pages/meters/<uuid:pk>/", meter_page, name="test-meter-page"),
    *project_urlpatterns,
]
