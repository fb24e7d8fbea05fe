"""The usage explorer (`/dashboard/usage/`): a metric over a range of days, per hour,
day, week or month, as a chart and a table, and as CSV (`/dashboard/usage/csv/`).

It is `POST /metrics` in a form. The form's choices become the API's request body,
which the API's own serializer and rules check and `metrics_answer` answers: the page
shows what the API would answer, refuses what it would refuse in the same words (shown
beside the field that caused it), and the CSV is the API's `Accept: text/csv` answer.
Only the range is the page's own: whole UTC days, the last one included.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from django import forms
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from unfold.widgets import (
    DATETIME_CLASSES,
    UnfoldAdminSelectWidget,
    UnfoldAdminTextInputWidget,
)

from common.api.errors import flatten_validation_errors
from common.api.renderers import CSVRenderer
from common.json import dumps_pretty, dumps_text
from metering.models import MeterType
from reporting.api.serializers import MetricsSerializer
from reporting.api.views import _csv_table
from reporting.metrics import (
    ACCOUNT_ID,
    BASE,
    CUSTOMER_ID,
    CYCLE_METRICS,
    DAY,
    EVENT_STATUS,
    EVENTS,
    HOUR,
    INVOICE,
    MONEY_METRICS,
    MONTH,
    REVENUE,
    REVENUE_FOR_CYCLE,
    SCHEMA_NAME,
    USAGE,
    USAGE_FOR_CYCLE,
    USAGE_METER_ID,
    WEEK,
    MetricsInvalid,
    metrics_request_check,
)
from reporting.selectors import MetricResult, Series, metrics_answer
from reporting.web.access import operator_page
from reporting.web.shell import DASHBOARD, shell_render
from tenants.models import Operator

METRIC_CHOICES = [
    (USAGE, "Usage"),
    (REVENUE, "Revenue"),
    (EVENTS, "Events"),
    (USAGE_FOR_CYCLE, "Usage per pricing cycle"),
    (REVENUE_FOR_CYCLE, "Revenue per pricing cycle"),
]
PERIOD_CHOICES = [(HOUR, "Hour"), (DAY, "Day"), (WEEK, "Week (from Monday)"), (MONTH, "Month")]
GROUP_CHOICES = [
    ("", "Nothing: one line"),
    (CUSTOMER_ID, "Customer"),
    (USAGE_METER_ID, "Meter type"),
    (ACCOUNT_ID, "Billing account"),
    (EVENT_STATUS, "Event status"),
    (SCHEMA_NAME, "Record type"),
]
CURRENCY_CHOICES = [(BASE, "Base currency"), (INVOICE, "Each account's invoice currency")]

DEFAULT_DAYS = 7
# The last day a range may end on: the month after it must still be a date.
LAST_DAY = datetime.date(9998, 12, 31)
# What the page draws and lists; the CSV holds everything.
SERIES_SHOWN = 8
ROWS_SHOWN = 400
# Series colours, in order (CSS variables of the admin's theme).
COLOURS = [
    "var(--color-primary-600)",
    "var(--color-orange-500)",
    "var(--color-blue-500)",
    "var(--color-green-600)",
    "var(--color-red-500)",
    "var(--color-base-500)",
    "var(--color-primary-300)",
    "var(--color-orange-300)",
]


def _select(choices=()) -> UnfoldAdminSelectWidget:
    return UnfoldAdminSelectWidget(choices=choices)


def _day_input() -> forms.DateInput:
    return forms.DateInput(
        attrs={"type": "date", "class": " ".join(DATETIME_CLASSES)}, format="%Y-%m-%d"
    )


class UsageForm(forms.Form):
    """The explorer's question (a GET form). Choices are passed on as given, so the
    API's serializer judges them; only the days are read here."""

    metric = forms.CharField(required=False, label="Metric", widget=_select(METRIC_CHOICES))
    meter_type = forms.CharField(required=False, label="Meter type", widget=_select())
    customer = forms.CharField(
        required=False,
        label="Customer (user id)",
        help_text="The exact id; empty for every customer.",
        widget=UnfoldAdminTextInputWidget(attrs={"placeholder": "Every customer"}),
    )
    group_by = forms.CharField(required=False, label="Split by", widget=_select(GROUP_CHOICES))
    period = forms.CharField(required=False, label="Per", widget=_select(PERIOD_CHOICES))
    start = forms.DateField(required=False, label="From (UTC day)", widget=_day_input())
    end = forms.DateField(required=False, label="To (UTC day, included)", widget=_day_input())
    currency = forms.CharField(
        required=False,
        label="Revenue in",
        help_text="For revenue metrics.",
        widget=_select(CURRENCY_CHOICES),
    )

    def __init__(self, data, *, meter_types: list[MeterType]) -> None:
        super().__init__(data)
        self.fields["meter_type"].widget.choices = [
            ("", "All meter types, added up"),
            *((str(meter_type.pk), meter_type.name) for meter_type in meter_types),
        ]

    def clean_end(self) -> datetime.date | None:
        end = self.cleaned_data["end"]
        # A later day has no month after it to end a bucket in.
        if end is not None and end > LAST_DAY:
            raise forms.ValidationError(f"Must be {LAST_DAY.isoformat()} or earlier.")
        return end


