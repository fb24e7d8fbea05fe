from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import Count

from common.admin import ReadOnlyInline, ServiceAdminMixin, adopt_created
from metering import services
from metering.cycles import Schedule
from metering.forms import MeterForm, MeterTypeForm, plain_number, thresholds_summary
from metering.models import (
    Alert,
    BillingAccount,
    Customer,
    CycleRollup,
    DeliveryAttempt,
    ExchangeRate,
    Meter,
    MeterPeriod,
    MeterType,
    Notification,
    PlanAssignment,
    PlanRate,
    PricePlan,
    WebhookEndpoint,
)
from metering.pricing import PricingInvalid, tiers_parse
from tenants.models import CURRENCY_PATTERN


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


# -- Pricing ------------------------------------------------------------------------------

CURRENCY_HELP = "ISO 4217: three upper-case letters, like USD."


def _currency_clean(value: str) -> str:
    if not CURRENCY_PATTERN.match(value or ""):
        raise forms.ValidationError(CURRENCY_HELP)
    return value


class BillingAccountForm(forms.ModelForm):
    class Meta:
        model = BillingAccount
        fields = ["operator", "customer", "account_id", "name", "invoice_currency"]
        help_texts = {"invoice_currency": CURRENCY_HELP}

    def clean_invoice_currency(self) -> str:
        return _currency_clean(self.cleaned_data["invoice_currency"])

    def clean_account_id(self) -> str:
        value = self.cleaned_data["account_id"]
        if "/" in value:  # the API addresses accounts by this id in the path
            raise forms.ValidationError("Must not contain '/'.")
        return value

    def clean(self):
        data = super().clean()
        operator, customer = data.get("operator"), data.get("customer")
        if operator and customer and customer.operator_id != operator.pk:
            self.add_error("customer", "This customer belongs to another operator.")
        return data


class AssignmentInline(ReadOnlyInline):
    model = PlanAssignment
    fields = ["plan", "effective_from", "cycle", "anchor_day", "created_at"]
    ordering = ["effective_from"]
    show_change_link = True


class CycleInline(ReadOnlyInline):
    """The account's pricing cycles with their usage and charge so far."""

    model = CycleRollup
    fields = ["cycle_start", "cycle_end", "meter_type", "plan", "usage_exact", "revenue_exact"]
    ordering = ["-cycle_start", "meter_type__name"]
    verbose_name_plural = "pricing cycles"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("meter_type", "plan")

    @admin.display(description="usage")
    def usage_exact(self, obj: CycleRollup):
        return plain_number(obj.usage)

    @admin.display(description="revenue (base currency)")
    def revenue_exact(self, obj: CycleRollup):
        return plain_number(obj.revenue)


@admin.register(CycleRollup)
class CycleRollupAdmin(admin.ModelAdmin):
    """Pricing cycles as usage reached them: written by usage as it is applied, so read
    only here."""

    list_display = [
        "account_key",
        "user_id",
        "meter_type",
        "cycle_start",
        "cycle_end",
        "usage_exact",
        "revenue_exact",
        "record_count",
        "operator",
    ]
    list_filter = ["operator", "cycle_start"]
    list_select_related = ["meter_type", "operator"]
    search_fields = ["account_key", "user_id", "meter_type__name"]
    date_hierarchy = "cycle_start"
    ordering = ["-cycle_start", "account_key"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="usage", ordering="usage")
    def usage_exact(self, obj: CycleRollup):
        return plain_number(obj.usage)

    @admin.display(description="revenue (base currency)", ordering="revenue")
    def revenue_exact(self, obj: CycleRollup):
        return plain_number(obj.revenue)


