"""The platform dashboard's pages beside the overview (`platform.py`): operators, with
suspend and reactivate; connector adoption; the billing report and its downloads; the
platform settings. Staff only (`access.staff_page`).

Figures come from `reporting.platform`, the code the platform API answers with, and
input is checked by the API's own serializers, so a page never says something the API
would not. Changes go through `tenants.services` and need the model permission the
admin asks for (`tenants.change_operator`, `tenants.change_platformsettings`): staff
without it may look, and a change is refused with a 403, as in the admin.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from decimal import Decimal, localcontext
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from rest_framework import serializers

from common.api.renderers import CSVRenderer, DecimalJSONRenderer
from common.json import normalize_decimal
from reporting.api.serializers import UsageReportQuerySerializer
from reporting.api.views import _report_json, _report_table
from reporting.platform import (
    DEFAULT_OPERATOR_SORT,
    EXACT,
    OPERATOR_FIGURE_SORTS,
    OPERATOR_SORTS,
    ReportLine,
    connector_figures,
    operator_figures_page,
    usage_report,
)
from reporting.web.access import staff_page
from reporting.web.shell import PLATFORM, shell_render
from reporting.web.templatetags import quantity
from tenants.api.serializers import PlatformSettingsSerializer
from tenants.models import Operator, PlatformSettings
from tenants.services import operator_set_status, platform_settings_update
from tenants.web.forms import INPUT_CLASS

CHANGE_OPERATOR = "tenants.change_operator"
CHANGE_SETTINGS = "tenants.change_platformsettings"


def _refused(request: HttpRequest, permission: str) -> HttpResponse | None:
    """A 403 page when the staff member may not make this change, else None."""
    if request.user.has_perm(permission):
        return None
    return shell_render(
        request, PLATFORM, "platform/forbidden.html", {"title": "Read-only access"}, status=403
    )


# -- Forms checked by the API's serializers ------------------------------------------------


class SerializerForm(forms.Form):
    """A form of plain text fields whose rules are a DRF serializer's, so the page and
    the API accept and refuse the same input with the same words. A field the request
    leaves out is left out of the serializer's input too.

    `wire_names` maps each field to the serializer's name for it ("billing.eventWeight"
    for a nested one); `validated` holds the serializer's data once the form is valid.
    """

    serializer_class: type[serializers.Serializer]
    wire_names: dict[str, str]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.validated: dict = {}
        for field in self.fields.values():
            field.widget.attrs["class"] = INPUT_CLASS

    def wire_value(self, name: str, text: str):
        """The value the serializer is given for a field's text (the text itself)."""
        return text

    def clean(self) -> dict:
        cleaned = super().clean()
        data: dict = {}
        for name, wire_name in self.wire_names.items():
            if name not in self.data:
                continue  # left out, as in an API request: the serializer's default
            *parents, leaf = wire_name.split(".")
            target = data
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = self.wire_value(name, cleaned.get(name, ""))
        serializer = self.serializer_class(data=data)
        if serializer.is_valid():
            self.validated = serializer.validated_data
        else:
            self._errors_from(serializer.errors, "")
        return cleaned

    def _errors_from(self, errors, prefix: str) -> None:
        by_wire_name = {wire: name for name, wire in self.wire_names.items()}
        if isinstance(errors, list):
            for message in errors:
                self.add_error(by_wire_name.get(prefix.removesuffix(".")), str(message))
            return
        for key, value in errors.items():
            wire_name = f"{prefix}{key}"
            if isinstance(value, dict):
                self._errors_from(value, f"{wire_name}.")
            else:
                # Errors of the whole serializer (or of a field not on the form) go
                # above the form.
                field = by_wire_name.get(wire_name)
                for message in value:
                    self.add_error(field, str(message))


def _text_field(label: str, *, widget=forms.TextInput, help_text: str = "") -> forms.CharField:
    # Not required and not stripped: every rule is the serializer's.
    return forms.CharField(
        label=label, required=False, strip=False, widget=widget, help_text=help_text
    )


class BillingRangeForm(SerializerForm):
    """The report's range, as `GET /platform-api/usage/report` takes it."""

    serializer_class = UsageReportQuerySerializer
    wire_names = {"start": "start", "end": "end"}

    start = _text_field(
        "First day", widget=forms.DateInput(attrs={"type": "date"}), help_text="UTC, inclusive"
    )
    end = _text_field(
        "Last day", widget=forms.DateInput(attrs={"type": "date"}), help_text="UTC, inclusive"
    )


# A weight as people type it: plain decimal notation (no exponent, no digit grouping).
_DECIMAL_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

WEIGHT_HELP = "Billable units per {}; 0 or more, exact."