def usage_defaults(today: datetime.date) -> dict[str, str]:
    """The question asked when the page opens: usage per day over the last 7 days."""
    return {
        "metric": USAGE,
        "period": DAY,
        "start": (today - datetime.timedelta(days=DEFAULT_DAYS - 1)).isoformat(),
        "end": today.isoformat(),
    }


@dataclass(frozen=True)
class MetricsRequest:
    """The API's request body for a valid form, and which form field made each of its
    filters (so an error about `filters[1]` is shown at that field)."""

    body: dict
    filter_fields: list[str]


def metrics_request(choices: dict) -> MetricsRequest:
    """`POST /metrics`'s body for the form's cleaned data: one query, whole UTC days."""
    query: dict = {"id": choices["metric"], "name": choices["metric"]}
    if choices["period"]:
        query["aggregationPeriod"] = choices["period"]
    if choices["group_by"]:
        query["groupBy"] = choices["group_by"]
    filters, filter_fields = [], []
    for field, name in (("meter_type", USAGE_METER_ID), ("customer", CUSTOMER_ID)):
        if choices[field]:
            filters.append({"fieldName": name, "fieldValues": [choices[field]]})
            filter_fields.append(field)
    if filters:
        query["filters"] = filters
    # BASE is the default: asked for only when it is not, so that the form's currency
    # choice does not stand in the way of a metric that has no currency.
    if choices["currency"] and choices["currency"] != BASE:
        query["configs"] = {"CURRENCY": choices["currency"]}
    end = choices["end"] + datetime.timedelta(days=1)
    body = {
        "startTime": f"{choices['start'].isoformat()}T00:00:00Z",
        "endTime": f"{end.isoformat()}T00:00:00Z",
        "metricQueries": [query],
    }
    return MetricsRequest(body, filter_fields)


def metrics_request_answer(*, operator: Operator, body: dict) -> list[MetricResult]:
    """What `POST /metrics` answers to `body`, checked as it checks it (its serializer, then
    `reporting.metrics.metrics_request_check`); raises MetricsInvalid with the API's
    (field path, message) pairs."""
    serializer = MetricsSerializer(data=body)
    if not serializer.is_valid():
        raise MetricsInvalid(
            [
                (item["field"] or "", item["message"])
                for item in flatten_validation_errors(serializer.errors)
            ]
        )
    data = serializer.validated_data
    start, end = data["start_time"], data["end_time"]
    queries = metrics_request_check(start, end, data["metric_queries"])
    return metrics_answer(operator=operator, start=start, end=end, queries=queries)


_QUERY_FIELDS = {
    "id": "metric",
    "name": "metric",
    "aggregationPeriod": "period",
    "groupBy": "group_by",
    "configs": "currency",
}
_FILTER_INDEX = re.compile(r"filters\[(\d+)\]")


def _form_field(path: str, filter_fields: list[str]) -> str | None:
    """The form field an API error path is about, or None for the form as a whole."""
    if path == "startTime":
        return "start"
    if path == "endTime":
        return "end"
    rest = path.removeprefix("metricQueries[0].")
    if rest == path:
        return None
    if found := _FILTER_INDEX.match(rest):
        index = int(found.group(1))
        return filter_fields[index] if index < len(filter_fields) else None
    return _QUERY_FIELDS.get(re.split(r"[.\[]", rest, maxsplit=1)[0])


@dataclass(frozen=True)
class Explored:
    """A question and its answer, or the form with what is wrong with it."""

    form: UsageForm
    meter_types: list[MeterType]
    query: dict[str, str]  # the question as GET parameters, defaults filled in
    request: MetricsRequest | None = None
    result: MetricResult | None = None


def usage_explore(request) -> Explored:
    """Read the question from the request's GET parameters and answer it."""
    meter_types = list(MeterType.objects.filter(operator=request.operator).order_by("name"))
    asked = {key: value for key, value in request.GET.items() if value != ""}
    data = {**usage_defaults(timezone.now().astimezone(datetime.UTC).date()), **asked}
    form = UsageForm(data, meter_types=meter_types)
    query = {name: data[name] for name in form.fields if data.get(name)}
    if not form.is_valid():
        return Explored(form, meter_types, query)
    made = metrics_request(form.cleaned_data)
    try:
        [result] = metrics_request_answer(operator=request.operator, body=made.body)
    except MetricsInvalid as invalid:
        for path, message in invalid.problems:
            form.add_error(_form_field(path, made.filter_fields), message)
        return Explored(form, meter_types, query, made)
    return Explored(form, meter_types, query, made, result)


