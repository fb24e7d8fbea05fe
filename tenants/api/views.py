from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from tenants.api.base import PlatformAPIView
from tenants.api.serializers import PlatformSettingsSerializer
from tenants.models import PlatformSettings
from tenants.services import platform_settings_update


class PlatformSettingsView(PlatformAPIView):
    """The platform's profile: name, contact e-mail, webhook URL and the billing
    report's weights."""

    @extend_schema(responses=PlatformSettingsSerializer, operation_id="platform_settings_get")
    def get(self, request: Request) -> Response:
        return Response(PlatformSettingsSerializer(PlatformSettings.load()).data)

    @extend_schema(
        request=PlatformSettingsSerializer,
        responses=PlatformSettingsSerializer,
        operation_id="platform_settings_put",
    )
    def put(self, request: Request) -> Response:
        serializer = PlatformSettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        row = platform_settings_update(
            name=data["name"],
            contact_email=data["contact_email"],
            webhook_url=data.get("webhook_url") or "",
            billing={
                field: data[field] for field in PlatformSettings.BILLING_WEIGHTS if field in data
            },
        )
        return Response(PlatformSettingsSerializer(row).data)
