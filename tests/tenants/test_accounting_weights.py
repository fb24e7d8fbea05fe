"""The billing report's weights in the platform settings: GET shows them, PUT sets those
it names (exact decimals, at least 0) and keeps the others."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tenants.models import PlatformSettings
from tenants.services import platform_settings_update
from tests.conftest import assert_error_body

pytestmark = pytest.mark.django_db

URL = "/platform-api/settings"
PROFILE = {"name": "Tally Cloud", "contactEmail": "ops@example.com"}
DEFAULTS = {"apiCallWeight": 1, "gatewayRequestWeight": 1, "eventWeight": 1, "storageGbWeight": 0}


def test_a_fresh_platform_counts_every_call_request_and_event_as_one_unit(api_client, platform_key):
    assert api_client(platform_key).get(URL).json()["billing"] == DEFAULTS


def test_put_sets_the_weights_it_names_and_keeps_the_others(api_client, platform_key):
    client = api_client(platform_key)
    response = client.put(URL, {**PROFILE, "billing": {"apiCallWeight": 0.0001, "eventWeight": 2}})

    assert response.status_code == 200, response.content
    expected = {**DEFAULTS, "apiCallWeight": 0.0001, "eventWeight": 2}
    assert response.json()["billing"] == expected
    assert b'"apiCallWeight":0.0001' in response.content  # an exact JSON number
    row = PlatformSettings.objects.get()
    assert row.billing_api_call_weight == Decimal("0.0001")
    assert row.billing_event_weight == Decimal(2)

    # A profile update without billing leaves every weight as it was.
    assert client.put(URL, PROFILE).json()["billing"] == expected
    assert client.put(URL, {**PROFILE, "billing": {}}).json()["billing"] == expected
    response = client.put(URL, {**PROFILE, "billing": {"storageGbWeight": 12.5}})
    assert response.json()["billing"] == {**expected, "storageGbWeight": 12.5}
    assert client.get(URL).json()["billing"] == {**expected, "storageGbWeight": 12.5}


@pytest.mark.parametrize(
    "billing, field",
    [
        ({"apiCallWeight": -1}, "billing.apiCallWeight"),
        ({"eventWeight": "2"}, "billing.eventWeight"),
        ({"gatewayRequestWeight": None}, "billing.gatewayRequestWeight"),
        ({"gatewayRequestWeight": True}, "billing.gatewayRequestWeight"),
        ({"storageGbWeight": 0.00000000001}, "billing.storageGbWeight"),
        ({"storageGbWeight": 1e12}, "billing.storageGbWeight"),
        ({"perSeatWeight": 3}, "billing.perSeatWeight"),
        ({"api_call_weight": 3}, "billing.api_call_weight"),
        ([1, 2], "billing"),
        (None, "billing"),
    ],
    ids=[
        "negative",
        "string",
        "null",
        "boolean",
        "too-precise",
        "too-large",
        "unknown",
        "snake-case",
        "array",
        "null-object",
    ],
)
def test_a_bad_weight_is_400_naming_it_and_changes_nothing(
    api_client, platform_key, billing, field
):
    response = api_client(platform_key).put(URL, {**PROFILE, "billing": billing})

    error = assert_error_body(response, 400)
    assert field in [item["field"] for item in error["details"]], error
    assert api_client(platform_key).get(URL).json()["billing"] == DEFAULTS


def test_the_service_refuses_what_the_api_cannot_send(db):
    with pytest.raises(ValueError, match="at least 0"):
        platform_settings_update(
            name="T",
            contact_email="t@example.com",
            webhook_url="",
            billing={"billing_event_weight": Decimal(-1)},
        )
    with pytest.raises(ValueError, match="Unknown billing weight"):
        platform_settings_update(
            name="T", contact_email="t@example.com", webhook_url="", billing={"name": Decimal(1)}
        )


def test_the_admin_form_sets_the_weights(client, staff_user):
    client.force_login(staff_user)
    row = PlatformSettings.load()
    response = client.post(
        f"/admin/tenants/platformsettings/{row.pk}/change/",
        {
            "name": "Tally",
            "contact_email": "ops@example.com",
            "webhook_url": "",
            "billing_api_call_weight": "0.5",
            "billing_gateway_request_weight": "1",
            "billing_event_weight": "1",
            "billing_storage_gb_weight": "3",
        },
    )

    assert response.status_code == 302, response.content
    row.refresh_from_db()
    assert (row.billing_api_call_weight, row.billing_storage_gb_weight) == (
        Decimal("0.5"),
        Decimal(3),
    )


def test_the_admin_form_refuses_a_negative_weight(client, staff_user):
    client.force_login(staff_user)
    row = PlatformSettings.load()
    response = client.post(
        f"/admin/tenants/platformsettings/{row.pk}/change/",
        {
            "name": "Tally",
            "contact_email": "ops@example.com",
            "webhook_url": "",
            "billing_api_call_weight": "-1",
            "billing_gateway_request_weight": "1",
            "billing_event_weight": "1",
            "billing_storage_gb_weight": "0",
        },
    )

    assert response.status_code == 200  # the form again, with the error
    assert "greater than or equal to 0" in response.content.decode()
    row.refresh_from_db()
    assert row.billing_api_call_weight == 1
