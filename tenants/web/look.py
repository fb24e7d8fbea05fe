"""The admin's look for pages outside the admin (sign-in, dashboards)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest


def look_context(request: HttpRequest) -> dict:
    """Unfold's colours, theme, title and icons as `settings.UNFOLD` configures them, so
    every browser page follows a change there.

    Read through the admin site's own readers (the version is pinned in pyproject):
    they resolve callables and colour notations exactly as the admin does. The whole
    admin context is not used: it builds the admin's sidebar, whose badges may query.
    """
    site = admin.site
    return {
        "site_title": site._get_config("SITE_TITLE", request) or "Tally",
        "site_symbol": site._get_config("SITE_SYMBOL", request),
        "site_favicons": site._get_favicons("SITE_FAVICONS", request),
        "colors": site._get_colors("COLORS", request),
        "border_radius": site._get_config("BORDER_RADIUS", request),
        "theme": site._get_config("THEME", request),
        "styles": site._get_list("STYLES", request),
        "scripts": site._get_list("SCRIPTS", request),
    }