@admin.register(BillingAccount)
class BillingAccountAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = BillingAccountForm
    list_display = ["account_id", "name", "customer", "operator", "invoice_currency", "created_at"]
    list_filter = ["invoice_currency", "operator"]
    list_select_related = ["customer", "operator"]
    search_fields = ["account_id", "name", "customer__external_id"]
    autocomplete_fields = ["customer"]
    readonly_fields = ["created_at"]
    inlines = [AssignmentInline, CycleInline]

    def get_deleted_objects(self, objs, request):
        # Cycles are never deleted by hand, but go with their account.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(CycleRollup._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    def delete_model(self, request, obj: BillingAccount) -> None:
        services.billing_account_delete(account=obj)

    def delete_queryset(self, request, queryset) -> None:
        for account in queryset:
            services.billing_account_delete(account=account)

    def get_readonly_fields(self, request, obj=None):
        # The ids are the account's identity in the API.
        if obj is None:
            return self.readonly_fields
        return [*self.readonly_fields, "operator", "customer", "account_id"]

    def save_model(self, request, obj: BillingAccount, form, change) -> None:
        data = form.cleaned_data
        if change:
            fields = {name: data[name] for name in ("name", "invoice_currency")}
            services.billing_account_update(account=obj, **fields)
            return
        created = services.billing_account_create(
            operator=data["operator"],
            account_id=data["account_id"],
            customer_id=data["customer"].external_id,
            name=data["name"],
            invoice_currency=data["invoice_currency"],
        )
        adopt_created(obj, created)


class PlanRateForm(forms.ModelForm):
    """The API's rules for a rate: PER_UNIT has a unit price and no tiers, GRADUATED has
    tiers (metering.pricing.tiers_parse) and no unit price."""

    class Meta:
        model = PlanRate
        fields = ["meter_type", "model", "unit_price", "tiers"]

    def clean(self):
        data = super().clean()
        model, unit_price, tiers = data.get("model"), data.get("unit_price"), data.get("tiers")
        if unit_price is not None and unit_price < 0:
            self.add_error("unit_price", "Must not be negative.")
        if model == PlanRate.Model.PER_UNIT:
            if unit_price is None:
                self.add_error("unit_price", "Required for PER_UNIT rates.")
            if tiers:
                self.add_error("tiers", "Only GRADUATED rates have tiers.")
        elif model == PlanRate.Model.GRADUATED:
            if unit_price is not None:
                self.add_error("unit_price", "GRADUATED rates are priced by their tiers.")
            try:
                tiers_parse(tiers)
            except PricingInvalid as exc:
                self.add_error("tiers", str(exc))
        return data


class PlanRateFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        # Rates price only the plan's own operator's meter types.
        operator_id = self.instance.operator_id
        for form in self.forms:
            meter_type = form.cleaned_data.get("meter_type") if form.cleaned_data else None
            if meter_type is not None and meter_type.operator_id != operator_id:
                form.add_error("meter_type", "This meter type belongs to another operator.")


class PlanRateInline(admin.TabularInline):
    model = PlanRate
    form = PlanRateForm
    formset = PlanRateFormSet
    extra = 0
    autocomplete_fields = ["meter_type"]


@admin.register(PricePlan)
class PricePlanAdmin(admin.ModelAdmin):
    list_display = ["name", "operator", "rate_count", "assignment_count", "created_at"]
    list_filter = ["operator"]
    list_select_related = ["operator"]
    search_fields = ["name", "description"]
    readonly_fields = ["created_at"]
    inlines = [PlanRateInline]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "operator"] if obj else self.readonly_fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _rate_count=Count("rates", distinct=True),
                _assignment_count=Count("assignments", distinct=True),
            )
        )

    @admin.display(description="rates", ordering="_rate_count")
    def rate_count(self, obj: PricePlan) -> int:
        return obj._rate_count

    @admin.display(description="assignments", ordering="_assignment_count")
    def assignment_count(self, obj: PricePlan) -> int:
        return obj._assignment_count

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        if change and any(formset.has_changed() for formset in formsets):
            # New rates price the plan's accounts again, as a PUT of the plan does.
            services.price_plan_reprice(plan=form.instance)


