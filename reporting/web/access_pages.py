"""The dashboard's Access pages (`/dashboard/access/…`): the operator's OAuth
applications, its global parameters, and its notification webhook with the log of
deliveries.

Secrets are shown once. A new client secret or webhook signing secret is kept in the
session by the POST that made it and taken out by the page it redirects to, so a
reload, the back button or a shared URL never shows it again (the pages are not
cached either). Sensitive parameter values are never sent to the browser: not in the
list, not in a form, not even back into a form that failed validation.

Writes go through the owning apps' services (tenants, parameters, metering), with the
API's own validation for parameters (its serializers); only admins reach them
(`reporting.web.access` refuses a viewer's POST, and the forms' pages refuse a
viewer's GET the same way).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.core.validators import URLValidator
from django.db.models import OuterRef, QuerySet, Subquery, TextField, UUIDField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from oauth2_provider.models import AccessToken
from redis.exceptions import RedisError
from unfold.widgets import (
    CHECKBOX_CLASSES,
    UnfoldAdminSelectWidget,
    UnfoldAdminTextareaWidget,
    UnfoldBooleanSwitchWidget,
)

from common.json import dumps_pretty, loads, normalize_decimal
from metering.models import DeliveryAttempt, MeterType, Notification, WebhookEndpoint
from metering.notifications import (
    notification_resend,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_set,
)
from parameters.api.serializers import ParameterCreateSerializer, ParameterUpdateSerializer
from parameters.models import MASK, Parameter
from parameters.rules import MAX_PARAMETERS_PER_OPERATOR
from parameters.services import (
    ParameterConflict,
    parameter_create,
    parameter_update,
    parameters_delete,
)
from reporting.web.access import operator_object_or_404, operator_page
from reporting.web.shell import DASHBOARD, shell_render
from tenants.models import ApplicationAccess, Operator, OperatorMembership
from tenants.scopes import SCOPES
from tenants.services import (
    application_access_create,
    application_access_revoke,
    application_access_rotate_secret,
)
from tenants.web.forms import INPUT_CLASS

logger = logging.getLogger(__name__)

DELIVERY_LOG_SIZE = 50
# The products scopes belong to, by the prefix of their names, in the catalogue's order.
SCOPE_GROUPS = {
    "usage-metering": "Usage metering",
    "online-collection": "Online collection",
    "stream-management": "Streams",
    "aggregation": "Aggregation",
    "global-parameters": "Global parameters",
    "metrics": "Metrics",
}

# -- Reads ------------------------------------------------------------------------------


def _applications_described(queryset: QuerySet, *, now) -> QuerySet:
    """Applications with their OAuth client and, in the same query, `last_token_at`
    (when the application last got a token; tokens are deleted when revoked or
    cleared, so "never" may mean "not lately") and `live_until` (when its
    longest-lived token expires, while one is live)."""
    tokens = AccessToken.objects.filter(application_id=OuterRef("application_id"))
    return queryset.select_related("application").annotate(
        last_token_at=Subquery(tokens.order_by("-created").values("created")[:1]),
        live_until=Subquery(
            tokens.filter(expires__gt=now).order_by("-expires").values("expires")[:1]
        ),
    )


def applications_of(*, operator: Operator, now) -> list[ApplicationAccess]:
    """The operator's applications by name, described (one query)."""
    queryset = ApplicationAccess.objects.filter(operator=operator)
    return list(
        _applications_described(queryset, now=now).order_by("application__name", "created_at")
    )


def parameters_of(*, operator: Operator) -> list[Parameter]:
    """The operator's parameters by name, without their ciphertexts (a sensitive value
    is shown as its mask, `shown_value`)."""
    return list(
        Parameter.objects.filter(operator=operator)
        .defer("encrypted_value", "key_id")
        .order_by("name")
    )


