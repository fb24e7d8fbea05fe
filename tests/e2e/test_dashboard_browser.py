"""The operator dashboard in a real browser: log in, read the overview (its chart drawn
by Chart.js from the project's own static files), switch operator, log out; and every
page so far fits a phone's 390 px without scrolling sideways."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from tenants.models import OperatorMembership
from tests.e2e.dashboard import (
    DESKTOP,
    PHONE,
    assert_fits,
    assert_no_horizontal_scroll,
    dashboard_login,
)
from tests.reporting.web.scene import PASSWORD, events_add, member, meters_fill, operator_scene

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER

CHART_TOTAL = (
    "() => Chart.getChart(document.getElementById('ingestion-chart'))"
    ".data.datasets[0].data.reduce((sum, count) => sum + count, 0)"
)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_operator_user_logs_in_reads_the_overview_switches_and_logs_out(live_server, page):
    now = timezone.now()
    acme = operator_scene("Acme")
    events_add(acme, [now] * 4 + [now - datetime.timedelta(days=2)] * 3, failing=1)
    meters_fill(acme, [900])
    globex = operator_scene("Globex")
    events_add(globex, [now] * 2)
    meters_fill(globex, [950])
    member("both", (acme.operator, ADMIN), (globex.operator, VIEWER))

    # 1. Log in at /login/: the first operator by name, Acme, is shown.
    page.set_viewport_size(DESKTOP)
    dashboard_login(page, live_server.url, "both", PASSWORD)
    assert page.url == f"{live_server.url}/dashboard/"
    assert page.title().strip() == "Overview · Acme · Tally"
    assert page.inner_text("#current-operator") == "Acme"

    # 2. The chart is drawn, with Acme's 7 records of the last 7 days.
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('ingestion-chart'))"
    )
    assert page.evaluate(CHART_TOTAL) == 7
    assert page.inner_text("#records-failed .tally-figure") == "1"
    assert acme.customer(0) in page.inner_text("#near-capacity-list")
    assert "Almost full reached" in page.inner_text("#alert-list")
    content = page.content()
    assert globex.customer(0) not in content and "globex.example" not in content
    assert_no_horizontal_scroll(page)

    # 3. On a phone nothing scrolls sideways; the menu opens the navigation.
    page.set_viewport_size(PHONE)
    page.reload()
    assert_no_horizontal_scroll(page)
    assert not page.is_visible("#nav-entries")
    page.click("button[aria-label='Open the menu']")
    assert page.is_visible("#nav-entries")
    page.click("button[aria-label='Close the menu']")

    # 4. Switch to Globex from the header (a viewer there: switching is still allowed).
    page.click("#operator-switcher")
    with page.expect_navigation():
        page.click("button[name=operator]:has-text('Globex')")
    assert page.url == f"{live_server.url}/dashboard/"
    assert "You are now looking at Globex." in page.inner_text("main")
    assert page.inner_text("#current-operator") == "Globex"
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('ingestion-chart'))"
    )
    assert page.evaluate(CHART_TOTAL) == 2
    assert globex.customer(0) in page.inner_text("#near-capacity-list")
    assert acme.customer(0) not in page.content()
    assert_no_horizontal_scroll(page)

    # 5. Log out from the user menu; the dashboard then asks to log in again.
    page.click("#user-menu")
    with page.expect_navigation():
        page.click("button:has-text('Log out')")
    assert page.url == f"{live_server.url}/login/"
    assert "You are logged out." in page.inner_text("main")
    page.goto(f"{live_server.url}/dashboard/")
    assert page.url == f"{live_server.url}/login/?next=/dashboard/"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_every_page_so_far_fits_a_phone(live_server, page):
    scene = operator_scene("A company with a rather long operator name that must not overflow")
    events_add(scene, [timezone.now()] * 3)
    meters_fill(scene, [990, 1500])
    other = operator_scene("Second operator")
    member("wide", (scene.operator, ADMIN), (other.operator, VIEWER), staff=True)
    base = live_server.url

    for path in ("/login/", "/account/password/reset/"):
        assert_fits(page, f"{base}{path}")

    dashboard_login(page, base, "wide", PASSWORD)
    for path in ("/dashboard/", "/platform/", "/account/password/"):
        assert_fits(page, f"{base}{path}")
        assert page.title().strip(), path

    # An open menu stays within the screen too.
    page.set_viewport_size(PHONE)
    page.goto(f"{base}/dashboard/")
    page.click("#operator-switcher")
    assert_no_horizontal_scroll(page)
    page.click("#user-menu")
    assert_no_horizontal_scroll(page)