class PlatformSettingsForm(SerializerForm):
    """The platform profile and billing weights, as `PUT /platform-api/settings` takes
    them."""

    serializer_class = PlatformSettingsSerializer
    wire_names = {
        "name": "name",
        "contact_email": "contactEmail",
        "webhook_url": "webhookUrl",
        "api_call_weight": "billing.apiCallWeight",
        "gateway_request_weight": "billing.gatewayRequestWeight",
        "event_weight": "billing.eventWeight",
        "storage_gb_weight": "billing.storageGbWeight",
    }
    weights = {
        "api_call_weight": "billing_api_call_weight",
        "gateway_request_weight": "billing_gateway_request_weight",
        "event_weight": "billing_event_weight",
        "storage_gb_weight": "billing_storage_gb_weight",
    }

    name = _text_field("Platform name")
    contact_email = _text_field("Contact e-mail", widget=forms.EmailInput)
    webhook_url = _text_field(
        "Webhook URL",
        widget=forms.URLInput,
        help_text="Where the platform's own notifications go; empty for none.",
    )
    api_call_weight = _text_field("API call", help_text=WEIGHT_HELP.format("API call"))
    gateway_request_weight = _text_field(
        "Gateway request", help_text=WEIGHT_HELP.format("gateway request")
    )
    event_weight = _text_field("Event ingested", help_text=WEIGHT_HELP.format("event ingested"))
    storage_gb_weight = _text_field(
        "Gigabyte stored", help_text=WEIGHT_HELP.format("gigabyte (10⁹ bytes) stored")
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in self.weights:
            self.fields[name].widget.attrs["inputmode"] = "decimal"

    @classmethod
    def initial_of(cls, row: PlatformSettings) -> dict[str, str]:
        initial = {
            "name": row.name,
            "contact_email": row.contact_email,
            "webhook_url": row.webhook_url,
        }
        for name, column in cls.weights.items():
            initial[name] = format(normalize_decimal(getattr(row, column)), "f")
        return initial

    def wire_value(self, name: str, text: str):
        # The API takes weights as JSON numbers: typed decimals become numbers, anything
        # else stays text, which the serializer refuses in its own words.
        if name in self.weights and _DECIMAL_TEXT.fullmatch(text.strip()):
            return Decimal(text.strip())
        return text


# -- Operators -----------------------------------------------------------------------------

OPERATORS_PER_PAGE = 25
SORT_TITLES = {
    "name": "Name",
    "status": "Status",
    "createdAt": "Created",
    "lastActiveAt": "Last active",
    "apiCalls": "API calls",
    "eventsIngested": "Events",
    "activeConnections": "Active connections",
}
ORDERS = ("asc", "desc")


def _whole(text: str | None, default: int) -> int | None:
    """A page number of 1 or more from the query string; None when it is not one."""
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        return None
    return int(text)


def _operators_context(request: HttpRequest) -> dict:
    """The operators page's list for the query string's sort, order and page. A bad
    value is named in `problems` and its default used instead."""
    problems = []
    sort_by = request.GET.get("sort") or DEFAULT_OPERATOR_SORT
    if sort_by not in OPERATOR_SORTS:
        problems.append(f"“{sort_by}” is not a column to sort by; sorted by name instead.")
        sort_by = DEFAULT_OPERATOR_SORT
    order = (request.GET.get("order") or "asc").lower()
    if order not in ORDERS:
        problems.append("The order is “asc” or “desc”; ascending is shown instead.")
        order = "asc"
    number = _whole(request.GET.get("page"), 1)
    if number is None:
        problems.append("A page number is a whole number of 1 or more; the first is shown.")
        number = 1
    # Far past the last page is the last page (Postgres' OFFSET is a bigint).
    number = min(number, 2**40)

    def page_of(number: int):
        return operator_figures_page(
            sort_by=sort_by,
            descending=order == "desc",
            skip=(number - 1) * OPERATORS_PER_PAGE,
            limit=OPERATORS_PER_PAGE,
        )

    figures, total = page_of(number)
    pages = max(1, math.ceil(total / OPERATORS_PER_PAGE))
    if number > pages:
        number = pages
        figures, total = page_of(number)

    def query(**changes) -> str:
        params = {"sort": sort_by, "order": order, "page": number, **changes}
        return "?" + urlencode(params)

    columns = []
    for key, title in SORT_TITLES.items():
        current = key == sort_by
        flipped = "desc" if current and order == "asc" else "asc"
        columns.append(
            {
                "key": key,
                "title": title,
                "url": query(sort=key, order=flipped, page=1),
                "current": current,
                "number": key in OPERATOR_FIGURE_SORTS,
                "aria_sort": ("ascending" if order == "asc" else "descending") if current else "",
            }
        )
    first = (number - 1) * OPERATORS_PER_PAGE
    return {
        "operators": figures,
        "total": total,
        "columns": {column["key"]: column for column in columns},
        "sort_choices": list(SORT_TITLES.items()),
        "sort_by": sort_by,
        "sort_title": SORT_TITLES[sort_by],
        "order": order,
        "page_number": number,
        "pages": pages,
        "shown_from": first + 1 if figures else 0,
        "shown_to": first + len(figures),
        "previous_url": query(page=number - 1) if number > 1 else "",
        "next_url": query(page=number + 1) if number < pages else "",
        "here": reverse("platform:operators") + query(),
        "problems": problems,
    }


def _render_operators(request: HttpRequest, *, status: int = 200, extra=()) -> HttpResponse:
    context = _operators_context(request)
    context["problems"] = [*extra, *context["problems"]]
    context.update(
        {
            "title": "Operators",
            "now": timezone.now(),
            "can_change": request.user.has_perm(CHANGE_OPERATOR),
            "input_class": INPUT_CLASS,
        }
    )
    return shell_render(request, PLATFORM, "platform/operators.html", context, status=status)


@staff_page
@require_safe
def operators(request):
    """`/platform/operators/`: every operator with its figures, all time, sorted and
    paged as `GET /platform-api/metrics/operators` does."""
    return _render_operators(request)


STATUS_CHANGES = {
    Operator.Status.SUSPENDED: "{name} is suspended: its API tokens are refused (403) until "
    "it is reactivated.",
    Operator.Status.ACTIVE: "{name} is active: its API tokens are accepted again.",
}


@staff_page
@require_POST
def operator_status(request, pk):
    """Suspend or reactivate an operator (`status` = "suspended" or "active"), then go
    back to the list as it was."""
    refused = _refused(request, CHANGE_OPERATOR)
    if refused is not None:
        return refused
    operator = get_object_or_404(Operator, pk=pk)
    status = request.POST.get("status", "")
    if status not in STATUS_CHANGES:
        problem = f"Nothing was changed: “{status}” is not a status (active or suspended)."
        return _render_operators(request, status=400, extra=[problem])
    operator_set_status(operator=operator, status=status)
    messages.success(request, STATUS_CHANGES[status].format(name=operator.name))
    back = request.POST.get("next", "")
    operators_path = reverse("platform:operators")
    safe = url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()})
    if safe and back.startswith(operators_path):
        return redirect(back)
    return redirect(operators_path)


