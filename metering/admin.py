from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.db.models import Count

from common.admin import ReadOnlyInline, ServiceAdminMixin, adopt_created
from metering import services
from metering.forms import MeterForm, MeterTypeForm, plain_number, thresholds_summary
from metering.models import (
    Alert,
    Customer,
    DeliveryAttempt,
    Meter,
    MeterPeriod,
    MeterType,
    Notification,
    WebhookEndpoint,
)


@admin.register(Customer)
class CustomerAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ["external_id", "name", "email", "operator", "meter_count", "created_at"]
    list_filter = ["operator"]
    list_select_related = ["operator"]
    search_fields = ["external_id", "name", "email"]
    fields = ["operator", "external_id", "name", "email", "created_at"]
    readonly_fields = ["created_at"]

    def get_readonly_fields(self, request, obj=None):
        # The external id is the customer's identity in usage and meters.
        return [*self.readonly_fields, "operator", "external_id"] if obj else self.readonly_fields

    def save_model(self, request, obj: Customer, form, change) -> None:
        data = form.cleaned_data
        if change:
            services.customer_update(customer=obj, name=data["name"], email=data["email"])
            return
        created = services.customer_create(
            operator=data["operator"],
            external_id=data["external_id"],
            name=data["name"],
            email=data["email"],
        )
        adopt_created(obj, created)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_meter_count=Count("meters"))

    @admin.display(description="meters", ordering="_meter_count")
    def meter_count(self, obj: Customer) -> int:
        return obj._meter_count


def _exact(value):
    """A decimal without the column's trailing zeros (49.5, not 49.5000000000)."""
    return None if value is None else plain_number(value)


