from django.urls import path

from tenants.api.token import TokenView
from tenants.api.views import PlatformSettingsView

urlpatterns = [
    path("oauth/token", TokenView.as_view(), name="oauth-token"),
    # The path the reference product's clients use: the same view and rate limit.
    path("authentication/v1/oauth/token", TokenView.as_view(), name="authentication-oauth-token"),
    path("platform-api/settings", PlatformSettingsView.as_view(), name="platform-settings"),
]
