from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import Count, Exists, OuterRef, Subquery, UUIDField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils.html import format_html, format_html_join
from unfold.contrib.filters.admin import AutocompleteSelectFilter
from unfold.decorators import display

from common.admin import (
    LargeTableAdminMixin,
    ModelAdmin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    ServiceAdminMixin,
    StackedInline,
    admin_link,
    admin_url,
    adopt_created,
    changelist_link,
    exact_number,
    shortened,
    usage_bar,
)
from common.json import InvalidJSON, dumps, loads, normalize_decimal
from metering import services
from metering.cycles import Schedule
from metering.forms import MeterForm, MeterTypeForm, StoredRowsField, thresholds_summary
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
    UsageRollup,
    WebhookEndpoint,
)
from metering.notifications import notification_resend, webhook_endpoint_set
from metering.pricing import PricingInvalid, tiers_parse
from tenants.models import CURRENCY_PATTERN

NOTIFICATION_STATUS_LABELS = {
    "delivered": "success",
    "pending": "info",
    "failed": "danger",
    "skipped": "warning",
}


def _breakdowns_table(breakdowns: dict[str, Any] | None) -> str:
    """A meter's or period's value per group field value, as a small table."""
    if not breakdowns:
        return "-"
    rows = format_html_join(
        "",
        '<tr><td class="pr-4 py-1">{}</td><td class="py-1 text-right">{}</td></tr>',
        ((group, exact_number(Decimal(str(value)))) for group, value in breakdowns.items()),
    )
    return format_html("<table>{}</table>", rows)


class JSONObjectRowsWidget(forms.MultiWidget):
    """Key and value inputs, one pair per row."""

    template_name = "metering/widgets/key_value_rows.html"

    def __init__(self, rows: int, attrs=None) -> None:
        widgets = []
        for _ in range(rows):
            widgets += [
                forms.TextInput(attrs={"placeholder": "name", "maxlength": 100}),
                forms.TextInput(attrs={"placeholder": "value"}),
            ]
        self.rows = rows
        super().__init__(widgets, attrs)

    def decompress(self, value):
        return JSONObjectRowsField.rows_of(value, self.rows)

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        parts = context["widget"]["subwidgets"]
        context["widget"]["rows"] = [parts[start : start + 2] for start in range(0, len(parts), 2)]
        return context


class JSONObjectRowsField(StoredRowsField):
    """A JSON object (custom fields) edited as name / value rows instead of raw JSON.

    A value that reads as JSON (`12`, `true`, `null`, `{"a": 1}`, `"12"`) is stored as
    that JSON; any other text is stored as a string. Blank rows are skipped.
    """

    def __init__(self, *, rows: int = 5, **kwargs) -> None:
        self.rows = rows
        fields = []
        for _ in range(rows):
            fields += [forms.CharField(required=False), forms.CharField(required=False)]
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "help_text",
            "Numbers, true, false and JSON are stored as JSON; other text as a string "
            '(write "12" in quotes to keep a number as text).',
        )
        super().__init__(
            fields, widget=JSONObjectRowsWidget(rows), require_all_fields=False, **kwargs
        )

    @staticmethod
    def rows_of(stored: Any, rows: int) -> list[str]:
        values: list[str] = []
        for key, value in (stored or {}).items():
            # Text shown bare reads back as text; text that would read as JSON ("12",
            # "true") is shown quoted, so that saving the page again keeps it text.
            bare = isinstance(value, str) and _json_or_text(value) == value
            values += [key, value if bare else dumps(value).decode()]
        return values + [""] * (2 * rows - len(values))

    empty: Any = {}

    def stored_rows(self, stored) -> list[str]:
        return self.rows_of(stored, self.rows)

    def compress(self, data_list) -> dict[str, Any]:
        result: dict[str, Any] = {}
        problems = []
        for start in range(0, len(data_list), 2):
            key, text = (data_list[start] or "").strip(), data_list[start + 1] or ""
            row = start // 2 + 1
            if not key and not text:
                continue
            if not key:
                problems.append(f"Row {row}: give the value a name.")
            elif key in result:
                problems.append(f"Row {row}: another row has the name {key!r}.")
            else:
                result[key] = _json_or_text(text)
        if problems:
            raise forms.ValidationError(problems)
        return result


def _json_or_text(text: str) -> Any:
    try:
        return loads(text.strip())
    except InvalidJSON:
        return text


