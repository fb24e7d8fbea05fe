"""Reads for the dashboards' pages. Counts come from the rollups (through the same code
as `POST /metrics`), never from a scan of records; every list is a fixed number of
queries whatever its length.

Time is UTC throughout: "today" is the UTC day, and the operator's "period" on the
overview is the current calendar month in UTC. Events are counted by the hour of their
event time, as the EVENTS metric counts them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import DecimalField, ExpressionWrapper, F
from django.db.models.functions import Coalesce

from metering.models import VALUE_DIGITS, VALUE_PLACES, Alert, Meter, MeterType
from reporting.metrics import EVENT_STATUS, EVENT_STATUSES, EVENTS, HOUR, metric_query_check
from reporting.selectors import metrics_answer
from tenants.models import Operator

# A meter is near capacity from this share of its capacity on.
NEAR_CAPACITY = Decimal("0.8")
CHART_HOURS = 7 * 24


@dataclass(frozen=True)
class EventFigures:
    today: int
    period: int
    failed_period: int
    period_start: datetime.datetime
    hourly: list[tuple[datetime.datetime, int]]  # the last CHART_HOURS hours, oldest first


def overview_events(*, operator: Operator, now: datetime.datetime) -> EventFigures:
    """Records by event hour, every status: today, this month and the last 7 days by
    hour, and the records of this month that failed processing (and were not re-queued).

    One EVENTS query by hour, grouped by status, over the longer of the month and the
    chart's week: exactly what `POST /metrics` would answer for it.
    """
    hour = now.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)
    end = hour + datetime.timedelta(hours=1)
    day_start = hour.replace(hour=0)
    period_start = day_start.replace(day=1)
    chart_start = end - datetime.timedelta(hours=CHART_HOURS)
    query = metric_query_check(
        {
            "id": "overview",
            "name": EVENTS,
            "aggregation_period": HOUR,
            "filters": [{"field_name": EVENT_STATUS, "field_values": list(EVENT_STATUSES)}],
            "group_by": EVENT_STATUS,
        }
    )
    [answer] = metrics_answer(
        operator=operator, start=min(period_start, chart_start), end=end, queries=[query]
    )
    totals = [0] * len(answer.timestamps)
    failed = [0] * len(answer.timestamps)
    for series in answer.series:
        for index, value in enumerate(series.values):
            totals[index] += int(value)
            if series.group == (EVENT_STATUS, "FAILED"):
                failed[index] += int(value)
    by_hour = list(zip(answer.timestamps, totals, failed, strict=True))
    return EventFigures(
        today=sum(total for moment, total, _ in by_hour if moment >= day_start),
        period=sum(total for moment, total, _ in by_hour if moment >= period_start),
        failed_period=sum(count for moment, _, count in by_hour if moment >= period_start),
        period_start=period_start,
        hourly=[(moment, total) for moment, total, _ in by_hour if moment >= chart_start],
    )


_DECIMAL = DecimalField(max_digits=VALUE_DIGITS, decimal_places=VALUE_PLACES)


def meters_near_capacity(*, operator: Operator, limit: int = 10) -> tuple[int, list[Meter]]:
    """How many meters have reached NEAR_CAPACITY of their capacity (the meter's, else
    its type's), and the fullest `limit` of them (with `capacity_used`, the share, and
    `meter_type`). Min meters are left out: for them a capacity is a floor."""
    meters = (
        Meter.objects.filter(operator=operator)
        .exclude(meter_type__aggregation=MeterType.Aggregation.MIN)
        .annotate(limit_value=Coalesce("capacity", "meter_type__capacity"))
        .filter(limit_value__gt=0, value__gte=F("limit_value") * NEAR_CAPACITY)
    )
    fullest = (
        meters.annotate(
            capacity_used=ExpressionWrapper(F("value") / F("limit_value"), output_field=_DECIMAL)
        )
        .select_related("meter_type")
        .order_by("-capacity_used", "user_id", "id")[:limit]
    )
    return meters.count(), list(fullest)


def alerts_recent(*, operator: Operator, limit: int = 8) -> list[Alert]:
    """The operator's latest threshold alerts, with their meters and meter types."""
    return list(
        Alert.objects.filter(operator=operator)
        .select_related("meter__meter_type")
        .order_by("-crossed_at", "-id")[:limit]
    )
