import django_filters

from metering.models import Meter, MeterType


class MeterTypeFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Full or partial name.")

    class Meta:
        model = MeterType
        fields = ["name"]


class MeterFilterSet(django_filters.FilterSet):
    meterKey = django_filters.CharFilter(field_name="meter_key")  # wire names are camelCase
    meterTypeId = django_filters.UUIDFilter(field_name="meter_type_id")
    userId = django_filters.CharFilter(field_name="user_id")

    class Meta:
        model = Meter
        fields = ["meterKey", "meterTypeId", "userId"]
