from __future__ import annotations

from rest_framework import serializers

from common.api.serializers import (
    NumberField,
    StrictCharField,
    TallyModelSerializer,
    TallySerializer,
)
from tenants.models import PlatformSettings


def _weight(source: str) -> NumberField:
    field = PlatformSettings._meta.get_field(source)
    return NumberField(
        source=source,
        required=False,
        min_value=0,
        max_digits=field.max_digits,
        decimal_places=field.decimal_places,
    )


class BillingWeightsSerializer(TallySerializer):
    """The billing report's units per API call, gateway request, event and gigabyte
    stored (JSON numbers, at least 0). Weights left out keep their values."""

    api_call_weight = _weight("billing_api_call_weight")
    gateway_request_weight = _weight("billing_gateway_request_weight")
    event_weight = _weight("billing_event_weight")
    storage_gb_weight = _weight("billing_storage_gb_weight")


class PlatformSettingsSerializer(TallyModelSerializer):
    """The platform profile. PUT replaces it: name and contactEmail are required;
    `billing` is optional, and sets only the weights it names."""

    name = StrictCharField(min_length=1, max_length=200, trim_whitespace=True)
    # Null when never set (a fresh platform); PUT must send an address.
    contact_email = serializers.EmailField(max_length=254, allow_null=True)
    webhook_url = serializers.URLField(
        max_length=2000, required=False, allow_blank=True, allow_null=True
    )
    billing = BillingWeightsSerializer(source="*", required=False)

    class Meta:
        model = PlatformSettings
        fields = ["name", "contact_email", "webhook_url", "billing", "updated_at"]
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