@admin.register(PlanRate)
class PlanRateAdmin(admin.ModelAdmin):
    """Rates are edited on their plan's page; this list finds them across plans."""

    list_display = ["plan", "meter_type", "model", "unit_price_shown", "tier_count"]
    list_filter = ["model", "plan__operator"]
    list_select_related = ["plan", "meter_type"]
    search_fields = ["plan__name", "meter_type__name"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="unit price", ordering="unit_price")
    def unit_price_shown(self, obj: PlanRate):
        return _exact(obj.unit_price)

    @admin.display(description="tiers")
    def tier_count(self, obj: PlanRate) -> int:
        return len(obj.tiers or [])


class PlanAssignmentForm(forms.ModelForm):
    class Meta:
        model = PlanAssignment
        fields = ["account", "plan", "effective_from", "cycle", "anchor_day"]
        help_texts = {"anchor_day": "1-7 (Monday-Sunday) for WEEKLY, 1-31 otherwise."}

    def clean(self):
        data = super().clean()
        account, plan = data.get("account"), data.get("plan")
        if account and plan and account.operator_id != plan.operator_id:
            self.add_error("plan", "This plan belongs to another operator.")
        if data.get("effective_from") and data.get("cycle") and data.get("anchor_day"):
            try:
                Schedule(data["effective_from"], data["cycle"], data["anchor_day"])
            except ValueError as exc:
                self.add_error("anchor_day", str(exc))
        return data


@admin.register(PlanAssignment)
class PlanAssignmentAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = PlanAssignmentForm
    list_display = ["account", "plan", "effective_from", "cycle", "anchor_day", "operator"]
    list_filter = ["cycle", "operator"]
    list_select_related = ["account", "plan", "operator"]
    search_fields = ["account__account_id", "account__name", "plan__name"]
    autocomplete_fields = ["account", "plan"]
    date_hierarchy = "effective_from"

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # an assignment is replaced by a later one or deleted, not edited

    def save_model(self, request, obj: PlanAssignment, form, change) -> None:
        data = form.cleaned_data
        created = services.plan_assignment_create(
            operator=data["account"].operator, **{name: data[name] for name in form.Meta.fields}
        )
        adopt_created(obj, created)

    def delete_model(self, request, obj: PlanAssignment) -> None:
        services.plan_assignment_delete(assignment=obj)

    def delete_queryset(self, request, queryset) -> None:
        for assignment in queryset:
            services.plan_assignment_delete(assignment=assignment)


class ExchangeRateForm(forms.ModelForm):
    class Meta:
        model = ExchangeRate
        fields = ["operator", "currency", "date", "rate"]
        help_texts = {"rate": "Units of the currency one unit of the base currency buys."}

    def clean_currency(self) -> str:
        return _currency_clean(self.cleaned_data["currency"])

    def clean_rate(self):
        rate = self.cleaned_data["rate"]
        if rate is not None and rate <= 0:
            raise forms.ValidationError("Must be above zero.")
        return rate


@admin.register(ExchangeRate)
class ExchangeRateAdmin(admin.ModelAdmin):
    form = ExchangeRateForm
    list_display = ["currency", "date", "rate_shown", "operator"]
    list_filter = ["currency", "operator"]
    list_select_related = ["operator"]
    search_fields = ["currency"]
    date_hierarchy = "date"

    def get_readonly_fields(self, request, obj=None):
        return ["operator", "currency", "date"] if obj else []

    def save_model(self, request, obj: ExchangeRate, form, change) -> None:
        saved, _ = services.exchange_rate_set(
            operator=obj.operator, currency=obj.currency, date=obj.date, rate=obj.rate
        )
        adopt_created(obj, saved)

    @admin.display(description="rate", ordering="rate")
    def rate_shown(self, obj: ExchangeRate):
        return _exact(obj.rate)
