from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from oauth2_provider import models as oauth_models

from common.admin import ReadOnlyInline, adopt_created
from tenants import services
from tenants.models import (
    CURRENCY_PATTERN,
    ApplicationAccess,
    Operator,
    OperatorMembership,
    PlatformApiKey,
    PlatformSettings,
    UsageCounter,
    UsageCounterDaily,
    UsageCounterDekad,
    UsageCounterDelta,
    UsageCounterMonthly,
    UsageFold,
)
from tenants.scopes import SCOPES

# Applications are managed through "Application accesses" (which tie each one to its
# operator); the toolkit's own pages would create clients that belong to nobody.
for model in (
    oauth_models.get_application_model(),
    oauth_models.get_grant_model(),
    oauth_models.get_id_token_model(),
    oauth_models.get_refresh_token_model(),
):
    if admin.site.is_registered(model):
        admin.site.unregister(model)

SCOPE_CHOICES = [(name, f"{name} — {label}") for name, label in SCOPES.items()]


class MembershipInline(admin.TabularInline):
    model = OperatorMembership
    extra = 0
    autocomplete_fields = ["user"]


class ApplicationAccessInline(ReadOnlyInline):
    model = ApplicationAccess
    fields = ["application_name", "client_id", "created_at"]
    show_change_link = True

    @admin.display(description="name")
    def application_name(self, obj: ApplicationAccess) -> str:
        return obj.application.name

    @admin.display(description="client id")
    def client_id(self, obj: ApplicationAccess) -> str:
        return obj.application.client_id


class OperatorForm(forms.ModelForm):
    class Meta:
        model = Operator
        fields = ["name", "status", "base_currency"]
        help_texts = {"base_currency": "ISO 4217 (EUR, USD…): the currency price plans use."}

    def clean_base_currency(self) -> str:
        currency = self.cleaned_data["base_currency"].strip().upper()
        if not CURRENCY_PATTERN.match(currency):
            raise forms.ValidationError("Three letters, an ISO 4217 code such as EUR.")
        return currency


@admin.register(Operator)
class OperatorAdmin(admin.ModelAdmin):
    form = OperatorForm
    list_display = ["name", "status", "application_count", "created_at", "last_active_at"]
    list_filter = ["status"]
    search_fields = ["name", "id"]
    readonly_fields = ["id", "created_at", "last_active_at"]
    inlines = [MembershipInline, ApplicationAccessInline]
    actions = ["suspend", "reactivate"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_application_count=Count("application_accesses", distinct=True))
        )

    @admin.display(description="applications", ordering="_application_count")
    def application_count(self, obj: Operator) -> int:
        return obj._application_count

    def save_model(self, request, obj: Operator, form, change) -> None:
        data = form.cleaned_data
        if not change:
            created = services.operator_create(name=data["name"])
            if data.get("status", created.status) != created.status:
                services.operator_set_status(operator=created, status=data["status"])
            if data.get("base_currency", created.base_currency) != created.base_currency:
                services.operator_set_base_currency(
                    operator=created, currency=data["base_currency"]
                )
            adopt_created(obj, created)
            return
        if "name" in form.changed_data:
            services.operator_rename(operator=obj, name=data["name"])
        if "status" in form.changed_data:
            services.operator_set_status(operator=obj, status=data["status"])
        if "base_currency" in form.changed_data:
            services.operator_set_base_currency(operator=obj, currency=data["base_currency"])

    @admin.action(description="Suspend selected operators")
    def suspend(self, request, queryset) -> None:
        for operator in queryset:
            services.operator_set_status(operator=operator, status=Operator.Status.SUSPENDED)
        self.message_user(request, f"Suspended {queryset.count()} operator(s).")

    @admin.action(description="Reactivate selected operators")
    def reactivate(self, request, queryset) -> None:
        for operator in queryset:
            services.operator_set_status(operator=operator, status=Operator.Status.ACTIVE)
        self.message_user(request, f"Reactivated {queryset.count()} operator(s).")