# -- Presenting an answer ------------------------------------------------------------------


def _bucket_label(moment: datetime.datetime, metric: str, period: str, *, short: bool) -> str:
    """A bucket by its start: "3 Jul" on the chart's axis, "Wed 3 Jul 2024" in the table."""
    day = f"{moment:%a} {moment.day} {moment:%b %Y}"
    if metric in CYCLE_METRICS:
        return f"{moment.day} {moment:%b %Y}" if short else f"Cycle from {day}"
    if period == HOUR:
        return f"{moment.day} {moment:%b %H:00}" if short else f"{day}, {moment:%H:00}"
    if period == MONTH:
        return f"{moment:%b %Y}" if short else f"{moment:%B %Y}"
    if period == WEEK:
        return f"{moment.day} {moment:%b}" if short else f"Week from {day}"
    return f"{moment.day} {moment:%b}" if short else day


def _unit(explored: Explored, operator: Operator) -> str:
    """What the answer's numbers count ("" for usage of every meter type, added up)."""
    choices = explored.form.cleaned_data
    metric = choices["metric"]
    if metric == EVENTS:
        return "events"
    if metric in MONEY_METRICS:
        return "" if choices["currency"] == INVOICE else operator.base_currency
    for meter_type in explored.meter_types:
        if choices["meter_type"] in (str(meter_type.pk), meter_type.name):
            return meter_type.unit
    return ""


def _series_name(series: Series, metric_label: str) -> str:
    if series.group is None:
        return metric_label
    return series.group[1] or "(none)"


def answer_presented(explored: Explored, operator: Operator) -> dict:
    """The chart's data, the table's rows and what to say about them. The largest
    SERIES_SHOWN series (by their values' size) and the latest ROWS_SHOWN buckets."""
    result = explored.result
    choices = explored.form.cleaned_data
    metric, period = choices["metric"], choices["period"] or DAY
    unit = _unit(explored, operator)
    largest = sorted(
        range(len(result.series)),
        key=lambda index: -sum(abs(value) for value in result.series[index].values),
    )[:SERIES_SHOWN]
    shown = [result.series[index] for index in sorted(largest)]  # in the answer's order
    metric_label = dict(METRIC_CHOICES).get(metric, metric)
    names = [_series_name(series, metric_label) for series in shown]
    first_row = max(0, len(result.timestamps) - ROWS_SHOWN)
    rows = [
        (
            _bucket_label(moment, metric, period, short=False),
            moment,
            [(name, series.values[index]) for name, series in zip(names, shown, strict=True)],
        )
        for index, moment in enumerate(result.timestamps)
        if index >= first_row
    ]
    chart = {
        "labels": [
            _bucket_label(moment, metric, period, short=True) for moment in result.timestamps
        ],
        "datasets": [
            {
                "label": name,
                "data": series.values,
                "backgroundColor": COLOURS[index % len(COLOURS)],
                "borderColor": COLOURS[index % len(COLOURS)],
            }
            for index, (name, series) in enumerate(zip(names, shown, strict=True))
        ],
    }
    return {
        "metric_label": metric_label,
        "unit": unit,
        "types_added": metric in (USAGE, USAGE_FOR_CYCLE) and not choices["meter_type"],
        "chart_data": dumps_text(chart),
        "chart_type": "bar" if len(shown) == 1 else "line",
        "series_names": names,
        "series_count": len(result.series),
        "rows": rows,
        "rows_hidden": first_row,
        "anything": any(value != 0 for series in result.series for value in series.values),
        "api_body": dumps_pretty(explored.request.body),
    }


# -- Pages ---------------------------------------------------------------------------------


def _page(request, explored: Explored):
    context = {
        "title": "Usage explorer",
        "form": explored.form,
        "answered": explored.result is not None,
        "csv_query": urlencode(explored.query),
    }
    if explored.result is not None:
        context.update(answer_presented(explored, request.operator))
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/usage.html",
        context,
        status=200 if explored.result is not None else 400,
    )


@operator_page
@require_safe
def usage_explorer(request):
    """`/dashboard/usage/`: a metric as a chart and a table (see the module docstring)."""
    return _page(request, usage_explore(request))


@operator_page
@require_safe
def usage_csv(request):
    """`/dashboard/usage/csv/`: the explorer's answer as the API's CSV (a download); a
    question that cannot be answered shows the page with what is wrong."""
    explored = usage_explore(request)
    if explored.result is None:
        return _page(request, explored)
    table = _csv_table([explored.result])
    choices = explored.form.cleaned_data
    name = f"{choices['metric']}-{choices['start']:%Y-%m-%d}-{choices['end']:%Y-%m-%d}"
    response = HttpResponse(
        CSVRenderer().render(table), content_type=f"{CSVRenderer.media_type}; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{name.lower()}.csv"'
    return response
