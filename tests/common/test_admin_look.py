"""The admin's one look: every page on the theme's classes, Tally's name, and every model
in exactly one sidebar group, ordered by what staff do, with library internals under
System, on the sidebar and on the front page alike."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from unfold.admin import ModelAdmin as ThemeModelAdmin
from unfold.admin import StackedInline as ThemeStackedInline
from unfold.admin import TabularInline as ThemeTabularInline

GROUPS = ["Operators & access", "Metering", "Collection", "Streams", "Reporting", "System"]
SYSTEM_ONLY = ("oauth2_provider", "django_celery_beat")


def navigation() -> list[dict]:
    return settings.UNFOLD["SIDEBAR"]["navigation"]


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def test_the_sidebar_groups_are_what_staff_do_in_order():
    assert [group["title"] for group in navigation()] == GROUPS


def test_every_model_with_an_admin_page_is_in_exactly_one_sidebar_group():
    listed = Counter(str(item["link"]) for group in navigation() for item in group["items"])
    pages = {changelist(model): model._meta.label for model in admin.site._registry}

    missing = sorted(label for url, label in pages.items() if listed[url] == 0)
    twice = sorted(label for url, label in pages.items() if listed[url] > 1)
    assert missing == []
    assert twice == []
    admin_links = {url for url in listed if url.startswith("/admin/")}
    assert admin_links <= set(pages), "a sidebar link to a page that does not exist"


def test_library_internals_sit_under_system():
    for group in navigation():
        internals = [
            str(item["link"])
            for item in group["items"]
            if any(f"/admin/{app}/" in str(item["link"]) for app in SYSTEM_ONLY)
        ]
        if group["title"] == "System":
            assert len(internals) == 10  # five OAuth models, five Beat ones
        else:
            assert internals == [], group["title"]


def test_every_admin_page_and_inline_is_built_on_the_theme():
    for model, model_admin in admin.site._registry.items():
        assert isinstance(model_admin, ThemeModelAdmin), model._meta.label
        for inline in model_admin.inlines:
            assert issubclass(inline, ThemeTabularInline | ThemeStackedInline), inline


@pytest.fixture
def staff(staff_user) -> Client:
    browser = Client()
    browser.force_login(staff_user)
    return browser


def test_the_front_page_lists_the_groups_with_internals_last(staff, db):
    page = staff.get("/admin/").content.decode()

    sections = re.findall(r'<section class="admin-group[^"]*" data-group="([^"]+)"', page)
    assert [title.replace("&amp;", "&") for title in sections] == GROUPS
    system = page.split('data-group="System"')[1]
    before_system = page.split('data-group="System"')[0].split('id="admin-groups"')[1]
    for app in SYSTEM_ONLY:
        assert f"/admin/{app}/" in system
        assert f"/admin/{app}/" not in before_system
    assert "<title>" in page and "| Tally</title>" in page


def test_staff_see_only_the_pages_they_may_open(db):
    clerk = User.objects.create_user(username="clerk", password="x", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_meter"))
    browser = Client()
    browser.force_login(clerk)

    page = browser.get("/admin/").content.decode()

    sidebar = page.split('id="nav-sidebar-apps"')[1]
    assert "/admin/metering/meter/" in sidebar
    assert "/admin/tenants/operator/" not in sidebar
    assert "/admin/oauth2_provider/accesstoken/" not in sidebar