# -- Connectors ----------------------------------------------------------------------------


@staff_page
@require_safe
def connectors(request):
    """`/platform/connectors/`: the connector catalogue and each connector's adoption,
    all time (`GET /platform-api/metrics/connectors`)."""
    figures = connector_figures()
    chart = {
        "labels": [connector.name for connector in figures],
        "datasets": [
            {
                "label": "Operators using it",
                "data": [connector.operators_using for connector in figures],
                "backgroundColor": "var(--color-primary-600)",
                "borderColor": "var(--color-primary-600)",
            },
            {
                "label": "Active connections",
                "data": [connector.connections.active for connector in figures],
                "backgroundColor": "var(--color-primary-300)",
                "borderColor": "var(--color-primary-300)",
            },
        ],
    }
    adopted = [connector for connector in figures if connector.connections.total]
    return shell_render(
        request,
        PLATFORM,
        "platform/connectors.html",
        {
            "title": "Connectors",
            "connectors": figures,
            "adopted": adopted,
            "chart_data": json.dumps(chart),
            "chart_summary": "; ".join(
                f"{connector.name}: {connector.operators_using} operators, "
                f"{connector.connections.active} active connections"
                for connector in figures
            ),
        },
    )


# -- Billing report ------------------------------------------------------------------------


def _this_month_so_far() -> dict[str, str]:
    today = timezone.now().astimezone(datetime.UTC).date()
    return {"start": today.replace(day=1).isoformat(), "end": today.isoformat()}


def _billing_range(request: HttpRequest) -> BillingRangeForm:
    """The range of the query string (this month so far when none is given)."""
    asked = {name: request.GET[name] for name in ("start", "end") if name in request.GET}
    return BillingRangeForm(asked or _this_month_so_far())


def _exact(value: Decimal) -> str:
    # `quantity` with room for every digit of the units (they are exact, see the API).
    with localcontext(EXACT):
        return quantity(value)