# -- Customers, meter types, meters -------------------------------------------------------


class CustomerMeterInline(ReadOnlyInline):
    model = Meter
    fields = ["meter_link", "meter_key", "value", "period_end"]
    verbose_name_plural = "meters"
    ordering = ["meter_type__name", "meter_key"]
    per_page = 10

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("meter_type")

    @admin.display(description="meter")
    def meter_link(self, obj: Meter) -> str:
        return admin_link(obj)


class CustomerAccountInline(ReadOnlyInline):
    model = BillingAccount
    fields = ["account_id", "name", "invoice_currency", "created_at"]
    show_change_link = True
    verbose_name_plural = "billing accounts"


@admin.register(Customer)
class CustomerAdmin(ServiceAdminMixin, ModelAdmin):
    list_display = ["external_id", "name", "email", "operator_link", "meter_count", "created_at"]
    list_filter = [("operator", AutocompleteSelectFilter)]
    list_select_related = ["operator"]
    search_fields = ["external_id", "name", "email"]
    fields = ["operator", "external_id", "name", "email", "created_at"]
    readonly_fields = ["created_at"]
    inlines = [CustomerMeterInline, CustomerAccountInline]

    def get_readonly_fields(self, request, obj=None):
        # The external id is the customer's identity in usage and meters.
        return [*self.readonly_fields, "operator", "external_id"] if obj else self.readonly_fields

    def get_inlines(self, request, obj=None):
        return self.inlines if obj is not None else []

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

    @admin.display(description="operator", ordering="operator__name")
    def operator_link(self, obj: Customer) -> str:
        return admin_link(obj.operator)

    @admin.display(description="meters", ordering="_meter_count")
    def meter_count(self, obj: Customer) -> str:
        return changelist_link(Meter, obj._meter_count, customer__id__exact=obj.pk)