def _notifications_described(queryset):
    """Notifications with what the log shows of them, read in the same query: the meter
    they are about (`about_user`, `about_type`, from the payload, the type's current
    name when the payload names only its id) and their latest attempt (`last_*`)."""
    attempts = DeliveryAttempt.objects.filter(notification_id=OuterRef("pk")).order_by(
        "-attempted_at", "-id"
    )
    return (
        queryset.defer("payload")
        .annotate(
            about_user=KT("payload__userId"),
            _type_id=Cast(KT("payload__meterTypeId"), UUIDField()),
        )
        .annotate(
            about_type=Subquery(
                MeterType.objects.filter(pk=OuterRef("_type_id")).values("name")[:1]
            ),
            last_attempted_at=Subquery(attempts.values("attempted_at")[:1]),
            last_succeeded=Subquery(attempts.values("succeeded")[:1]),
            last_response_status=Subquery(attempts.values("response_status")[:1]),
            last_error=Subquery(attempts.values("error")[:1]),
        )
    )


def deliveries_recent(
    *, operator: Operator, status: str | None = None, limit: int = DELIVERY_LOG_SIZE
) -> list[Notification]:
    """The operator's latest notifications (all, or those of one status), newest first,
    described as the log shows them. One query."""
    queryset = Notification.objects.filter(operator=operator)
    if status:
        queryset = queryset.filter(status=status)
    return list(_notifications_described(queryset).order_by("-created_at", "-id")[:limit])


# -- Secrets shown once -----------------------------------------------------------------

_ONE_TIME_KEY = "dashboard-access-one-time-secret"
# How long a secret waits for the page that shows it (the redirect follows at once).
_ONE_TIME_SECONDS = 300


def _secret_keep(request: HttpRequest, *, about: str, values: dict[str, str]) -> None:
    """Keep `values` for the next page that shows `about` (and no page after it).

    The values wait in the cache (Redis) for minutes at most, under a random name the
    session holds, so a secret never sits in the session table; only while the cache
    cannot be reached do they go in the session itself."""
    name = secrets.token_urlsafe(24)
    try:
        cache.set(f"{_ONE_TIME_KEY}:{name}", values, _ONE_TIME_SECONDS)
    except RedisError:  # the session still works
        logger.warning("The cache is unreachable; a one-time secret waits in the session.")
        request.session[_ONE_TIME_KEY] = {"about": about, "values": values}
        return
    request.session[_ONE_TIME_KEY] = {"about": about, "cached": name}


def _secret_take(request: HttpRequest, *, about: str) -> dict[str, str] | None:
    """The values kept for `about`, once. Whatever was kept is dropped, so a secret
    never waits for a later page."""
    kept = request.session.pop(_ONE_TIME_KEY, None)
    if not kept:
        return None
    values = kept.get("values")
    if "cached" in kept:
        key = f"{_ONE_TIME_KEY}:{kept['cached']}"
        try:
            values = cache.get(key)
            cache.delete(key)
        except RedisError:  # the secret is lost; a rotation issues another
            logger.warning("The cache is unreachable; a one-time secret cannot be shown.")
            return None
    if kept.get("about") != about:
        return None
    return values


# -- Forms ------------------------------------------------------------------------------


class ApplicationCreateForm(forms.Form):
    name = forms.CharField(
        max_length=255,
        widget=forms.TextInput(attrs={"class": INPUT_CLASS, "autocomplete": "off"}),
        help_text="What uses it, so you can tell applications apart: “Billing export”.",
    )
    scopes = forms.MultipleChoiceField(
        choices=list(SCOPES.items()),
        widget=forms.CheckboxSelectMultiple(attrs={"class": " ".join(CHECKBOX_CLASSES)}),
        error_messages={
            "required": "Choose at least one scope: its tokens may do only what you allow here."
        },
    )

    def scope_groups(self) -> list[tuple[str, list]]:
        """The scope checkboxes under the product they belong to."""
        grouped = defaultdict(list)
        for checkbox in self["scopes"]:
            grouped[checkbox.data["value"].split(":", 1)[0]].append(checkbox)
        return [
            (label, grouped[prefix]) for prefix, label in SCOPE_GROUPS.items() if prefix in grouped
        ]


def _api_errors_to_form(form: forms.Form, errors: dict) -> None:
    """Put the API serializer's messages on the form's fields (or on the form)."""
    for field, field_errors in errors.items():
        target = field if field in form.fields else None
        if target is not None and form.has_error(target):
            continue  # the form's own message says it already
        for message in field_errors if isinstance(field_errors, list) else [field_errors]:
            form.add_error(target, str(message))