@admin.register(MeterType)
class MeterTypeAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = MeterTypeForm
    list_display = [
        "name",
        "operator",
        "aggregation",
        "unit",
        "category",
        "capacity_shown",
        "thresholds_shown",
        "reset_cron",
        "timezone",
        "meter_count",
        "updated_at",
    ]
    list_filter = ["aggregation", "operator"]
    list_select_related = ["operator"]
    search_fields = ["name", "external_ref", "category"]
    readonly_fields = ["aggregation", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # The aggregation is fixed once meters count with it; the owner never changes.
        if obj is None:
            return ["created_at", "updated_at"]
        return [*self.readonly_fields, "operator"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_meter_count=Count("meters"))

    @admin.display(description="meters", ordering="_meter_count")
    def meter_count(self, obj: MeterType) -> int:
        return obj._meter_count

    def save_model(self, request, obj: MeterType, form, change) -> None:
        fields = {name: form.cleaned_data[name] for name in form.changed_data}
        if change:
            fields.pop("aggregation", None)  # fixed once created (read-only on the page)
            if fields:
                services.meter_type_update(meter_type=obj, **fields)
            return
        fields = {name: value for name, value in form.cleaned_data.items() if name != "operator"}
        created = services.meter_type_create(operator=form.cleaned_data["operator"], **fields)
        adopt_created(obj, created)

    def delete_model(self, request, obj: MeterType) -> None:
        services.meter_type_delete(meter_type=obj)

    @admin.display(description="capacity", ordering="capacity")
    def capacity_shown(self, obj: MeterType):
        return _exact(obj.capacity)

    @admin.display(description="thresholds")
    def thresholds_shown(self, obj: MeterType) -> str:
        return thresholds_summary(obj.thresholds)


class PeriodInline(ReadOnlyInline):
    model = MeterPeriod
    fields = ["period_start", "period_end", "value", "record_count", "closed_at", "corrected_at"]
    ordering = ["-period_start"]
    show_change_link = True


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    form = MeterForm
    list_display = [
        "user_id",
        "meter_key",
        "meter_type",
        "operator",
        "value_shown",
        "capacity_shown",
        "usage_percent",
        "period_start",
        "period_end",
    ]
    list_filter = ["meter_type__aggregation", "operator", "delete_on_reset"]
    list_select_related = ["meter_type", "operator"]
    search_fields = ["user_id", "meter_key", "id"]
    readonly_fields = [
        "operator",
        "meter_type",
        "customer",
        "meter_key",
        "user_id",
        "value_shown",
        "group_breakdowns",
        "carry_first",
        "carry_last",
        "record_count",
        "first_event_at",
        "last_event_at",
        "period_start",
        "period_end",
        "created_at",
        "updated_at",
    ]
    fields = [
        *readonly_fields[:5],
        "capacity",
        "uses_type_thresholds",
        "thresholds",
        "custom_fields",
        "delete_on_reset",
        *readonly_fields[5:],
    ]
    inlines = [PeriodInline]

    def has_add_permission(self, request) -> bool:
        return False  # meters are created through the API or by usage

    def save_model(self, request, obj: Meter, form, change) -> None:
        editable = ("capacity", "thresholds", "custom_fields", "delete_on_reset")
        fields = {name: form.cleaned_data[name] for name in editable if name in form.cleaned_data}
        services.meter_update(meter=obj, **fields)

    def delete_model(self, request, obj: Meter) -> None:
        services.meter_delete(meter=obj)

    @admin.display(description="value", ordering="value")
    def value_shown(self, obj: Meter):
        return _exact(obj.value)

    @admin.display(description="capacity")
    def capacity_shown(self, obj: Meter):
        return _exact(obj.effective_capacity)

    @admin.display(description="used")
    def usage_percent(self, obj: Meter) -> str:
        capacity = obj.effective_capacity
        if not capacity:
            return "-"
        return f"{obj.value / capacity * 100:.1f} %"


@admin.register(MeterPeriod)
class MeterPeriodAdmin(admin.ModelAdmin):
    list_display = [
        "user_id",
        "meter_key",
        "meter_type",
        "period_start",
        "period_end",
        "value_shown",
        "record_count",
        "corrected_at",
    ]
    list_filter = ["operator", "meter_type"]
    list_select_related = ["meter_type"]
    search_fields = ["user_id", "meter_key"]
    date_hierarchy = "period_start"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="value", ordering="value")
    def value_shown(self, obj: MeterPeriod):
        return _exact(obj.value)


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = [
        "crossed_at",
        "meter",
        "threshold_name",
        "threshold_key",
        "threshold_shown",
        "meter_value_shown",
        "period_start",
    ]
    list_filter = ["operator"]
    list_select_related = ["meter"]
    search_fields = ["meter__user_id", "meter__meter_key", "threshold_key", "threshold_name"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="threshold", ordering="threshold_value")
    def threshold_shown(self, obj: Alert):
        return _exact(obj.threshold_value)

    @admin.display(description="meter value", ordering="meter_value")
    def meter_value_shown(self, obj: Alert):
        return _exact(obj.meter_value)


class DeliveryAttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = ["attempted_at", "succeeded", "response_status", "duration_ms", "error"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "operator", "status", "attempts", "next_attempt_at"]
    list_filter = ["status", "kind", "operator"]
    list_select_related = ["operator"]
    readonly_fields = [
        "operator",
        "kind",
        "payload",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    ]
    inlines = [DeliveryAttemptInline]
    actions = ["resend"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Resend selected notifications")
    def resend(self, request, queryset) -> None:
        from metering.notifications import notification_resend

        for notification in queryset:
            notification_resend(notification=notification)
        self.message_user(request, f"Queued {queryset.count()} notification(s) again.")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["operator", "url", "enabled", "created_at"]
    list_filter = ["enabled"]
    list_select_related = ["operator"]
    search_fields = ["operator__name", "url"]
    fields = ["operator", "url", "enabled", "signing_secret", "created_at"]
    readonly_fields = ["signing_secret", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "operator"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj: WebhookEndpoint, form, change) -> None:
        from metering.notifications import webhook_endpoint_set

        saved = webhook_endpoint_set(operator=obj.operator, url=obj.url, enabled=obj.enabled)
        obj.signing_secret = saved.signing_secret
        obj._state.adding = False
