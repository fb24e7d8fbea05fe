"""Fixtures for browser tests.

pytest-playwright's fixtures (`page`, `context`, `browser`, …) run Debian's Chromium
headless (`browser_type_launch_args`), and start and stop with each test instead of
once per session: while Playwright runs, its event loop is registered on this thread,
so Django refuses synchronous database calls (unless told otherwise, as here) and
`asyncio.run` fails. Ending it with each browser test keeps every other test of the
run free of it.

A test that fails leaves a screenshot of each of its pages in tests/e2e/screenshots/
(git-ignored), named after the test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, admin_login, launch, require_chromium

STAFF = ("alice", "alice-password-123")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test, for fixtures to see whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(node) -> bool:
    return any(
        getattr(node, f"report_{when}", None) is not None and getattr(node, f"report_{when}").failed
        for when in ("setup", "call")
    )


def screenshot_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid).strip("-")[:150]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        "headless": True,
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture
def playwright(monkeypatch):
    require_chromium()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as started:
        yield started


@pytest.fixture
def browser_type(playwright, browser_name):
    return getattr(playwright, browser_name)


@pytest.fixture
def launch_browser(browser_type_launch_args, browser_type):
    def launch_one(**options):
        return browser_type.launch(**{**browser_type_launch_args, **options})

    return launch_one


@pytest.fixture
def browser(launch_browser):
    started = launch_browser()
    yield started
    started.close()


@pytest.fixture
def browser_context_args():
    return {}


@pytest.fixture
def context(new_context, request):
    """pytest-playwright's context, with screenshots of its pages when the test fails."""
    opened = new_context()
    yield opened
    if _failed(request.node):
        SCREENSHOTS.mkdir(exist_ok=True)
        name = screenshot_name(request.node.nodeid)
        for index, page in enumerate(opened.pages):
            suffix = f"-{index}" if index else ""
            page.screenshot(path=str(SCREENSHOTS / f"{name}{suffix}.png"), full_page=True)


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
