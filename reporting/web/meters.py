"""The meters pages: every meter of the operator with its value against its capacity
(`/dashboard/meters/`), and one meter's period history, thresholds and alerts
(`/dashboard/meters/<id>/`).

Read only: meters change through usage, resets and the API, never from here. A meter's
capacity and thresholds are its own when set, else its type's (`Meter.effective_*`);
thresholds are read with `metering.thresholds`, the one reader of their stored form.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django import forms
from django.db.models import QuerySet
from django.views.decorators.http import require_safe
from unfold.widgets import UnfoldAdminSelectWidget, UnfoldAdminTextInputWidget

from common.admin import LargeTablePaginator
from common.json import dumps_text
from metering.models import Alert, Meter, MeterPeriod, MeterType
from metering.thresholds import PERCENTAGE, Threshold, thresholds_from_stored
from reporting.web.access import operator_object_or_404, operator_page
from reporting.web.selectors import NEAR_CAPACITY
from reporting.web.shell import DASHBOARD, shell_render
from tenants.models import Operator

PAGE_SIZE = 25
# Closed periods drawn and listed on a meter's page (the newest ones); the API's
# `GET /usage-metering/v1/meters/{id}/periods` pages through all of them.
HISTORY_PERIODS = 24
ALERTS_SHOWN = 50


# -- Reads ---------------------------------------------------------------------------------


def meters_listed(
    *, operator: Operator, meter_type: MeterType | None = None, user_id: str = ""
) -> QuerySet[Meter]:
    """The operator's meters by customer, then meter type, with their types loaded; only
    those of `meter_type` and of customers whose id contains `user_id`, when given."""
    meters = Meter.objects.filter(operator=operator).select_related("meter_type")
    if meter_type is not None:
        meters = meters.filter(meter_type=meter_type)
    if user_id:
        meters = meters.filter(user_id__icontains=user_id)
    return meters.order_by("user_id", "meter_type__name", "meter_key", "id")


@dataclass(frozen=True)
class MeterHistory:
    """A meter's newest closed periods (newest first), how many it has in all, and its
    alerts (newest first)."""

    periods: list[MeterPeriod]
    period_count: int
    alerts: list[Alert]


def meter_history(*, meter: Meter) -> MeterHistory:
    periods = MeterPeriod.objects.filter(meter=meter)
    return MeterHistory(
        periods=list(periods.order_by("-period_start")[:HISTORY_PERIODS]),
        period_count=periods.count(),
        alerts=list(meter.alerts.order_by("-crossed_at", "-id")[:ALERTS_SHOWN]),
    )


# -- A meter's value against its capacity -------------------------------------------------


@dataclass(frozen=True)
class ThresholdMark:
    """One effective threshold of a meter: where it is reached (`level`, None for a
    percentage of a capacity the meter does not have) and where it sits on the bar."""

    threshold: Threshold
    level: Decimal | None
    share: Decimal | None  # level / capacity, for its place on the bar

    @property
    def title(self) -> str:
        return self.threshold.name or "Threshold"

    @property
    def is_percentage(self) -> bool:
        return self.threshold.kind == PERCENTAGE


@dataclass(frozen=True)
class Gauge:
    """A meter's value against its capacity (the meter's, else its type's)."""

    capacity: Decimal | None
    share: Decimal | None  # value / capacity; None without a capacity
    marks: list[ThresholdMark]
    # A Min meter's capacity is a floor: running low is what matters, not filling up.
    is_floor: bool

    @property
    def tone(self) -> str:
        """How worrying the value is: "full", "near" or "normal"."""
        if self.share is None or self.is_floor:
            return "normal"
        if self.share >= 1:
            return "full"
        return "near" if self.share >= NEAR_CAPACITY else "normal"

    @property
    def placed_marks(self) -> list[ThresholdMark]:
        return [mark for mark in self.marks if mark.share is not None]


def meter_gauge(meter: Meter) -> Gauge:
    """The gauge of a meter whose `meter_type` is loaded (no query)."""
    capacity = meter.effective_capacity
    share = meter.value / capacity if capacity else None
    marks = []
    for threshold in thresholds_from_stored(meter.effective_thresholds):
        level = threshold.level(capacity)
        marks.append(
            ThresholdMark(
                threshold=threshold,
                level=level,
                share=level / capacity if capacity and level is not None else None,
            )
        )
    return Gauge(
        capacity=capacity,
        share=share,
        marks=marks,
        is_floor=meter.meter_type.aggregation == MeterType.Aggregation.MIN,
    )


