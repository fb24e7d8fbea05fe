from django.urls import path

from tenants.api.token import TokenView
from tenants.api.views import PlatformSettingsView

urlpatterns = [
    path("oauth/token", TokenView.as_view(), name="oauth-token"),
    path("platform-api/settings", PlatformSettingsView.as_view(), name="platform-settings"),
]
