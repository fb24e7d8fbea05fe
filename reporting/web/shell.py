"""The frame around every dashboard page: the navigation, the operator switcher, the
user menu and the admin's look (templates/dashboard/shell.html).

Navigation entries name a URL, not a path: an entry whose URL name does not resolve
(its page is not built yet) is left out, so there are no placeholder pages. An entry
is active on its own page and on every page whose URL name starts with its name and a
dash: "dashboard:meters" is active on "dashboard:meters-detail".
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from tenants.models import OperatorMembership
from tenants.web.look import look_context

DASHBOARD = "dashboard"
PLATFORM = "platform"


@dataclass(frozen=True)
class NavEntry:
    title: str
    url_name: str  # namespaced and taking no arguments: "dashboard:meters"
    icon: str  # a Material Symbols name, as in the admin's sidebar


NAVIGATION: dict[str, tuple[NavEntry, ...]] = {
    DASHBOARD: (
        NavEntry("Overview", "dashboard:overview", "dashboard"),
        NavEntry("Meters", "dashboard:meters", "speed"),
        NavEntry("Usage", "dashboard:usage", "query_stats"),
        NavEntry("Collectors", "dashboard:collectors", "input"),
        NavEntry("Streams", "dashboard:streams", "account_tree"),
        NavEntry("Access", "dashboard:access", "key"),
    ),
    PLATFORM: (
        NavEntry("Overview", "platform:overview", "monitoring"),
        NavEntry("Operators", "platform:operators", "apartment"),
        NavEntry("Connectors", "platform:connectors", "hub"),
        NavEntry("Billing report", "platform:billing", "receipt_long"),
        NavEntry("Settings", "platform:settings", "settings"),
    ),
}


def nav_items(request: HttpRequest, shell: str) -> list[dict]:
    """The shell's entries whose pages exist, with their URL and whether active."""
    match = getattr(request, "resolver_match", None)
    current = match.view_name if match else ""
    items = []
    for entry in NAVIGATION[shell]:
        try:
            url = reverse(entry.url_name)
        except NoReverseMatch:
            continue
        active = current == entry.url_name or current.startswith(f"{entry.url_name}-")
        items.append({"title": entry.title, "url": url, "icon": entry.icon, "active": active})
    return items


def shell_render(
    request: HttpRequest, shell: str, template: str, context: dict, *, status: int = 200
) -> HttpResponse:
    """Render a page of `shell` (DASHBOARD or PLATFORM) inside its frame. The page's
    `context` needs a `title` (the browser tab's and the header's)."""
    membership = getattr(request, "membership", None)
    frame = {
        **look_context(request),
        "shell": shell,
        "nav": nav_items(request, shell),
        "memberships": getattr(request, "memberships", []),
        "membership": membership,
        "operator": getattr(request, "operator", None),
        # Whether to offer changes at all; the access check refuses them anyway.
        "can_change": membership is not None and membership.role == OperatorMembership.Role.ADMIN,
    }
    return render(request, template, {**frame, **context}, status=status)
