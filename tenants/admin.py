"""Operators and access, the platform's own settings and counters, and the admin pages
of the libraries Tally builds on (users and groups, OAuth, Celery Beat) in Tally's look.

The libraries register their pages when Django imports their admin modules; this module
imports them first, then replaces their pages with themed ones.
"""

from __future__ import annotations

import django_celery_beat.admin as beat_admin
import oauth2_provider.admin as oauth_admin
from django import forms
from django.contrib import admin, messages
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django_celery_beat import models as beat_models
from oauth2_provider import models as oauth_models
from unfold.decorators import display
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm

from common.admin import (
    LargeTableAdminMixin,
    ModelAdmin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    TabularInline,
    admin_link,
    adopt_created,
)
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
    UsageCounterQuarterly,
    UsageCounterYearly,
    UsageFold,
)
from tenants.scopes import SCOPES

SCOPE_CHOICES = [(name, f"{name} — {label}") for name, label in SCOPES.items()]
STATUS_LABELS = {"Active": "success", "Suspended": "danger"}


# -- Operators --------------------------------------------------------------------------


class MembershipInline(TabularInline):
    model = OperatorMembership
    extra = 0
    autocomplete_fields = ["user"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "operator")


class ApplicationAccessInline(ReadOnlyInline):
    model = ApplicationAccess
    fields = ["application_name", "client_id", "created_at"]
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("application")

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
class OperatorAdmin(ModelAdmin):
    form = OperatorForm
    list_display = [
        "name",
        "status_label",
        "base_currency",
        "application_count",
        "member_count",
        "last_active_at",
        "created_at",
    ]
    list_filter = ["status", "base_currency"]
    search_fields = ["name", "=id"]
    readonly_fields = ["id", "created_at", "last_active_at"]
    inlines = [MembershipInline, ApplicationAccessInline]
    actions = ["suspend", "reactivate"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _application_count=Count("application_accesses", distinct=True),
                _member_count=Count("memberships", distinct=True),
            )
        )

    @display(description="status", ordering="status", label=STATUS_LABELS)
    def status_label(self, obj: Operator) -> str:
        return obj.get_status_display()

    @admin.display(description="applications", ordering="_application_count")
    def application_count(self, obj: Operator) -> int:
        return obj._application_count

    @admin.display(description="members", ordering="_member_count")
    def member_count(self, obj: Operator) -> int:
        return obj._member_count

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

    @admin.action(description="Suspend selected operators (their tokens get 403)")
    def suspend(self, request, queryset) -> None:
        for operator in queryset:
            services.operator_set_status(operator=operator, status=Operator.Status.SUSPENDED)
        self.message_user(request, f"Suspended {queryset.count()} operator(s).", messages.SUCCESS)

    @admin.action(description="Reactivate selected operators")
    def reactivate(self, request, queryset) -> None:
        for operator in queryset:
            services.operator_set_status(operator=operator, status=Operator.Status.ACTIVE)
        self.message_user(request, f"Reactivated {queryset.count()} operator(s).", messages.SUCCESS)


@admin.register(OperatorMembership)
class OperatorMembershipAdmin(ModelAdmin):
    list_display = ["user_link", "operator_link", "role", "created_at"]
    list_filter = ["role", "operator"]
    list_select_related = ["user", "operator"]
    search_fields = ["user__username", "user__email", "operator__name"]
    autocomplete_fields = ["user", "operator"]

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: OperatorMembership) -> str:
        return admin_link(obj.user)

    @admin.display(description="operator", ordering="operator__name")
    def operator_link(self, obj: OperatorMembership) -> str:
        return admin_link(obj.operator)

    def save_model(self, request, obj: OperatorMembership, form, change) -> None:
        data = form.cleaned_data
        saved = services.operator_membership_set(
            operator=data.get("operator", obj.operator),
            user=data.get("user", obj.user),
            role=data["role"],
        )
        adopt_created(obj, saved)


# -- Application access -----------------------------------------------------------------


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
class ApplicationAccessAdmin(ModelAdmin):
    """Creating an application shows its client secret once, on the next page."""

    form = ApplicationAccessForm
    list_display = [
        "application_name",
        "operator_link",
        "client_id",
        "scope_count",
        "created_at",
    ]
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

    @admin.display(description="operator", ordering="operator__name")
    def operator_link(self, obj: ApplicationAccess) -> str:
        return admin_link(obj.operator)

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

    def delete_model(self, request, obj: ApplicationAccess) -> None:
        # Deleting the access alone would leave its OAuth client able to ask for tokens.
        services.application_access_revoke(access=obj)

    def delete_queryset(self, request, queryset) -> None:
        for access in queryset:
            services.application_access_revoke(access=access)

    @admin.action(description="Rotate the client secret (revokes issued tokens)")
    def rotate_secret(self, request, queryset) -> None:
        for access in queryset.select_related("application"):
            issued = services.application_access_rotate_secret(access=access)
            _show_secret_once(
                request,
                f"New secret for {access.application.name}. It will not be shown again.",
                {"Client ID": issued.client_id, "Client secret": issued.client_secret},
            )


