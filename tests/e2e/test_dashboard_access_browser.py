"""The dashboard's Access pages in a real browser: an operator admin creates an
application and reads its secret once, and the secret really gets a token the API
accepts; every Access page fits a phone's 390 px without scrolling sideways."""

from __future__ import annotations

import pytest
import requests

from metering.models import Notification
from metering.notifications import notification_deliver, webhook_endpoint_set
from parameters.services import parameter_create
from tenants.models import OperatorMembership
from tests.conftest import AUDIENCE
from tests.e2e.dashboard import DESKTOP, assert_fits, assert_no_horizontal_scroll, dashboard_login
from tests.reporting.web.scene import PASSWORD, member, meters_fill, operator_scene

ADMIN = OperatorMembership.Role.ADMIN


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_operator_admin_creates_an_application_and_reads_its_secret_once(live_server, page):
    acme = operator_scene("Acme")
    member("adam", (acme.operator, ADMIN))
    base = live_server.url

    # 1. From the Access page, a new application with two scopes.
    page.set_viewport_size(DESKTOP)
    dashboard_login(page, base, "adam", PASSWORD)
    page.click("#nav-entries a:has-text('Access')")
    assert page.title().strip() == "Applications · Acme · Tally"
    page.click("a:has-text('New application')")
    page.fill("#id_name", "Billing export")
    page.check("input[value='global-parameters:read:parameters']")
    page.check("input[value='usage-metering:read:meters']")
    with page.expect_navigation():
        page.click("#application-form button[type=submit]")

    # 2. The next page shows the client id and, once, the secret.
    assert page.title().strip() == "Billing export · Acme · Tally"
    client_id = page.inner_text("#new-client-id").strip()
    secret = page.inner_text("#client-secret").strip()
    assert len(secret) > 40 and secret not in page.url
    assert page.inner_text("#client-id").strip() == client_id
    assert_no_horizontal_scroll(page)

    # 3. Gone after a reload, and after going elsewhere and coming back.
    detail_url = page.url
    page.reload()
    assert page.locator("#client-secret").count() == 0
    assert secret not in page.content()
    page.goto(f"{base}/dashboard/access/")
    assert "Billing export" in page.inner_text("#application-list")
    page.go_back()
    assert page.url == detail_url
    assert page.locator("#client-secret").count() == 0

    # 4. The secret works: a token from /oauth/token, accepted by the API for the scopes
    # chosen and refused for the others.
    answer = requests.post(
        f"{base}/oauth/token",
        json={
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    meters = requests.get(f"{base}/usage-metering/v1/meters", headers=headers, timeout=10)
    assert meters.status_code == 200, meters.text
    collectors = requests.get(
        f"{base}/online-collection/v1/collectors", headers=headers, timeout=10
    )
    assert collectors.status_code == 403

    # 5. The list now says the application has been used.
    page.goto(f"{base}/dashboard/access/")
    row = page.locator(f"tr[data-client-id='{client_id}']")
    assert "in use" in row.inner_text().lower()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_every_access_page_fits_a_phone(live_server, page):
    scene = operator_scene("A company with a rather long operator name that must not overflow")
    member("wide", (scene.operator, ADMIN))
    access = scene.operator.application_accesses.get()
    parameter_create(
        operator=scene.operator,
        name="/".join(["a-rather-long-segment-name"] * 6),
        type="standard",
        value="https://partner.example/" + "x" * 300,
        description="A description long enough to wrap over several lines on a phone. " * 3,
    )
    key = parameter_create(
        operator=scene.operator, name="partners/crm/key", type="sensitive", value="v"
    )
    webhook_endpoint_set(
        operator=scene.operator,
        url="http://127.0.0.1:9/" + "a-long-path-segment/" * 12,
    )
    meters_fill(scene, [900])
    notification = Notification.objects.get(operator=scene.operator)
    notification_deliver(notification.pk)  # refused: a long connection error
    base = live_server.url

    dashboard_login(page, base, "wide", PASSWORD)
    for path in (
        "/dashboard/access/",
        "/dashboard/access/applications/new/",
        f"/dashboard/access/applications/{access.pk}/",
        f"/dashboard/access/applications/{access.pk}/rotate/",
        "/dashboard/access/parameters/",
        "/dashboard/access/parameters/new/",
        f"/dashboard/access/parameters/{key.pk}/",
        "/dashboard/access/webhook/",
        "/dashboard/access/webhook/rotate/",
        f"/dashboard/access/webhook/deliveries/{notification.pk}/",
    ):
        assert_fits(page, f"{base}{path}")
        assert page.title().strip(), path

    # A secret shown once fits too: a rotation's, on a phone.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/dashboard/access/webhook/rotate/")
    with page.expect_navigation():
        page.click("#confirm-form button[type=submit]")
    assert page.inner_text("#signing-secret").startswith("whsec_")
    assert_no_horizontal_scroll(page)
