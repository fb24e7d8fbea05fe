"""The operator dashboard's overview and the operator switcher."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from reporting.web.access import operator_page
from reporting.web.selectors import alerts_recent, meters_near_capacity, overview_events
from reporting.web.shell import DASHBOARD, shell_render
from tenants.web.memberships import membership_choose


@operator_page
@require_safe
def overview(request):
    """`/dashboard/`: today's and this month's events, failures, full meters, alerts and
    the last 7 days of ingestion by hour."""
    now = timezone.now()
    events = overview_events(operator=request.operator, now=now)
    near_count, near_meters = meters_near_capacity(operator=request.operator)
    chart = {
        "labels": [moment.strftime("%d %b %H:00") for moment, _ in events.hourly],
        "datasets": [
            {
                "label": "Events",
                "data": [count for _, count in events.hourly],
                "backgroundColor": "var(--color-primary-600)",
                "borderColor": "var(--color-primary-600)",
            }
        ],
    }
    chart_total = sum(count for _, count in events.hourly)
    busiest = max(events.hourly, key=lambda item: item[1]) if chart_total else None
    return shell_render(
        request,
        DASHBOARD,
        "dashboard/overview.html",
        {
            "title": "Overview",
            "now": now,
            "events": events,
            "chart_data": json.dumps(chart),
            "chart_total": chart_total,
            "busiest": busiest,
            "near_count": near_count,
            "near_meters": near_meters,
            "alerts": alerts_recent(operator=request.operator),
        },
    )


@operator_page(viewer_may_post=True)
@require_POST
def operator_switch(request):
    """Show another of the user's operators (kept in the session). Open to viewers: it
    changes nothing but what they look at. An operator they are not a member of is a
    404, like any other operator's page."""
    chosen = membership_choose(request, request.memberships, request.POST.get("operator", ""))
    if chosen is None:
        raise Http404
    messages.success(request, f"You are now looking at {chosen.operator.name}.")
    return redirect("dashboard:overview")
