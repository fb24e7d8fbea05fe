"""The platform dashboard in a real browser, against the running server: staff suspend an
operator and its token is refused, then reactivate it; download the billing report's
CSV; and every platform page fits a phone's 390 px without scrolling sideways."""

from __future__ import annotations

import datetime

import pytest
import requests
from django.contrib.auth.models import Permission
from django.utils import timezone

from tenants.services import application_access_create, operator_create, platform_key_create
from tests.e2e.dashboard import (
    DESKTOP,
    PHONE,
    assert_fits,
    assert_no_horizontal_scroll,
    dashboard_login,
)
from tests.reporting.platform_helpers import catalogue_seed, fold
from tests.reporting.web.scene import PASSWORD, events_add, member, operator_scene

METER_TYPES = "/usage-metering/v1/meter-types"
PLATFORM_PAGES = ["/platform/operators/", "/platform/connectors/", "/platform/billing/"]


def staff_member(username: str):
    """Staff with the permissions to change operators and the platform settings."""
    user = member(username, staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="tenants",
            codename__in=["change_operator", "change_platformsettings"],
        )
    )
    return user


def token_for(base_url: str, client_id: str, client_secret: str) -> str:
    response = requests.post(
        f"{base_url}/oauth/token",
        json={
            "client_id": client_id,
            "client_secret": client_secret,
            "grant_type": "client_credentials",
            "audience": base_url,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def meter_types_status(base_url: str, token: str) -> int:
    response = requests.get(
        f"{base_url}{METER_TYPES}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return response.status_code


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_staff_suspend_an_operator_whose_token_then_gets_403_and_reactivate_it(
    live_server, settings, page
):
    settings.TALLY["API_AUDIENCE"] = live_server.url
    base = live_server.url
    catalogue_seed()
    umbrella = operator_create(name="Umbrella")
    operator_create(name="Initech")
    issued = application_access_create(operator=umbrella, name="Umbrella billing")
    staff_member("alice")

    # 1. The operator's client gets a token from the running server, and it works.
    token = token_for(base, issued.client_id, issued.client_secret)
    assert meter_types_status(base, token) == 200

    # 2. Staff log in and open Operators from the navigation.
    page.set_viewport_size(DESKTOP)
    dashboard_login(page, base, "alice", PASSWORD)
    page.goto(f"{base}/platform/")
    with page.expect_navigation():
        page.click("#nav-entries a:has-text('Operators')")
    assert page.title().strip() == "Operators · Tally"
    row = page.locator(f"#operator-{umbrella.pk}")
    assert "Active" in row.inner_text()

    # 3. Suspend: the page says so, and the token is refused.
    with page.expect_navigation():
        row.get_by_role("button", name="Suspend Umbrella").click()
    assert "Umbrella is suspended" in page.inner_text("main")
    assert "Suspended" in page.locator(f"#operator-{umbrella.pk}").inner_text()
    assert meter_types_status(base, token) == 403
    assert_no_horizontal_scroll(page)

    # 4. Reactivate: the same token works again.
    with page.expect_navigation():
        page.locator(f"#operator-{umbrella.pk}").get_by_role(
            "button", name="Reactivate Umbrella"
        ).click()
    assert "Umbrella is active" in page.inner_text("main")
    assert meter_types_status(base, token) == 200

    # 5. On a phone the operators are cards, with the same buttons, and nothing
    # scrolls sideways.
    page.set_viewport_size(PHONE)
    page.reload()
    assert_no_horizontal_scroll(page)
    assert page.is_visible(f"#operator-{umbrella.pk} >> text=Suspend")
    assert page.is_visible("#operators-sort")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_staff_download_the_billing_report_csv_for_a_range(live_server, page, tmp_path):
    base = live_server.url
    catalogue_seed()
    now = timezone.now()
    acme = operator_scene("Acme")
    events_add(acme, [now, now, now - datetime.timedelta(days=2)])
    events_add(operator_scene("Globex"), [now])
    fold()
    staff_member("alice")
    start = (now - datetime.timedelta(days=6)).date().isoformat()
    end = now.date().isoformat()

    page.set_viewport_size(DESKTOP)
    dashboard_login(page, base, "alice", PASSWORD)
    page.goto(f"{base}/platform/billing/")
    page.fill("#id_start", start)
    page.fill("#id_end", end)
    with page.expect_navigation():
        page.click("#billing-range button[type=submit]")
    assert f"start={start}" in page.url and f"end={end}" in page.url
    assert "Acme" in page.inner_text(f"#billing-{acme.operator.pk}")

    with page.expect_download() as started:
        page.click("#download-csv")
    download = started.value
    assert download.suggested_filename == f"usage-report-{start}-{end}.csv"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)

    # The file is the platform API's CSV for the same range, byte for byte.
    key = platform_key_create(name="Finance").raw_key
    api = requests.get(
        f"{base}/platform-api/usage/report",
        params={"start": start, "end": end},
        headers={"Authorization": f"Bearer {key}", "Accept": "text/csv"},
        timeout=10,
    )
    assert api.status_code == 200, api.text
    assert saved.read_bytes() == api.content
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("start,end,operatorId,operatorName,")
    assert [line.split(",")[3] for line in lines[1:]] == ["Acme", "Globex", ""]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_every_platform_page_fits_a_phone(live_server, page):
    base = live_server.url
    catalogue_seed()
    scene = operator_scene("A company with a rather long operator name that must not overflow")
    events_add(scene, [timezone.now()] * 3)
    operator_create(name="Initech")
    fold()
    staff_member("wide")

    dashboard_login(page, base, "wide", PASSWORD)
    for path in [*PLATFORM_PAGES, "/platform/settings/"]:
        assert_fits(page, f"{base}{path}")
        assert page.title().strip(), path

    # The adoption chart is drawn by the Chart.js served from the project's static files.
    page.goto(f"{base}/platform/connectors/")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('adoption-chart'))"
    )
    script = page.locator("script[src*='chart.js']").first.get_attribute("src")
    assert script.startswith("/static/")
    # The settings form with its errors fits too.
    page.set_viewport_size(PHONE)
    page.goto(f"{base}/platform/settings/")
    page.fill("#id_contact_email", "not-an-address")
    page.fill("#id_event_weight", "-1")
    with page.expect_navigation():
        page.click("#settings-form button[type=submit]")
    assert "Enter a valid email address." in page.inner_text("#settings-form")
    assert_no_horizontal_scroll(page)
