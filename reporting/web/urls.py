"""`/dashboard/`: the operator dashboard. See reporting/web/__init__.py for how a page
is added (URL names double as navigation entries)."""

from django.urls import path

from reporting.web import access_pages, collectors, meters, streams, usage, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("operator/", views.operator_switch, name="switch-operator"),
    # Meters and the usage explorer.
    path("meters/", meters.meter_list, name="meters"),
    path("meters/<uuid:pk>/", meters.meter_detail, name="meters-detail"),
    path("usage/", usage.usage_explorer, name="usage"),
    path("usage/csv/", usage.usage_csv, name="usage-csv"),
    # Collectors and streams.
    path("collectors/", collectors.collectors, name="collectors"),
    path("collectors/<uuid:collector_id>/", collectors.collector_detail, name="collectors-detail"),
    path(
        "collectors/<uuid:collector_id>/requeue/",
        collectors.collector_requeue,
        name="collectors-requeue",
    ),
    path("streams/", streams.streams, name="streams"),
    path("streams/import/", streams.stream_import, name="streams-import"),
    path("streams/<uuid:stream_id>/", streams.stream_detail, name="streams-detail"),
    path("streams/<uuid:stream_id>/export/", streams.stream_export, name="streams-export"),
    # Access: applications, parameters, the webhook and its deliveries.
    path("access/", access_pages.applications, name="access"),
    path("access/applications/new/", access_pages.application_new, name="access-application-new"),
    path(
        "access/applications/<uuid:pk>/", access_pages.application_detail, name="access-application"
    ),
    path(
        "access/applications/<uuid:pk>/rotate/",
        access_pages.application_rotate,
        name="access-application-rotate",
    ),
    path(
        "access/applications/<uuid:pk>/revoke/",
        access_pages.application_revoke,
        name="access-application-revoke",
    ),
    path("access/parameters/", access_pages.parameters, name="access-parameters"),
    path("access/parameters/new/", access_pages.parameter_new, name="access-parameter-new"),
    path("access/parameters/<uuid:pk>/", access_pages.parameter_edit, name="access-parameter"),
    path(
        "access/parameters/<uuid:pk>/delete/",
        access_pages.parameter_remove,
        name="access-parameter-delete",
    ),
    path("access/webhook/", access_pages.webhook, name="access-webhook"),
    path("access/webhook/rotate/", access_pages.webhook_rotate, name="access-webhook-rotate"),
    path(
        "access/webhook/deliveries/<uuid:pk>/",
        access_pages.delivery_detail,
        name="access-delivery",
    ),
    path(
        "access/webhook/deliveries/<uuid:pk>/resend/",
        access_pages.delivery_resend,
        name="access-delivery-resend",
    ),
]