class ParameterCreateForm(forms.Form):
    """What the API's create takes, checked by the API's serializer."""

    name = forms.CharField(
        required=False,
        strip=False,
        widget=forms.TextInput(attrs={"class": INPUT_CLASS, "autocomplete": "off"}),
        help_text="Letters, digits, _ - . and / between segments: credentials/crm/api-key. "
        "Streams refer to it as {{param:name}}.",
    )
    type = forms.ChoiceField(
        choices=Parameter.Type.choices,
        initial=Parameter.Type.STANDARD,
        widget=UnfoldAdminSelectWidget,
        help_text="A sensitive value is stored encrypted and never shown again, here or in "
        "the API.",
    )
    value = forms.CharField(
        required=False,
        strip=False,
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 3, "autocomplete": "off"}),
    )
    description = forms.CharField(
        required=False, strip=False, widget=UnfoldAdminTextareaWidget(attrs={"rows": 2})
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.validated: dict = {}

    def clean(self):
        cleaned = super().clean()
        fields = ("name", "type", "value", "description")
        serializer = ParameterCreateSerializer(
            data={name: self.data.get(name, "") for name in fields}
        )
        if serializer.is_valid():
            self.validated = dict(serializer.validated_data)
        else:
            _api_errors_to_form(self, serializer.errors)
        return cleaned


class ParameterUpdateForm(forms.Form):
    """What the API's update takes (the value and the description), checked by the
    API's serializer. A sensitive value's field starts empty, and empty keeps it."""

    value = forms.CharField(
        required=False,
        strip=False,
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 3, "autocomplete": "off"}),
    )
    description = forms.CharField(
        required=False, strip=False, widget=UnfoldAdminTextareaWidget(attrs={"rows": 2})
    )

    def __init__(self, *args, parameter: Parameter, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.parameter = parameter
        self.validated: dict = {}
        value_field = self.fields["value"]
        if parameter.is_sensitive:
            value_field.widget = forms.PasswordInput(
                render_value=False, attrs={"class": INPUT_CLASS, "autocomplete": "new-password"}
            )
            value_field.help_text = (
                f"Stored encrypted and shown as {MASK}. Leave empty to keep the current value."
            )
        else:
            value_field.initial = parameter.plain_value
        self.fields["description"].initial = parameter.description

    def clean(self):
        cleaned = super().clean()
        data = {"description": self.data.get("description", "")}
        value = self.data.get("value", "")
        if value or not self.parameter.is_sensitive:
            data["value"] = value
        serializer = ParameterUpdateSerializer(self.parameter, data=data)
        if serializer.is_valid():
            self.validated = dict(serializer.validated_data)
        else:
            _api_errors_to_form(self, serializer.errors)
        return cleaned


class WebhookForm(forms.Form):
    url = forms.URLField(
        label="URL",
        max_length=WebhookEndpoint._meta.get_field("url").max_length,
        assume_scheme="https",
        validators=[URLValidator(schemes=["http", "https"])],
        widget=forms.URLInput(
            attrs={"class": INPUT_CLASS, "placeholder": "https://example.com/tally/webhooks"}
        ),
        help_text="Tally POSTs each notification here as JSON, signed (Tally-Signature).",
    )
    enabled = forms.BooleanField(
        required=False,
        widget=UnfoldBooleanSwitchWidget,
        help_text="While disabled, notifications are listed below but not sent.",
    )


# -- Helpers ----------------------------------------------------------------------------


def _admin_only(request: HttpRequest) -> HttpResponse | None:
    """The read-only page for a viewer opening a page that exists only to change
    something (a form or a confirmation); None for an admin."""
    if request.membership.role == OperatorMembership.Role.ADMIN:
        return None
    return shell_render(
        request, DASHBOARD, "dashboard/forbidden.html", {"title": "Read-only access"}, status=403
    )


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation page asks: `question`, what will happen (`consequences`),
    the button's `action` label and whether it is `dangerous`, and where Cancel goes."""

    question: str
    consequences: list[str]
    action: str
    cancel_url: str
    dangerous: bool = False


def _confirm_page(
    request: HttpRequest, *, title: str, section: str, confirmation: Confirmation
) -> HttpResponse:
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_confirm.html",
        {"title": title, "section": section, "confirmation": confirmation},
    )


