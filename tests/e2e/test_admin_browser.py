"""A staff member creates an application access in a real browser and copies its secret."""

from __future__ import annotations

import pytest
import requests

from tenants.models import ApplicationAccess
from tenants.services import operator_create

SCOPES = ["usage-metering:read:meters", "metrics:read"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_staff_creates_an_application_and_sees_its_secret_once(
    live_server, settings, staff_page, tmp_path
):
    settings.TALLY["API_AUDIENCE"] = live_server.url
    operator = operator_create(name="Umbrella")

    page = staff_page()  # logged in to the admin

    # 1. Add an application access with two scopes.
    page.goto(f"{live_server.url}/admin/tenants/applicationaccess/add/")
    page.select_option("#id_operator", str(operator.pk))
    page.fill("#id_name", "Umbrella billing")
    for checkbox in page.locator("input[name=scopes]").all():
        checkbox.set_checked(checkbox.get_attribute("value") in SCOPES)
    page.click("button[name=_save]")
    page.wait_for_url("**/change/")

    # 2. The secret is on this page, once.
    client_id = page.locator("code.tally-secret[data-name='Client ID']").inner_text()
    secret = page.locator("code.tally-secret[data-name='Client secret']").inner_text()
    page.screenshot(path=str(tmp_path / "application-created.png"), full_page=True)
    change_url = page.url

    # 3. Reloading shows the page without it.
    page.reload()
    assert page.url == change_url
    assert page.locator("code.tally-secret").count() == 0
    assert secret not in page.content()
    page.screenshot(path=str(tmp_path / "application-reloaded.png"), full_page=True)

    assert (tmp_path / "application-created.png").stat().st_size > 0
    access = ApplicationAccess.objects.select_related("application").get()
    assert access.operator_id == operator.pk
    assert access.application.client_id == client_id
    assert access.scopes == SCOPES

    # 4. The copied credentials get a token from the running server.
    response = requests.post(
        f"{live_server.url}/oauth/token",
        json={
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "client_credentials",
            "audience": live_server.url,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"].split() == SCOPES
    assert response.json()["token_type"] == "Bearer"