# -- Platform keys and settings ---------------------------------------------------------


class PlatformApiKeyForm(forms.ModelForm):
    class Meta:
        model = PlatformApiKey
        fields = ["name"]


@admin.register(PlatformApiKey)
class PlatformApiKeyAdmin(ModelAdmin):
    """Creating or rotating a key shows it once, on the next page; only its digest is
    stored."""

    form = PlatformApiKeyForm
    list_display = [
        "name",
        "display_prefix",
        "status_label",
        "created_by",
        "created_at",
        "last_used_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["created_by"]
    search_fields = ["name", "display_prefix"]
    readonly_fields = ["display_prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["rotate", "revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name"]
        return ["name", *self.readonly_fields]

    @display(
        description="status",
        ordering="revoked_at",
        label={"active": "success", "revoked": "danger"},
    )
    def status_label(self, obj: PlatformApiKey) -> str:
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

    @admin.action(description="Rotate selected keys (new key, the old one revoked)")
    def rotate(self, request, queryset) -> None:
        for key in queryset:
            try:
                issued = services.platform_key_rotate(key=key, created_by=request.user)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            _show_secret_once(
                request,
                f"New key for {key.name}; the old one is revoked. It will not be shown again.",
                {"Key": issued.raw_key},
            )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            services.platform_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


@admin.register(PlatformSettings)
class PlatformSettingsAdmin(ModelAdmin):
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


# -- Usage counters (read-only: they change only by folding, see tenants.accounting) --


class UsageCounterAdminBase(LargeTableAdminMixin, ReadOnlyAdmin):
    list_filter = ["kind", "key"]
    list_select_related = ["operator"]
    search_fields = ["=operator__id", "operator__name", "=connection"]


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


@admin.register(UsageCounterQuarterly)
class UsageCounterQuarterlyAdmin(UsageCounterAdminBase):
    list_display = ["operator", "quarter_name", "kind", "key", "connection", "count"]
    ordering = ["-quarter"]

    @admin.display(description="quarter", ordering="quarter")
    def quarter_name(self, obj: UsageCounterQuarterly) -> str:
        return f"{obj.quarter.year} Q{(obj.quarter.month - 1) // 3 + 1}"


@admin.register(UsageCounterYearly)
class UsageCounterYearlyAdmin(UsageCounterAdminBase):
    list_display = ["operator", "year_name", "kind", "key", "connection", "count"]
    ordering = ["-year"]

    @admin.display(description="year", ordering="year")
    def year_name(self, obj: UsageCounterYearly) -> str:
        return f"{obj.year:%Y}"


@admin.register(UsageCounterDelta)
class UsageCounterDeltaAdmin(UsageCounterAdminBase):
    """Counts written but not folded yet (the fold runs every minute)."""

    list_display = ["operator", "hour", "kind", "key", "connection", "count"]
    ordering = ["-id"]


@admin.register(UsageFold)
class UsageFoldAdmin(ReadOnlyAdmin):
    """One row per hour of counts moved from Redis, kept a few days (see
    tenants.accounting)."""

    list_display = ["hour", "folded_at", "counted", "id"]
    date_hierarchy = "folded_at"
    ordering = ["-folded_at"]


def _show_secret_once(request, headline: str, values: dict[str, str]) -> None:
    # Messages live in the session until the next page renders them, then they are gone.
    rows = format_html(
        "".join("<br>{}: <code class='tally-secret' data-name='{}'>{}</code>" for _ in values),
        *[part for label, value in values.items() for part in (label, label, value)],
    )
    messages.warning(request, format_html("{}{}", headline, rows))


# -- Users and groups ---------------------------------------------------------------------

User = get_user_model()
for model in (User, Group):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


class UserMembershipInline(TabularInline):
    """The operators a user may see in the dashboard, and with which role."""

    model = OperatorMembership
    extra = 0
    autocomplete_fields = ["operator"]
    verbose_name_plural = "operator memberships"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "operator")


@admin.register(User)
class UserAdmin(auth_admin.UserAdmin, ModelAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm
    list_display = ["username", "email", "is_staff", "is_active", "membership_count", "last_login"]
    inlines = [UserMembershipInline]

    def get_inlines(self, request, obj=None):
        return self.inlines if obj is not None else []  # a new user first gets a password

    def get_queryset(self, request):
        return (
            super().get_queryset(request).annotate(_membership_count=Count("operator_memberships"))
        )

    @admin.display(description="operators", ordering="_membership_count")
    def membership_count(self, obj) -> int:
        return obj._membership_count


@admin.register(Group)
class GroupAdmin(auth_admin.GroupAdmin, ModelAdmin):
    pass


# -- OAuth internals ------------------------------------------------------------------------
# Applications are managed through "Applications" (application accesses, which tie each
# one to its operator and show the secret once); the toolkit's own pages are read-only
# here, so that no client is created that belongs to nobody.

OAuthApplication = oauth_models.get_application_model()
for model in (
    OAuthApplication,
    oauth_models.get_access_token_model(),
    oauth_models.get_refresh_token_model(),
    oauth_models.get_grant_model(),
    oauth_models.get_id_token_model(),
):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(OAuthApplication)
class OAuthApplicationAdmin(ReadOnlyAdmin):
    list_display = ["name", "client_id", "access_link", "authorization_grant_type", "created"]
    list_select_related = ["access__operator"]
    search_fields = ["name", "=client_id"]
    fields = ["name", "client_id", "access_link", "client_type", "authorization_grant_type"]
    readonly_fields = fields

    @admin.display(description="operator")
    def access_link(self, obj) -> str:
        access = getattr(obj, "access", None)
        return admin_link(access, access.operator.name) if access else "-"


@admin.register(oauth_models.get_access_token_model())
class AccessTokenAdmin(oauth_admin.AccessTokenAdmin, ModelAdmin):
    """Tokens are kept as checksums only; revoke them here, never edit them."""

    list_display = ["masked_token", "application", "expires", "created"]
    readonly_fields = ["masked_token", "application", "scope", "expires", "created"]
    fields = readonly_fields

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(oauth_models.get_refresh_token_model())
class RefreshTokenAdmin(oauth_admin.RefreshTokenAdmin, ModelAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(oauth_models.get_grant_model())
class GrantAdmin(oauth_admin.GrantAdmin, ModelAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(oauth_models.get_id_token_model())
class IDTokenAdmin(oauth_admin.IDTokenAdmin, ModelAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        return False


# -- Celery Beat ----------------------------------------------------------------------------
# Beat's entries are written by `setup_schedules` from each app's schedules.py, so they
# are read-only here; staff may still run one now.

for model in (
    beat_models.PeriodicTask,
    beat_models.CrontabSchedule,
    beat_models.IntervalSchedule,
    beat_models.ClockedSchedule,
    beat_models.SolarSchedule,
):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(beat_models.PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin, ReadOnlyAdmin):
    list_display = ["name", "task", "enabled", "schedule", "last_run_at", "total_run_count"]
    list_filter = ["enabled", "one_off"]
    search_fields = ["name", "task"]
    actions = ["run_tasks"]
    date_hierarchy = None
    # Beat's own template and fieldsets serve its editing form; here it is read-only.
    change_form_template = None
    fieldsets = None
    fields = [
        "name",
        "task",
        "enabled",
        "description",
        "interval",
        "crontab",
        "clocked",
        "solar",
        "start_time",
        "one_off",
        "last_run_at",
        "total_run_count",
        "args",
        "kwargs",
        "queue",
        "expires",
    ]
    readonly_fields = fields

    @admin.display(description="schedule")
    def schedule(self, obj) -> str:
        return str(obj.scheduler)


class PeriodicTaskInline(ReadOnlyInline):
    model = beat_models.PeriodicTask
    fields = ["name", "task", "enabled"]
    verbose_name_plural = "periodic tasks using this schedule"
    show_change_link = True


class ScheduleAdmin(ReadOnlyAdmin):
    inlines = [PeriodicTaskInline]


@admin.register(beat_models.CrontabSchedule)
class CrontabScheduleAdmin(ScheduleAdmin):
    list_display = ["__str__", "human_readable", "timezone"]


@admin.register(beat_models.IntervalSchedule)
class IntervalScheduleAdmin(ScheduleAdmin):
    list_display = ["__str__", "every", "period"]


@admin.register(beat_models.ClockedSchedule)
class ClockedScheduleAdmin(ScheduleAdmin):
    list_display = ["clocked_time"]


@admin.register(beat_models.SolarSchedule)
class SolarScheduleAdmin(ScheduleAdmin):
    list_display = ["__str__", "event", "latitude", "longitude"]
