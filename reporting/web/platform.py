"""The platform dashboard (`/platform/`, staff only)."""

from __future__ import annotations

from django.views.decorators.http import require_safe

from reporting.platform import platform_summary
from reporting.web.access import staff_page
from reporting.web.shell import PLATFORM, shell_render


@staff_page
@require_safe
def overview(request):
    """`/platform/`: the platform's KPIs, all time (the platform API's summary)."""
    return shell_render(
        request,
        PLATFORM,
        "platform/overview.html",
        {"title": "Platform overview", "summary": platform_summary()},
    )
