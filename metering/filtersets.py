import django_filters

from metering.models import BillingAccount, ExchangeRate, Meter, MeterType, PlanAssignment


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


class BillingAccountFilterSet(django_filters.FilterSet):
    customerId = django_filters.CharFilter(field_name="customer__external_id")

    class Meta:
        model = BillingAccount
        fields = ["customerId"]


class PlanAssignmentFilterSet(django_filters.FilterSet):
    accountId = django_filters.CharFilter(field_name="account__account_id")
    pricePlanId = django_filters.UUIDFilter(field_name="plan_id")

    class Meta:
        model = PlanAssignment
        fields = ["accountId", "pricePlanId"]


class ExchangeRateFilterSet(django_filters.FilterSet):
    currency = django_filters.CharFilter(field_name="currency")

    class Meta:
        model = ExchangeRate
        fields = ["currency"]