def _report_row(line: ReportLine) -> dict:
    """A line of the report as the page shows it: totals, and what they are made of."""
    return {
        "id": line.id,
        "name": line.name,
        "api_calls": sum(line.api_calls_by_category.values()),
        "api_calls_by": _counted(line.api_calls_by_category),
        "gateway_requests": sum(line.gateway_requests_by_connector.values()),
        "gateway_requests_by": _counted(line.gateway_requests_by_connector),
        "events": sum(line.events_by_type.values()),
        "events_by": _counted(line.events_by_type),
        "storage_bytes": line.storage_bytes,
        "storage": _decimal_size(line.storage_bytes),
        "billable_units": _exact(line.billable_units),
    }


SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def _decimal_size(count: int) -> str:
    """Bytes in powers of 1000, as the billing weights count gigabytes: "1.5 GB"."""
    size, power = Decimal(count), 0
    while size >= 1000 and power < len(SIZE_UNITS) - 1:
        size, power = size.scaleb(-3), power + 1
    unit = SIZE_UNITS[power]
    return f"{quantity(size.quantize(Decimal('0.1')))} {unit}"


def _counted(counts: dict[str, int]) -> list[tuple[str, int]]:
    return [(key, count) for key, count in counts.items() if count]


@staff_page
@require_safe
def billing(request):
    """`/platform/billing/`: the billing report for a range of whole UTC days, as
    `GET /platform-api/usage/report` answers it, with its CSV and JSON."""
    form = _billing_range(request)
    context = {"title": "Billing report", "form": form, "report": None}
    if not form.is_valid():
        return shell_render(request, PLATFORM, "platform/billing.html", context, status=400)
    report = usage_report(start=form.validated["start"], end=form.validated["end"])
    download = urlencode({"start": report.start.isoformat(), "end": report.end.isoformat()})
    context.update(
        {
            "report": report,
            "rows": [_report_row(line) for line in report.operators],
            "totals": _report_row(report.totals),
            "days": (report.end - report.start).days + 1,
            "csv_url": f"{reverse('platform:billing-csv')}?{download}",
            "json_url": f"{reverse('platform:billing-json')}?{download}",
        }
    )
    return shell_render(request, PLATFORM, "platform/billing.html", context)


def _download(request: HttpRequest, *, as_csv: bool) -> HttpResponse:
    """The report's bytes exactly as the platform API answers them (its own functions
    and renderers), as a file; a bad range is the report page with its errors."""
    form = _billing_range(request)
    if not form.is_valid():
        context = {"title": "Billing report", "form": form, "report": None}
        return shell_render(request, PLATFORM, "platform/billing.html", context, status=400)
    report = usage_report(start=form.validated["start"], end=form.validated["end"])
    renderer = CSVRenderer() if as_csv else DecimalJSONRenderer()
    answer = _report_table(report) if as_csv else _report_json(report)
    response = HttpResponse(
        renderer.render(answer), content_type=f"{renderer.media_type}; charset={renderer.charset}"
    )
    extension = "csv" if as_csv else "json"
    response["Content-Disposition"] = (
        f'attachment; filename="usage-report-{report.start}-{report.end}.{extension}"'
    )
    return response


@staff_page
@require_safe
def billing_csv(request):
    """The billing report as `Accept: text/csv` gets it from the platform API."""
    return _download(request, as_csv=True)


@staff_page
@require_safe
def billing_json(request):
    """The billing report as the platform API's JSON."""
    return _download(request, as_csv=False)


# -- Settings ------------------------------------------------------------------------------


@staff_page
@require_http_methods(["GET", "HEAD", "POST"])
def platform_settings(request):
    """`/platform/settings/`: the platform profile and the billing report's weights, as
    `GET`/`PUT /platform-api/settings` read and write them."""
    row = PlatformSettings.load()
    can_change = request.user.has_perm(CHANGE_SETTINGS)
    status = 200
    if request.method == "POST":
        refused = _refused(request, CHANGE_SETTINGS)
        if refused is not None:
            return refused
        form = PlatformSettingsForm(request.POST)
        if form.is_valid():
            data = form.validated
            # As the API's PUT does it: every weight is on the form, so all are set.
            platform_settings_update(
                name=data["name"],
                contact_email=data["contact_email"],
                webhook_url=data.get("webhook_url") or "",
                billing={
                    field: data[field]
                    for field in PlatformSettings.BILLING_WEIGHTS
                    if field in data
                },
            )
            messages.success(request, "The platform settings are saved.")
            return redirect("platform:settings")
        status = 400
    else:
        form = PlatformSettingsForm(initial=PlatformSettingsForm.initial_of(row))
    if not can_change:
        for field in form.fields.values():
            field.disabled = True
    return shell_render(
        request,
        PLATFORM,
        "platform/settings.html",
        {"title": "Platform settings", "form": form, "row": row, "can_change": can_change},
        status=status,
    )