def _token_example(request: HttpRequest, client_id: str, client_secret: str) -> str:
    body = json.dumps(
        {
            "client_id": client_id,
            "client_secret": client_secret,
            "grant_type": "client_credentials",
            "audience": settings.TALLY["API_AUDIENCE"],
        },
        indent=2,
    )
    url = request.build_absolute_uri(reverse("oauth-token"))
    return f"curl -s {url} \\\n  -H 'Content-Type: application/json' \\\n  -d '{body}'"


# -- Applications -----------------------------------------------------------------------


@operator_page
@require_safe
def applications(request):
    """`/dashboard/access/`: the operator's OAuth applications."""
    now = timezone.now()
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_applications.html",
        {
            "title": "Applications",
            "section": "applications",
            "now": now,
            "applications": applications_of(operator=request.operator, now=now),
            "scope_total": len(SCOPES),
        },
    )


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
def application_new(request):
    """A new application: a name and its scopes; its secret is shown once, next."""
    refused = _admin_only(request)
    if refused is not None:
        return refused
    form = ApplicationCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        issued = application_access_create(
            operator=request.operator,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
        )
        _secret_keep(
            request,
            about=f"application:{issued.access.pk}",
            values={"client_id": issued.client_id, "client_secret": issued.client_secret},
        )
        messages.success(request, f"Application “{issued.access.application.name}” created.")
        return redirect("dashboard:access-application", pk=issued.access.pk)
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_application_form.html",
        {"title": "New application", "section": "applications", "form": form},
    )


@operator_page
@require_safe
@never_cache
def application_detail(request, pk):
    """One application; right after it was created or its secret rotated, the secret."""
    now = timezone.now()
    access = operator_object_or_404(
        request, _applications_described(ApplicationAccess.objects.all(), now=now), pk=pk
    )
    secret = _secret_take(request, about=f"application:{access.pk}")
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_application.html",
        {
            "title": access.application.name,
            "section": "applications",
            "now": now,
            "access": access,
            "scopes": [(name, SCOPES[name]) for name in access.scopes if name in SCOPES],
            "secret": secret,
            "secret_rows": [
                ("Client ID", secret["client_id"], "new-client-id"),
                ("Client secret", secret["client_secret"], "client-secret"),
            ]
            if secret
            else [],
            "token_example": (
                _token_example(request, secret["client_id"], secret["client_secret"])
                if secret
                else ""
            ),
        },
    )


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
def application_rotate(request, pk):
    """Confirm, then give the application a new secret (shown once, on its page)."""
    access = operator_object_or_404(
        request, ApplicationAccess.objects.select_related("application"), pk=pk
    )
    refused = _admin_only(request)
    if refused is not None:
        return refused
    if request.method == "POST":
        issued = application_access_rotate_secret(access=access)
        _secret_keep(
            request,
            about=f"application:{access.pk}",
            values={"client_id": issued.client_id, "client_secret": issued.client_secret},
        )
        messages.success(request, "New client secret made; the old one no longer works.")
        return redirect("dashboard:access-application", pk=access.pk)
    name = access.application.name
    return _confirm_page(
        request,
        title=f"Rotate the secret of {name}",
        section="applications",
        confirmation=Confirmation(
            question=f"Give “{name}” a new client secret?",
            consequences=[
                "The current secret stops working at once, and every token issued with it "
                "is revoked: integrations using it get 401 until they use the new secret.",
                "The new secret is shown once, on the next page.",
            ],
            action="Rotate the secret",
            cancel_url=reverse("dashboard:access-application", kwargs={"pk": access.pk}),
        ),
    )


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
def application_revoke(request, pk):
    """Confirm, then revoke the application for good."""
    access = operator_object_or_404(
        request, ApplicationAccess.objects.select_related("application"), pk=pk
    )
    refused = _admin_only(request)
    if refused is not None:
        return refused
    name = access.application.name
    if request.method == "POST":
        application_access_revoke(access=access)
        messages.success(request, f"“{name}” is revoked: its client id and tokens no longer work.")
        return redirect("dashboard:access")
    return _confirm_page(
        request,
        title=f"Revoke {name}",
        section="applications",
        confirmation=Confirmation(
            question=f"Revoke “{name}” ({access.client_id})?",
            consequences=[
                "Its client id and secret get no new token, and its tokens are refused "
                "from now on.",
                "The application is deleted: this cannot be undone. Create a new one to "
                "give access again.",
            ],
            action="Revoke the application",
            cancel_url=reverse("dashboard:access-application", kwargs={"pk": access.pk}),
            dangerous=True,
        ),
    )


