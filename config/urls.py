from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

# The header and the site's title come from settings.UNFOLD.
admin.site.index_title = "Overview"

urlpatterns = [
    # `/` (to the user's dashboard, or the login page), login, logout and passwords.
    path("", include("tenants.web.urls")),
    path("dashboard/", include("reporting.web.urls")),
    path("platform/", include("reporting.web.platform_urls")),
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
