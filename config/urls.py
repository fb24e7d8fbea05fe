from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

admin.site.site_header = "Tally administration"
admin.site.site_title = "Tally"
admin.site.index_title = "Operators, metering and collection"

urlpatterns = [
    # The only browser pages so far are the admin's; the root leads there.
    path("", RedirectView.as_view(url="/admin/", permanent=False), name="root"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("health", include("common.api.urls")),
    path("", include("tenants.api.urls")),
    path("", include("parameters.api.urls")),
    path("", include("collection.api.urls")),
    path("", include("metering.api.urls")),
    path("", include("streams.api.urls")),
    path("", include("reporting.api.urls")),
]

handler400 = "common.api.errors.handler400"
handler403 = "common.api.errors.handler403"
handler404 = "common.api.errors.handler404"
handler500 = "common.api.errors.handler500"