@admin.register(MeterType)
class MeterTypeAdmin(ServiceAdminMixin, ModelAdmin):
    form = MeterTypeForm
    list_display = [
        "name",
        "operator_link",
        "aggregation",
        "unit",
        "capacity",
        "thresholds_shown",
        "reset_cron",
        "meter_count",
    ]
    list_filter = ["aggregation", "category", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["operator"]
    search_fields = ["name", "external_ref", "category"]
    readonly_fields = ["aggregation", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["operator", "name", "external_ref", "category", "description"]}),
        ("Counting", {"fields": ["aggregation", "unit", "capacity", "thresholds"]}),
        ("Resets", {"fields": ["timezone", "reset_cron", "active_from", "active_to"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # The aggregation is fixed once meters count with it; the owner never changes.
        if obj is None:
            return ["created_at", "updated_at"]
        return [*self.readonly_fields, "operator"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_meter_count=Count("meters"))

    @admin.display(description="operator", ordering="operator__name")
    def operator_link(self, obj: MeterType) -> str:
        return admin_link(obj.operator)

    @admin.display(description="meters", ordering="_meter_count")
    def meter_count(self, obj: MeterType) -> str:
        return changelist_link(Meter, obj._meter_count, meter_type__id__exact=obj.pk)

    @admin.display(description="thresholds")
    def thresholds_shown(self, obj: MeterType) -> str:
        return thresholds_summary(obj.thresholds)

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


class PeriodInline(ReadOnlyInline):
    model = MeterPeriod
    fields = ["period_start", "period_end", "value", "record_count", "closed_at", "corrected_at"]
    ordering = ["-period_start"]
    show_change_link = True
    per_page = 10

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("meter_type")


class MeterAlertInline(ReadOnlyInline):
    model = Alert
    fields = ["crossed_at", "threshold_name", "threshold_key", "threshold_value", "meter_value"]
    ordering = ["-crossed_at"]
    verbose_name_plural = "alerts"
    per_page = 10


class MeterAdminForm(MeterForm):
    """The meter form, with custom fields as name / value rows."""

    custom_fields = JSONObjectRowsField(label="Custom fields")


@admin.register(Meter)
class MeterAdmin(ModelAdmin):
    form = MeterAdminForm
    list_display = [
        "meter",
        "key",
        "customer_link",
        "operator_link",
        "value",
        "capacity_shown",
        "usage_percent",
        "period_end",
    ]
    list_display_links = ["meter"]
    list_filter = [
        ("meter_type", AutocompleteSelectFilter),
        ("operator", AutocompleteSelectFilter),
        "meter_type__aggregation",
        "delete_on_reset",
    ]
    list_select_related = ["meter_type", "operator", "customer"]
    search_fields = ["user_id", "meter_key", "=id", "meter_type__name"]
    readonly_fields = [
        "operator",
        "meter_type",
        "customer",
        "meter_key",
        "user_id",
        "value",
        "usage_percent",
        "breakdowns",
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
    fieldsets = [
        (None, {"fields": ["operator", "meter_type", "customer", "meter_key", "user_id"]}),
        (
            "This period",
            {
                "fields": [
                    "value",
                    "usage_percent",
                    "breakdowns",
                    "record_count",
                    "period_start",
                    "period_end",
                    "first_event_at",
                    "last_event_at",
                ]
            },
        ),
        (
            "Limits",
            {
                "fields": [
                    "capacity",
                    "uses_type_thresholds",
                    "thresholds",
                    "custom_fields",
                    "delete_on_reset",
                ]
            },
        ),
        ("Records", {"fields": ["carry_first", "carry_last", "created_at", "updated_at"]}),
    ]
    inlines = [PeriodInline, MeterAlertInline]

    def has_add_permission(self, request) -> bool:
        return False  # meters are created through the API or by usage

    def save_model(self, request, obj: Meter, form, change) -> None:
        editable = ("capacity", "thresholds", "custom_fields", "delete_on_reset")
        fields = {name: form.cleaned_data[name] for name in editable if name in form.cleaned_data}
        services.meter_update(meter=obj, **fields)

    def delete_model(self, request, obj: Meter) -> None:
        services.meter_delete(meter=obj)

    @admin.display(description="meter", ordering="user_id")
    def meter(self, obj: Meter) -> str:
        return str(obj)

    @admin.display(description="key", ordering="meter_key")
    def key(self, obj: Meter) -> str:
        return shortened(obj.meter_key, 9)

    @admin.display(description="customer", ordering="customer__name")
    def customer_link(self, obj: Meter) -> str:
        # The meter's name already says the customer's id; this is who they are.
        return admin_link(obj.customer, shortened(obj.customer.name or obj.user_id, 24))

    @admin.display(description="operator", ordering="operator__name")
    def operator_link(self, obj: Meter) -> str:
        return admin_link(obj.operator)

    @admin.display(description="capacity")
    def capacity_shown(self, obj: Meter):
        return exact_number(obj.effective_capacity)

    @admin.display(description="used")
    def usage_percent(self, obj: Meter) -> str:
        return usage_bar(obj.value, obj.effective_capacity)

    @admin.display(description="value by group")
    def breakdowns(self, obj: Meter) -> str:
        return _breakdowns_table(obj.group_breakdowns)


@admin.register(MeterPeriod)
class MeterPeriodAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    """Closed periods (a big table: counted by estimate, searched by exact ids)."""

    list_display = [
        "period",
        "meter_link",
        "period_start",
        "period_end",
        "value",
        "record_count",
        "corrected_at",
    ]
    list_display_links = ["period"]
    list_filter = [
        ("operator", AutocompleteSelectFilter),
        ("meter_type", AutocompleteSelectFilter),
        ("corrected_at", admin.EmptyFieldListFilter),
    ]
    list_select_related = ["meter_type", "meter"]
    search_fields = ["=user_id", "=meter_key"]
    ordering = ["-period_start"]
    fields = [
        "operator",
        "meter",
        "meter_type",
        "user_id",
        "meter_key",
        "period_start",
        "period_end",
        "value",
        "breakdowns",
        "record_count",
        "first_event_at",
        "last_event_at",
        "carry_first",
        "carry_last",
        "closed_at",
        "corrected_at",
    ]
    readonly_fields = fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return True  # as before: staff may remove a period by hand

    @admin.display(description="period", ordering="user_id")
    def period(self, obj: MeterPeriod) -> str:
        return f"{obj.user_id} · {obj.meter_type.name}"

    @admin.display(description="meter")
    def meter_link(self, obj: MeterPeriod) -> str:
        return admin_link(obj.meter, "open") if obj.meter_id else "deleted"

    @admin.display(description="value by group")
    def breakdowns(self, obj: MeterPeriod) -> str:
        return _breakdowns_table(obj.group_breakdowns)


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = [
        "crossed_at",
        "meter_link",
        "threshold_label",
        "threshold_value",
        "meter_value",
        "period_start",
    ]
    list_filter = [("operator", AutocompleteSelectFilter)]
    list_select_related = ["meter__meter_type"]
    search_fields = ["meter__user_id", "meter__meter_key", "threshold_key", "threshold_name"]
    readonly_fields = [
        "operator",
        "meter",
        "period_start",
        "threshold_name",
        "threshold_key",
        "threshold",
        "threshold_value",
        "meter_value",
        "crossed_at",
    ]
    fields = readonly_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return True

    @admin.display(description="meter", ordering="meter__user_id")
    def meter_link(self, obj: Alert) -> str:
        return admin_link(obj.meter) if obj.meter_id else "deleted"

    @admin.display(description="threshold", ordering="threshold_name")
    def threshold_label(self, obj: Alert) -> str:
        return obj.threshold_name or obj.threshold_key


class DeliveryAttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = ["attempted_at", "succeeded", "response_status", "duration_ms", "error"]
    per_page = 10


@admin.register(Notification)
class NotificationAdmin(LargeTableAdminMixin, ModelAdmin):
    """The webhook outbox (a big table). Each row says which meter it is about, read
    from its payload in the list's own query."""

    list_display = [
        "created_at",
        "kind_shown",
        "about",
        "status_label",
        "attempts",
        "next_attempt_at",
        "operator",
    ]
    list_display_links = ["created_at"]
    list_filter = ["status", "kind", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["operator"]
    # Exact matches: the customer's id as the payload names it, or the notification's.
    search_fields = ["=payload__userId", "=id"]
    fields = [
        "operator",
        "kind",
        "about",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "delivered_at",
        "payload",
    ]
    readonly_fields = fields
    inlines = [DeliveryAttemptInline]
    actions = ["resend"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the outbox changes by delivering or resending, not by editing

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _meter_id=Cast(KT("payload__meterId"), UUIDField()),
                _type_id=Cast(KT("payload__meterTypeId"), UUIDField()),
                _user_id=KT("payload__userId"),
            )
            .annotate(
                _meter_exists=Exists(Meter.objects.filter(pk=OuterRef("_meter_id"))),
                _type_name=Subquery(
                    MeterType.objects.filter(pk=OuterRef("_type_id")).values("name")[:1]
                ),
            )
        )

    @admin.display(description="kind", ordering="kind")
    def kind_shown(self, obj: Notification) -> str:
        return obj.get_kind_display()

    @display(description="status", ordering="status", label=NOTIFICATION_STATUS_LABELS)
    def status_label(self, obj: Notification) -> str:
        return obj.status

    @admin.display(description="about")
    def about(self, obj: Notification) -> str:
        """The meter the notification is about, linked while it exists."""
        label = " · ".join(part for part in (obj._user_id, obj._type_name) if part) or "-"
        if obj._meter_exists:
            return format_html(
                '<a class="text-link" href="{}">{}</a>',
                admin_url(Meter(pk=obj._meter_id)),
                label,
            )
        return label

    @admin.action(description="Resend selected notifications")
    def resend(self, request, queryset) -> None:
        count = 0
        for notification in queryset:
            notification_resend(notification=notification)
            count += 1
        self.message_user(request, f"Queued {count} notification(s) again.", messages.SUCCESS)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["operator", "url_shown", "enabled", "created_at"]
    list_filter = ["enabled"]
    list_select_related = ["operator"]
    search_fields = ["operator__name", "url"]
    fields = ["operator", "url", "enabled", "signing_secret", "created_at"]
    readonly_fields = ["signing_secret", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "operator"] if obj is not None else self.readonly_fields

    @admin.display(description="URL", ordering="url")
    def url_shown(self, obj: WebhookEndpoint) -> str:
        return shortened(obj.url, 60)

    def save_model(self, request, obj: WebhookEndpoint, form, change) -> None:
        saved = webhook_endpoint_set(operator=obj.operator, url=obj.url, enabled=obj.enabled)
        obj.signing_secret = saved.signing_secret
        obj._state.adding = False


# -- Reporting rollups ----------------------------------------------------------------------


@admin.register(UsageRollup)
class UsageRollupAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    """Usage and revenue per customer, meter type and hour, as reports read them."""

    list_display = [
        "hour",
        "user_id",
        "meter_type",
        "account_id",
        "value",
        "revenue",
        "record_count",
        "operator",
    ]
    list_filter = [("operator", AutocompleteSelectFilter), ("meter_type", AutocompleteSelectFilter)]
    list_select_related = ["meter_type", "operator"]
    search_fields = ["=user_id", "=account_id"]
    # The newest buckets by primary key: ordering by hour would sort the whole table.
    ordering = ["-id"]


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

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account", "plan")


class CycleInline(ReadOnlyInline):
    """The account's pricing cycles with their usage and charge so far."""

    model = CycleRollup
    fields = ["cycle_start", "cycle_end", "meter_type", "plan", "usage", "revenue"]
    ordering = ["-cycle_start", "meter_type__name"]
    verbose_name_plural = "pricing cycles"
    per_page = 12

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("meter_type", "plan")


@admin.register(CycleRollup)
class CycleRollupAdmin(ReadOnlyAdmin):
    """Pricing cycles as usage reached them: written by usage as it is applied, so read
    only here."""

    list_display = [
        "account_link",
        "meter_type",
        "cycle",
        "usage",
        "revenue",
        "record_count",
        "operator",
    ]
    list_filter = [("operator", AutocompleteSelectFilter), "cycle_start"]
    list_select_related = ["meter_type", "operator", "account"]
    search_fields = ["account_key", "user_id", "meter_type__name"]
    date_hierarchy = "cycle_start"
    ordering = ["-cycle_start", "account_key"]

    @admin.display(description="account", ordering="account_key")
    def account_link(self, obj: CycleRollup) -> str:
        return admin_link(obj.account, obj.account_key)

    @admin.display(description="cycle", ordering="cycle_start")
    def cycle(self, obj: CycleRollup) -> str:
        return f"{obj.cycle_start} → {obj.cycle_end}"


@admin.register(BillingAccount)
class BillingAccountAdmin(ServiceAdminMixin, ModelAdmin):
    form = BillingAccountForm
    list_display = [
        "account_id",
        "name",
        "customer_link",
        "operator",
        "invoice_currency",
        "created_at",
    ]
    list_filter = ["invoice_currency", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["customer", "operator"]
    search_fields = ["account_id", "name", "customer__external_id"]
    autocomplete_fields = ["customer"]
    readonly_fields = ["created_at"]
    inlines = [AssignmentInline, CycleInline]

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: BillingAccount) -> str:
        return admin_link(obj.customer)

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


# Graduated tiers are edited as rows: "up to" (empty for the open last tier) and price.
TIER_ROWS = 6


class TierRowsWidget(forms.MultiWidget):
    template_name = "metering/widgets/tier_rows.html"

    def __init__(self, attrs=None):
        widgets = []
        for _ in range(TIER_ROWS):
            widgets += [
                forms.TextInput(attrs={"inputmode": "decimal", "placeholder": "no bound"}),
                forms.TextInput(attrs={"inputmode": "decimal"}),
            ]
        super().__init__(widgets, attrs)

    def decompress(self, value):
        return TierRowsField.rows_of(value)

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        parts = context["widget"]["subwidgets"]
        context["widget"]["rows"] = [parts[start : start + 2] for start in range(0, len(parts), 2)]
        return context


class TierRowsField(StoredRowsField):
    """Graduated tiers as rows in, the stored tiers list out, checked by the API's rules
    (metering.pricing.tiers_parse). Blank rows are skipped."""

    widget = TierRowsWidget

    def __init__(self, **kwargs):
        fields = []
        for _ in range(TIER_ROWS):
            fields += [forms.DecimalField(required=False), forms.DecimalField(required=False)]
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "help_text",
            "GRADUATED rates only: each tier prices the cycle's usage up to its bound; "
            "leave the last bound empty for no limit.",
        )
        super().__init__(fields, require_all_fields=False, **kwargs)

    @staticmethod
    def rows_of(stored: list[dict] | None) -> list[Any]:
        values: list[Any] = []
        for tier in stored or []:
            values += [
                exact_number(_decimal(tier.get("upTo"))),
                exact_number(_decimal(tier.get("unitPrice"))),
            ]
        return values + [None] * (2 * TIER_ROWS - len(values))

    def stored_rows(self, stored) -> list[Any]:
        return self.rows_of(stored)

    def compress(self, data_list):
        rows = [
            (data_list[start], data_list[start + 1], start // 2 + 1)
            for start in range(0, len(data_list), 2)
        ]
        filled = [
            (bound, price, row)
            for bound, price, row in rows
            if bound is not None or price is not None
        ]
        if not filled:
            return []
        problems = [f"Row {row}: give a unit price." for _, price, row in filled if price is None]
        if problems:
            raise forms.ValidationError(problems)
        tiers = [{"upTo": bound, "unitPrice": price} for bound, price, _ in filled]
        try:
            tiers_parse(tiers)
        except PricingInvalid as exc:
            raise forms.ValidationError(
                [
                    _tier_message(path, message, [row for *_, row in filled])
                    for path, message in exc.problems
                ]
            ) from None
        return [
            {
                "upTo": None if tier["upTo"] is None else normalize_decimal(tier["upTo"]),
                "unitPrice": normalize_decimal(tier["unitPrice"]),
            }
            for tier in tiers
        ]


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _tier_message(path: str, message: str, row_numbers: list[int]) -> str:
    if not path.startswith("["):
        return message
    index, _, field = path[1:].partition("]")
    field = {"upTo": "up to", "unitPrice": "unit price"}.get(field.lstrip("."), field)
    where = f"Row {row_numbers[int(index)]}"
    return f"{where}, {field}: {message}" if field else f"{where}: {message}"


class PlanRateForm(forms.ModelForm):
    """The API's rules for a rate: PER_UNIT has a unit price and no tiers, GRADUATED has
    tiers (metering.pricing.tiers_parse) and no unit price."""

    tiers = TierRowsField()

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
            if "tiers" in data and not tiers:
                self.add_error("tiers", "GRADUATED rates need at least one tier.")
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


class PlanRateInline(StackedInline):
    model = PlanRate
    form = PlanRateForm
    formset = PlanRateFormSet
    extra = 0
    autocomplete_fields = ["meter_type"]


@admin.register(PricePlan)
class PricePlanAdmin(ModelAdmin):
    list_display = ["name", "operator", "rate_count", "assignment_count", "created_at"]
    list_filter = [("operator", AutocompleteSelectFilter)]
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
class PlanRateAdmin(ReadOnlyAdmin):
    """Rates are edited on their plan's page; this list finds them across plans."""

    list_display = ["plan_link", "meter_type", "model", "unit_price", "tiers_shown"]
    list_filter = ["model", ("plan__operator", AutocompleteSelectFilter)]
    list_select_related = ["plan", "meter_type"]
    search_fields = ["plan__name", "meter_type__name"]

    @admin.display(description="plan", ordering="plan__name")
    def plan_link(self, obj: PlanRate) -> str:
        return admin_link(obj.plan)

    @admin.display(description="tiers")
    def tiers_shown(self, obj: PlanRate) -> str:
        parts = []
        for tier in obj.tiers or []:
            bound = "∞" if tier.get("upTo") is None else exact_number(_decimal(tier["upTo"]))
            parts.append(f"≤ {bound}: {exact_number(_decimal(tier['unitPrice']))}")
        return "; ".join(parts) or "-"


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
class PlanAssignmentAdmin(ServiceAdminMixin, ModelAdmin):
    form = PlanAssignmentForm
    list_display = [
        "account_link",
        "plan_link",
        "effective_from",
        "cycle",
        "anchor_day",
        "operator",
    ]
    list_filter = ["cycle", ("operator", AutocompleteSelectFilter)]
    list_select_related = ["account", "plan", "operator"]
    search_fields = ["account__account_id", "account__name", "plan__name"]
    autocomplete_fields = ["account", "plan"]
    date_hierarchy = "effective_from"

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # an assignment is replaced by a later one or deleted, not edited

    @admin.display(description="account", ordering="account__account_id")
    def account_link(self, obj: PlanAssignment) -> str:
        return admin_link(obj.account)

    @admin.display(description="plan", ordering="plan__name")
    def plan_link(self, obj: PlanAssignment) -> str:
        return admin_link(obj.plan)

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
class ExchangeRateAdmin(ModelAdmin):
    form = ExchangeRateForm
    list_display = ["currency", "date", "rate", "operator"]
    list_filter = ["currency", ("operator", AutocompleteSelectFilter)]
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