# -- Pages ---------------------------------------------------------------------------------


class MeterFilterForm(forms.Form):
    """The meters list's filters (a GET form): the operator's meter types only."""

    meter_type = forms.ModelChoiceField(
        queryset=MeterType.objects.none(),
        required=False,
        empty_label="All meter types",
        label="Meter type",
        widget=UnfoldAdminSelectWidget,
    )
    user_id = forms.CharField(
        required=False,
        max_length=320,
        label="Customer (user id)",
        help_text="All or part of the id, as your records send it.",
        widget=UnfoldAdminTextInputWidget(attrs={"placeholder": "carol@example.com"}),
    )

    def __init__(self, *args, operator: Operator, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["meter_type"].queryset = MeterType.objects.filter(operator=operator).order_by(
            "name"
        )


@operator_page
@require_safe
def meter_list(request):
    """`/dashboard/meters/`: the operator's meters, by customer, a page at a time."""
    form = MeterFilterForm(request.GET or None, operator=request.operator)
    filtered = form.is_bound and form.is_valid()
    if form.is_bound and not filtered:
        # Bad filters list nothing rather than everything; the form says what is wrong.
        meters = Meter.objects.none()
    else:
        choices = form.cleaned_data if filtered else {}
        meters = meters_listed(
            operator=request.operator,
            meter_type=choices.get("meter_type"),
            user_id=choices.get("user_id", ""),
        )
    page = LargeTablePaginator(meters, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [(meter, meter_gauge(meter)) for meter in page.object_list]
    # The other pages keep the filters.
    kept = request.GET.copy()
    kept.pop("page", None)
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/meters.html",
        {
            "title": "Meters",
            "form": form,
            "filtering": bool(filtered and any(form.cleaned_data.values())),
            "page": page,
            "rows": rows,
            "filter_query": kept.urlencode(),
        },
        status=400 if form.errors else 200,
    )


def _period_label(start: datetime.datetime, all_at_midnight: bool) -> str:
    """A period on the chart's axis by its start: "3 Jul 2024", or "3 Jul 14:00" for
    periods shorter than a day."""
    return f"{start.day} {start:%b %Y}" if all_at_midnight else f"{start.day} {start:%b %H:%M}"


@operator_page
@require_safe
def meter_detail(request, pk):
    """`/dashboard/meters/<id>/`: a meter's value, period history (chart and table),
    thresholds and alerts. Another operator's meter is a 404."""
    meter = operator_object_or_404(
        request, Meter.objects.select_related("meter_type", "customer"), pk=pk
    )
    history = meter_history(meter=meter)
    gauge = meter_gauge(meter)
    oldest_first = list(reversed(history.periods))
    # Periods that end at midnight UTC are days (or months): named by their day. (A
    # meter's first period starts when the meter was created, so starts do not tell.)
    ends = [period.period_end for period in oldest_first] + [meter.period_end]
    at_midnight = all(moment.hour == 0 and moment.minute == 0 for moment in ends)
    chart = {
        "labels": [_period_label(period.period_start, at_midnight) for period in oldest_first]
        + ["Current period"],
        "datasets": [
            {
                "label": meter.meter_type.unit or "Value",
                "data": [period.value for period in oldest_first] + [meter.value],
                # The current period is still counting: drawn lighter.
                "backgroundColor": ["var(--color-primary-600)"] * len(oldest_first)
                + ["var(--color-primary-300)"],
                "borderColor": "var(--color-primary-600)",
            }
        ],
    }
    fired_now = {
        alert.threshold_key for alert in history.alerts if alert.period_start == meter.period_start
    }
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/meters_detail.html",
        {
            "title": f"{meter.user_id} · {meter.meter_type.name}",
            "meter": meter,
            "gauge": gauge,
            "history": history,
            "alerts_shown": ALERTS_SHOWN,
            "chart_data": dumps_text(chart),
            # Each threshold, and whether it fired in the current period.
            "thresholds": [(mark, mark.threshold.key in fired_now) for mark in gauge.marks],
            "thresholds_own": meter.thresholds is not None,
        },
    )
