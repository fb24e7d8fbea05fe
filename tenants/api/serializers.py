from __future__ import annotations

from rest_framework import serializers

from common.api.serializers import StrictCharField, TallyModelSerializer
from tenants.models import PlatformSettings


class PlatformSettingsSerializer(TallyModelSerializer):
    """The platform profile. PUT replaces it: name and contactEmail are required."""

    name = StrictCharField(min_length=1, max_length=200, trim_whitespace=True)
    # Null when never set (a fresh platform); PUT must send an address.
    contact_email = serializers.EmailField(max_length=254, allow_null=True)
    webhook_url = serializers.URLField(
        max_length=2000, required=False, allow_blank=True, allow_null=True
    )

    class Meta:
        model = PlatformSettings
        fields = ["name", "contact_email", "webhook_url", "updated_at"]
        read_only_fields = ["updated_at"]

    def validate_contact_email(self, value: str | None) -> str:
        if value is None:
            raise serializers.ValidationError("This field may not be null.")
        return value

    def validate_webhook_url(self, value: str | None) -> str:
        if value and not value.lower().startswith(("https://", "http://")):
            raise serializers.ValidationError("Must be an http or https URL.")
        return value or ""

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["webhookUrl"] = data["webhookUrl"] or None
        data["contactEmail"] = data["contactEmail"] or None
        return data