# -- Parameters -------------------------------------------------------------------------


@operator_page
@require_safe
def parameters(request):
    """`/dashboard/access/parameters/`: the operator's global parameters."""
    listed = parameters_of(operator=request.operator)
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_parameters.html",
        {
            "title": "Parameters",
            "section": "parameters",
            "parameters": listed,
            "quota": MAX_PARAMETERS_PER_OPERATOR,
            "at_quota": len(listed) >= MAX_PARAMETERS_PER_OPERATOR,
        },
    )


def _sensitive_value_forgotten(form: forms.Form) -> None:
    """Re-render a refused form without the value typed for a sensitive parameter."""
    data = form.data.copy()
    data["value"] = ""
    form.data = data


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
def parameter_new(request):
    """A new parameter, validated as the API validates it."""
    refused = _admin_only(request)
    if refused is not None:
        return refused
    form = ParameterCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if form.is_valid():
            try:
                created = parameter_create(operator=request.operator, **form.validated)
            except ParameterConflict as conflict:
                form.add_error(None, str(conflict))
            else:
                messages.success(request, f"Parameter “{created.name}” created.")
                return redirect("dashboard:access-parameters")
        if form.data.get("type") == Parameter.Type.SENSITIVE:
            _sensitive_value_forgotten(form)
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_parameter_form.html",
        {"title": "New parameter", "section": "parameters", "form": form},
    )


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
def parameter_edit(request, pk):
    """Change a parameter's value or description (its name and type stay)."""
    parameter = operator_object_or_404(request, Parameter, pk=pk)
    refused = _admin_only(request)
    if refused is not None:
        return refused
    form = ParameterUpdateForm(
        request.POST if request.method == "POST" else None, parameter=parameter
    )
    if request.method == "POST":
        if form.is_valid():
            parameter_update(parameter=parameter, **form.validated)
            messages.success(request, f"Parameter “{parameter.name}” saved.")
            return redirect("dashboard:access-parameters")
        if parameter.is_sensitive:
            _sensitive_value_forgotten(form)
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_parameter_form.html",
        {
            "title": f"Parameter {parameter.name}",
            "section": "parameters",
            "form": form,
            "parameter": parameter,
        },
    )


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
def parameter_remove(request, pk):
    """Confirm, then delete a parameter."""
    parameter = operator_object_or_404(request, Parameter, pk=pk)
    refused = _admin_only(request)
    if refused is not None:
        return refused
    if request.method == "POST":
        parameters_delete(operator=request.operator, names=[parameter.name])
        messages.success(request, f"Parameter “{parameter.name}” deleted.")
        return redirect("dashboard:access-parameters")
    return _confirm_page(
        request,
        title=f"Delete {parameter.name}",
        section="parameters",
        confirmation=Confirmation(
            question=f"Delete the parameter “{parameter.name}”?",
            consequences=[
                f"Stream nodes that refer to {{{{param:{parameter.name}}}}} fail on their "
                "next record until a parameter of that name exists again.",
                "This cannot be undone.",
            ],
            action="Delete the parameter",
            cancel_url=reverse("dashboard:access-parameters"),
            dangerous=True,
        ),
    )


