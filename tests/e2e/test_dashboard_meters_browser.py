"""The meters pages in a real browser: an operator's people see their own meters and
none of another operator's (whose meter's address is a 404), filter them, and open a
meter's period history, drawn by Chart.js from the project's own static files; every
meters page fits a phone's 390 px without scrolling sideways."""

from __future__ import annotations

import pytest

from tenants.models import OperatorMembership
from tests.e2e.dashboard import DESKTOP, assert_fits, assert_no_horizontal_scroll, dashboard_login
from tests.reporting.web.scene import PASSWORD, member, meters_fill, operator_scene
from tests.reporting.web.test_meters import history_add

VIEWER = OperatorMembership.Role.VIEWER

CHART_VALUES = (
    "() => Chart.getChart(document.getElementById('period-chart')).data.datasets[0].data"
    ".map(Number)"
)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_operator_user_sees_only_their_meters_and_opens_a_meters_history(live_server, page):
    acme = operator_scene("Acme")
    meters_fill(acme, [900, 500, 1200])
    dana = history_add(acme, "dana@acme.example", [300, 850, 400, 120])
    globex = operator_scene("Globex")
    meters_fill(globex, [950])
    member("bob", (acme.operator, VIEWER))
    base = live_server.url

    # 1. Log in and open Meters from the navigation: Acme's four meters, no Globex one.
    page.set_viewport_size(DESKTOP)
    dashboard_login(page, base, "bob", PASSWORD)
    with page.expect_navigation():
        page.click("#nav-entries a:has-text('Meters')")
    assert page.url == f"{base}/dashboard/meters/"
    assert page.title().strip() == "Meters · Acme · Tally"
    rows = page.locator("#meter-rows tr")
    assert rows.count() == 4
    listed = page.inner_text("#meter-rows")
    for user_id in [acme.customer(0), acme.customer(1), acme.customer(2), "dana@acme.example"]:
        assert user_id in listed
    assert "1,200 / 1,000 calls" in listed
    assert globex.customer(0) not in page.content()
    # The bar of the 80% threshold is drawn where it belongs.
    mark = page.locator("#meter-rows tr").first.locator(".tally-gauge-mark")
    bar = page.locator("#meter-rows tr").first.locator(".tally-gauge")
    mark_box, bar_box = mark.bounding_box(), bar.bounding_box()
    middle = mark_box["x"] + mark_box["width"] / 2
    assert abs(middle - (bar_box["x"] + 0.8 * bar_box["width"])) <= 1.5
    assert_no_horizontal_scroll(page)

    # 2. Globex's meter, by its address: the dashboard's own not-found page.
    response = page.goto(f"{base}/dashboard/meters/{globex.meters[0].pk}/")
    assert response.status == 404
    assert page.is_visible("#not-found")
    assert globex.customer(0) not in page.content()

    # 3. Filter by customer, then open the meter: its history is drawn.
    page.goto(f"{base}/dashboard/meters/")
    page.select_option("#id_meter_type", label="API calls")
    page.fill("#id_user_id", "dana")
    with page.expect_navigation():
        page.click("#meter-filters button[type=submit]")
    assert page.locator("#meter-rows tr").count() == 1
    with page.expect_navigation():
        page.click("#meter-rows a:has-text('dana@acme.example')")
    assert page.url == f"{base}/dashboard/meters/{dana.pk}/"
    assert page.title().strip() == "dana@acme.example · API calls · Acme · Tally"
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('period-chart'))"
    )
    assert page.evaluate(CHART_VALUES) == [300, 850, 400, 120]
    canvas = page.locator("#period-chart").bounding_box()
    assert canvas["width"] > 300 and canvas["height"] > 100
    assert "reached at 850 against 800 calls" in page.inner_text("#meter-alert-list")
    assert page.get_attribute("a[aria-current=page]", "href") == "/dashboard/meters/"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_meters_pages_fit_a_phone(live_server, page):
    scene = operator_scene("A company with a rather long operator name that must not overflow")
    meters_fill(scene, [990, 1500])
    long_id = "a-customer-with-a-very-long-identifier-that-has-no-spaces@example.com"
    meter = history_add(scene, long_id, [1200, 30, 800])
    member("wide", (scene.operator, VIEWER))
    base = live_server.url

    dashboard_login(page, base, "wide", PASSWORD)
    for path in (
        "/dashboard/meters/",
        "/dashboard/meters/?user_id=nobody",
        f"/dashboard/meters/{meter.pk}/",
    ):
        assert_fits(page, f"{base}{path}")
        assert page.title().strip(), path
