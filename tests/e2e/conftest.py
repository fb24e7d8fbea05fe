"""Fixtures for browser tests."""

from __future__ import annotations

import pytest

from tests.e2e.browser import admin_login, launch, require_chromium

STAFF = ("alice", "alice-password-123")


@pytest.fixture
def staff_page(live_server, monkeypatch, django_user_model):
    """Opens a page in headless Chromium, logged in to the admin as a superuser:
    `staff_page(viewport={...})`. The browser closes after the test."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    username, password = STAFF
    django_user_model.objects.create_superuser(
        username=username, email=f"{username}@example.com", password=password
    )
    with sync_playwright() as playwright:
        browser = launch(playwright)

        def open_page(**options):
            page = browser.new_page(**options)
            admin_login(page, live_server.url, username, password)
            return page

        try:
            yield open_page
        finally:
            browser.close()