@admin.register(OperatorMembership)
class OperatorMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "operator", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["user", "operator"]

    def save_model(self, request, obj: OperatorMembership, form, change) -> None:
        data = form.cleaned_data
        saved = services.operator_membership_set(
            operator=data.get("operator", obj.operator),
            user=data.get("user", obj.user),
            role=data["role"],
        )
        adopt_created(obj, saved)

    search_fields = ["user__username", "user__email", "operator__name"]
    autocomplete_fields = ["user", "operator"]


class ApplicationAccessForm(forms.ModelForm):
    name = forms.CharField(max_length=255)
    scopes = forms.MultipleChoiceField(
        choices=SCOPE_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = ApplicationAccess
        fields = ["operator", "name", "scopes"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A new row already has its UUID pk, so ask whether it is saved, not for a pk.
        if not self.instance._state.adding:
            self.fields["name"].initial = self.instance.application.name
            self.fields["operator"].disabled = True
        else:
            self.fields["scopes"].initial = list(SCOPES)


@admin.register(ApplicationAccess)
class ApplicationAccessAdmin(admin.ModelAdmin):
    """Creating an application shows its client secret once, on the next page."""

    form = ApplicationAccessForm
    list_display = ["application_name", "operator", "client_id", "scope_count", "created_at"]
    list_filter = ["operator"]
    list_select_related = ["application", "operator"]
    search_fields = ["application__name", "application__client_id", "operator__name"]
    readonly_fields = ["client_id", "created_at"]
    actions = ["rotate_secret"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["operator", "name", "scopes"]
        return ["operator", "name", "client_id", "scopes", "created_at"]

    @admin.display(description="name", ordering="application__name")
    def application_name(self, obj: ApplicationAccess) -> str:
        return obj.application.name

    @admin.display(description="client id")
    def client_id(self, obj: ApplicationAccess) -> str:
        return obj.application.client_id

    @admin.display(description="scopes")
    def scope_count(self, obj: ApplicationAccess) -> int:
        return len(obj.scopes)

    def save_model(self, request, obj, form, change) -> None:
        scopes = form.cleaned_data["scopes"]
        name = form.cleaned_data["name"]
        if change:
            services.application_access_rename(access=obj, name=name)
            if set(scopes) != set(ApplicationAccess.objects.get(pk=obj.pk).scopes):
                services.application_access_update_scopes(access=obj, scopes=scopes)
            return
        issued = services.application_access_create(
            operator=form.cleaned_data["operator"], name=name, scopes=scopes
        )
        adopt_created(obj, issued.access)
        _show_secret_once(
            request,
            "Application created. Copy the client secret now; it will not be shown again.",
            {"Client ID": issued.client_id, "Client secret": issued.client_secret},
        )

    def response_add(self, request, obj, post_url_continue=None):
        return HttpResponseRedirect(
            reverse("admin:tenants_applicationaccess_change", args=[obj.pk])
        )

    @admin.action(description="Rotate the client secret (revokes issued tokens)")
    def rotate_secret(self, request, queryset) -> None:
        for access in queryset.select_related("application"):
            issued = services.application_access_rotate_secret(access=access)
            _show_secret_once(
                request,
                f"New secret for {access.application.name}. It will not be shown again.",
                {"Client ID": issued.client_id, "Client secret": issued.client_secret},
            )


class PlatformApiKeyForm(forms.ModelForm):
    class Meta:
        model = PlatformApiKey
        fields = ["name"]


@admin.register(PlatformApiKey)
class PlatformApiKeyAdmin(admin.ModelAdmin):
    """Creating a key shows it once, on the next page; only its digest is stored."""

    form = PlatformApiKeyForm
    list_display = ["name", "display_prefix", "created_by", "created_at", "last_used_at", "status"]
    list_select_related = ["created_by"]
    search_fields = ["name", "display_prefix"]
    readonly_fields = ["display_prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name"]
        return ["name", *self.readonly_fields]

    @admin.display(description="status")
    def status(self, obj: PlatformApiKey) -> str:
        return "revoked" if obj.is_revoked else "active"

    def save_model(self, request, obj, form, change) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        issued = services.platform_key_create(name=obj.name, created_by=request.user)
        adopt_created(obj, issued.key)
        _show_secret_once(
            request,
            "Platform API key created. Copy it now; it will not be shown again.",
            {"Key": issued.raw_key},
        )

    def response_add(self, request, obj, post_url_continue=None):
        return HttpResponseRedirect(reverse("admin:tenants_platformapikey_change", args=[obj.pk]))

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            services.platform_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(PlatformSettings)
class PlatformSettingsAdmin(admin.ModelAdmin):
    # A scheme-less URL typed by staff means https (Django 6's default, stated now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["name", "contact_email", "webhook_url", "updated_at"]
    readonly_fields = ["updated_at"]

    def has_add_permission(self, request) -> bool:
        return not PlatformSettings.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj: PlatformSettings, form, change) -> None:
        saved = services.platform_settings_update(
            name=obj.name,
            contact_email=obj.contact_email,
            webhook_url=obj.webhook_url,
            billing={field: getattr(obj, field) for field in PlatformSettings.BILLING_WEIGHTS},
        )
        adopt_created(obj, saved)

    def changelist_view(self, request, extra_context=None):
        row = PlatformSettings.load()
        return HttpResponseRedirect(reverse("admin:tenants_platformsettings_change", args=[row.pk]))


class UsageCounterAdminBase(admin.ModelAdmin):
    """Usage counts, read-only: they change only by folding (tenants.accounting)."""

    list_filter = ["kind", "key"]
    list_select_related = ["operator"]
    search_fields = ["=operator__id", "operator__name", "=connection"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageCounter)
class UsageCounterAdmin(UsageCounterAdminBase):
    list_display = ["operator", "hour", "kind", "key", "connection", "count"]
    date_hierarchy = "hour"
    ordering = ["-hour"]


@admin.register(UsageCounterDaily)
class UsageCounterDailyAdmin(UsageCounterAdminBase):
    list_display = ["operator", "day", "kind", "key", "connection", "count"]
    date_hierarchy = "day"
    ordering = ["-day"]


@admin.register(UsageCounterDekad)
class UsageCounterDekadAdmin(UsageCounterAdminBase):
    list_display = ["operator", "dekad", "kind", "key", "connection", "count"]
    date_hierarchy = "dekad"
    ordering = ["-dekad"]


@admin.register(UsageCounterMonthly)
class UsageCounterMonthlyAdmin(UsageCounterAdminBase):
    list_display = ["operator", "month_name", "kind", "key", "connection", "count"]
    ordering = ["-month"]

    @admin.display(description="month", ordering="month")
    def month_name(self, obj: UsageCounterMonthly) -> str:
        return f"{obj.month:%Y-%m}"


@admin.register(UsageCounterDelta)
class UsageCounterDeltaAdmin(UsageCounterAdminBase):
    """Counts written but not folded yet (the fold runs every minute)."""

    list_display = ["operator", "hour", "kind", "key", "connection", "count"]
    ordering = ["-id"]


@admin.register(UsageFold)
class UsageFoldAdmin(admin.ModelAdmin):
    """One row per hour of counts moved from Redis, kept a few days (see
    tenants.accounting)."""

    list_display = ["hour", "folded_at", "counted", "id"]
    date_hierarchy = "folded_at"
    ordering = ["-folded_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _show_secret_once(request, headline: str, values: dict[str, str]) -> None:
    # Messages live in the session until the next page renders them, then they are gone.
    rows = format_html(
        "".join("<br>{}: <code class='tally-secret' data-name='{}'>{}</code>" for _ in values),
        *[part for label, value in values.items() for part in (label, label, value)],
    )
    messages.warning(request, format_html("{}{}", headline, rows))