# -- Webhook and deliveries -------------------------------------------------------------


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
@never_cache
def webhook(request):
    """`/dashboard/access/webhook/`: where notifications go, their signing secret, and
    the latest deliveries (filtered by `?status=`)."""
    endpoint = WebhookEndpoint.objects.filter(operator=request.operator).first()
    if request.method == "POST":
        form = WebhookForm(request.POST)
        if form.is_valid():
            saved = webhook_endpoint_set(
                operator=request.operator,
                url=form.cleaned_data["url"],
                enabled=form.cleaned_data["enabled"],
            )
            if endpoint is None:
                # The secret was made just now: the receiver needs it, and it is shown once.
                _secret_keep(
                    request, about="webhook", values={"signing_secret": saved.signing_secret}
                )
            messages.success(request, "Webhook saved.")
            return redirect("dashboard:access-webhook")
    else:
        initial = (
            {"url": endpoint.url, "enabled": endpoint.enabled} if endpoint else {"enabled": True}
        )
        form = WebhookForm(initial=initial)

    status = request.GET.get("status", "")
    if status and status not in Notification.Status.values:
        messages.error(
            request,
            f"There is no delivery status “{status[:40]}”; showing every status. "
            f"The statuses are {', '.join(Notification.Status.values)}.",
        )
        status = ""
    secret = _secret_take(request, about="webhook")
    deliveries = deliveries_recent(operator=request.operator, status=status or None)
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_webhook.html",
        {
            "title": "Webhook",
            "section": "webhook",
            "endpoint": endpoint,
            "form": form,
            "secret": secret,
            "secret_rows": [("Signing secret", secret["signing_secret"], "signing-secret")]
            if secret
            else [],
            "deliveries": deliveries,
            "status": status,
            "statuses": Notification.Status.values,
            "log_size": DELIVERY_LOG_SIZE,
            "log_full": len(deliveries) >= DELIVERY_LOG_SIZE,
        },
    )


@operator_page
@require_http_methods(["GET", "HEAD", "POST"])
def webhook_rotate(request):
    """Confirm, then give the webhook a new signing secret (shown once)."""
    endpoint = operator_object_or_404(request, WebhookEndpoint)
    refused = _admin_only(request)
    if refused is not None:
        return refused
    if request.method == "POST":
        rotated = webhook_endpoint_rotate_secret(endpoint=endpoint)
        _secret_keep(request, about="webhook", values={"signing_secret": rotated.signing_secret})
        messages.success(
            request, "New signing secret made; deliveries are signed with it from now on."
        )
        return redirect("dashboard:access-webhook")
    return _confirm_page(
        request,
        title="New signing secret",
        section="webhook",
        confirmation=Confirmation(
            question="Make a new signing secret for the webhook?",
            consequences=[
                "Every delivery from now on, retries included, is signed with the new "
                "secret: your receiver rejects them until it has it.",
                "The new secret is shown once, on the next page. The current one is never shown.",
            ],
            action="Make a new secret",
            cancel_url=reverse("dashboard:access-webhook"),
        ),
    )


@operator_page
@require_safe
def delivery_detail(request, pk):
    """One notification: what was sent and every attempt at delivering it."""
    described = _notifications_described(Notification.objects.all()).annotate(
        # As text, so that decimals keep their digits.
        payload_text=Cast("payload", TextField())
    )
    notification = operator_object_or_404(request, described, pk=pk)
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/access_delivery.html",
        {
            "title": f"{notification.get_kind_display()} notification",
            "section": "webhook",
            "notification": notification,
            "attempts": list(notification.delivery_attempts.order_by("-attempted_at", "-id")),
            "payload": dumps_pretty(_numbers_normalized(loads(notification.payload_text))),
            "endpoint": WebhookEndpoint.objects.filter(operator=request.operator).first(),
        },
    )


def _numbers_normalized(value):
    """`value` (decoded JSON) with exact numbers written as people read them: 950, not
    950.0000000000 (the same number, as the receiver's JSON parser sees it)."""
    if isinstance(value, Decimal):
        return normalize_decimal(value)
    if isinstance(value, dict):
        return {key: _numbers_normalized(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_normalized(item) for item in value]
    return value


@operator_page
@require_POST
def delivery_resend(request, pk):
    """Queue a notification again with a fresh set of attempts."""
    notification = operator_object_or_404(request, Notification, pk=pk)
    notification_resend(notification=notification)
    endpoint = WebhookEndpoint.objects.filter(operator=request.operator).first()
    if endpoint is None or not endpoint.enabled:
        messages.warning(
            request,
            "Queued again, but the webhook is not enabled: it will be marked skipped. "
            "Enable the webhook first to send it.",
        )
    else:
        messages.success(request, "Queued again: it is delivered within a minute.")
    if request.POST.get("back") == "delivery":
        return redirect("dashboard:access-delivery", pk=notification.pk)
    return redirect("dashboard:access-webhook")
