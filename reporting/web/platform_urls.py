"""`/platform/`: the platform dashboard, for staff. See reporting/web/__init__.py."""

from django.urls import path

from reporting.web import platform, platform_pages

app_name = "platform"

urlpatterns = [
    path("", platform.overview, name="overview"),
    path("operators/", platform_pages.operators, name="operators"),
    path("operators/<uuid:pk>/status/", platform_pages.operator_status, name="operators-status"),
    path("connectors/", platform_pages.connectors, name="connectors"),
    path("billing/", platform_pages.billing, name="billing"),
    path("billing/report.csv", platform_pages.billing_csv, name="billing-csv"),
    path("billing/report.json", platform_pages.billing_json, name="billing-json"),
    path("settings/", platform_pages.platform_settings, name="settings"),
]
