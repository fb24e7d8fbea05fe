"""The metering admin pages load, search and show derived columns."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from metering.models import Customer, Meter, MeterType
from metering.services import meter_create, meter_type_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    """Django's test client: these are admin pages, not the API (whose `client` the
    app's conftest gives)."""
    from django.test import Client

    return Client()


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def meter(acme) -> Meter:
    meter_type = meter_type_create(
        operator=acme.operator,
        name="Calls",
        unit="calls",
        aggregation=MeterType.Aggregation.SUM,
        timezone="Etc/UTC",
        reset_cron="0 0 * * *",
        capacity=Decimal(200),
    )
    created = meter_create(
        operator=acme.operator, meter_type=meter_type, meter_key="k-1", user_id="alice@example.com"
    )
    Meter.objects.filter(pk=created.pk).update(value=Decimal(50))
    return created


@pytest.mark.parametrize(
    "model",
    [
        "customer",
        "metertype",
        "meter",
        "meterperiod",
        "alert",
        "notification",
        "webhookendpoint",
    ],
)
def test_changelists_answer(staff, meter, model):
    assert staff.get(f"/admin/metering/{model}/").status_code == 200


def test_meter_list_shows_usage_against_capacity_and_searches(staff, meter):
    page = staff.get("/admin/metering/meter/").content.decode()
    assert "25.0 %" in page
    found = staff.get("/admin/metering/meter/", {"q": "alice"}).content.decode()
    assert "k-1" in found
    missing = staff.get("/admin/metering/meter/", {"q": "nobody"}).content.decode()
    assert "k-1" not in missing


def test_meter_change_page_and_type_counts(staff, meter):
    assert staff.get(f"/admin/metering/meter/{meter.pk}/change/").status_code == 200
    page = staff.get("/admin/metering/metertype/").content.decode()
    assert "Calls" in page


def test_meter_type_aggregation_is_read_only_once_created(staff, meter):
    page = staff.get(f"/admin/metering/metertype/{meter.meter_type_id}/change/").content.decode()
    assert 'name="aggregation"' not in page


def threshold_rows(*rows: tuple[str, str, str, str]) -> dict[str, str]:
    """The admin's threshold rows as a browser posts them: (name, kind, number, custom
    fields JSON) per row, blank rows after."""
    data = {}
    for row_index in range(5):
        row = rows[row_index] if row_index < len(rows) else ("", "", "", "")
        for column, value in enumerate(row):
            data[f"thresholds_{row_index * 4 + column}"] = value
    return data


def _type_form(meter, **changes):
    data = {
        "operator": meter.operator_id,
        "name": "Calls",
        "external_ref": "",
        "category": "DEFAULT",
        "description": "",
        "unit": "calls",
        "capacity": "200",
        "timezone": "Etc/UTC",
        "reset_cron": "0 0 * * *",
        **threshold_rows(),
        "active_from_0": "",
        "active_from_1": "",
        "active_to_0": "",
        "active_to_1": "",
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"reset_cron": "61 * * * *"}, "cron"),
        ({"timezone": "Mars/Base"}, "IANA"),
        ({"name": "bad/name"}, "May contain only"),
        (threshold_rows(("", "absoluteValue", "-1", "")), "Row 1, number: Must be 0 or more."),
        (threshold_rows(("", "capacityPercentage", "0", "")), "Row 1, number: Must be more than 0"),
        (threshold_rows(("x", "", "", "")), "Row 1: choose a kind and give a number."),
        (
            threshold_rows(("", "", "", ""), ("A", "absoluteValue", "1", "[1]")),
            "Row 2, custom fields: Must be a JSON object.",
        ),
        (
            threshold_rows(("A", "absoluteValue", "1", ""), ("A", "absoluteValue", "2", "")),
            "Row 2, name: Another threshold in this list has this name.",
        ),
        (threshold_rows(("", "absoluteValue", "1", "{not json")), "Enter a valid JSON."),
        ({"capacity": "-5"}, "negative"),
    ],
)
def test_meter_type_form_validates_like_the_api(staff, meter, changes, message):
    url = f"/admin/metering/metertype/{meter.meter_type_id}/change/"
    response = staff.post(url, _type_form(meter, **changes))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert MeterType.objects.get(pk=meter.meter_type_id).reset_cron == "0 0 * * *"


def test_meter_type_form_saves_threshold_rows(staff, meter):
    url = f"/admin/metering/metertype/{meter.meter_type_id}/change/"
    rows = threshold_rows(
        ("EMAIL_MAINTENANCE", "capacityPercentage", "90", '{"action": "EMAIL_MAINTENANCE"}'),
        ("", "", "", ""),
        ("", "absoluteValue", "50.50", ""),
    )
    response = staff.post(url, _type_form(meter, reset_cron="0  * * * *", **rows))
    assert response.status_code == 302, response.content.decode()[:3000]
    saved = MeterType.objects.get(pk=meter.meter_type_id)
    assert saved.reset_cron == "0 * * * *"
    assert saved.thresholds == [
        {
            "kind": "capacityPercentage",
            "number": "90",
            "name": "EMAIL_MAINTENANCE",
            "customFields": {"action": "EMAIL_MAINTENANCE"},
        },
        {"kind": "absoluteValue", "number": "50.5"},
    ]
    # The change page shows them as rows again, numbers without trailing zeros.
    page = staff.get(url).content.decode()
    assert 'name="thresholds_0" value="EMAIL_MAINTENANCE"' in page
    assert '<option value="capacityPercentage" selected>' in page
    assert 'name="thresholds_6" value="50.5"' in page
    assert 'name="capacity" value="200"' in page
    assert "200.0000000000" not in page


def test_meter_form_refuses_bad_thresholds(staff, meter):
    url = f"/admin/metering/meter/{meter.pk}/change/"
    data = {
        "capacity": "",
        **threshold_rows(("", "absoluteValue", "-1", "")),
        "custom_fields": "{}",
    }
    response = staff.post(url, data)
    assert response.status_code == 200
    assert "Row 1, number: Must be 0 or more." in response.content.decode()


# The change page's inlines (closed periods, alerts) post their management forms too.
PERIODS_INLINE = {
    "periods-TOTAL_FORMS": "0",
    "periods-INITIAL_FORMS": "0",
    "alerts-TOTAL_FORMS": "0",
    "alerts-INITIAL_FORMS": "0",
}


def test_meter_form_sets_own_thresholds_and_falls_back_to_the_types(staff, meter):
    url = f"/admin/metering/meter/{meter.pk}/change/"
    own = {
        "capacity": "80",
        **threshold_rows(("", "absoluteValue", "70", "")),
        "custom_fields": "{}",
        **PERIODS_INLINE,
    }
    assert staff.post(url, own).status_code == 302
    meter.refresh_from_db()
    assert (meter.capacity, meter.thresholds) == (80, [{"kind": "absoluteValue", "number": "70"}])

    none_of_its_own = {
        "capacity": "",
        **threshold_rows(),
        "custom_fields": "{}",
        **PERIODS_INLINE,
    }
    assert staff.post(url, none_of_its_own).status_code == 302
    meter.refresh_from_db()
    assert meter.thresholds == []  # its own list, empty: no thresholds at all

    inherit = {**none_of_its_own, "uses_type_thresholds": "on"}
    assert staff.post(url, inherit).status_code == 302
    meter.refresh_from_db()
    assert meter.thresholds is None
    page = staff.get(url).content.decode()
    (checkbox,) = re.findall(r'<input[^>]*name="uses_type_thresholds"[^>]*>', page)
    assert "checked" in checkbox


def test_meter_list_shows_exact_trimmed_values(staff, meter):
    page = staff.get("/admin/metering/meter/").content.decode()
    assert ">50<" in page and ">200<" in page
    assert "50.0000000000" not in page
    change = staff.get(f"/admin/metering/meter/{meter.pk}/change/").content.decode()
    assert "50.0000000000" not in change


def test_meter_type_changes_go_through_the_service(staff, meter):
    meter_type = MeterType.objects.get(pk=meter.meter_type_id)
    before = meter_type.updated_at
    url = f"/admin/metering/metertype/{meter_type.pk}/change/"
    response = staff.post(url, _type_form(meter, capacity="250", description="calls made"))
    assert response.status_code == 302, response.content.decode()[:2000]
    meter_type.refresh_from_db()
    assert (meter_type.capacity, meter_type.description) == (250, "calls made")
    assert meter_type.updated_at > before  # the service stamps it; a bare save did not
    page = staff.get(url).content.decode()
    assert 'name="operator"' not in page  # the owner is shown, never changed


def test_a_meter_type_name_in_use_is_a_form_error(staff, meter):
    taken = meter_type_create(
        operator=meter.operator,
        name="Taken",
        unit="u",
        aggregation=MeterType.Aggregation.SUM,
        timezone="Etc/UTC",
        reset_cron="0 0 * * *",
    )
    url = f"/admin/metering/metertype/{meter.meter_type_id}/change/"
    response = staff.post(url, _type_form(meter, name=taken.name))
    # The service refuses it (the owner is not on the form to check against); the
    # refusal is shown on the form, and nothing changed.
    assert response.status_code == 200
    assert "Another meter type has this name." in response.content.decode()
    assert MeterType.objects.get(pk=meter.meter_type_id).name == "Calls"


def test_customers_are_created_and_renamed_through_the_services(staff, acme):
    response = staff.post(
        "/admin/metering/customer/add/",
        {"operator": acme.operator.pk, "external_id": "cust-9", "name": "Nine", "email": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    customer = Customer.objects.get(external_id="cust-9")
    url = f"/admin/metering/customer/{customer.pk}/change/"
    assert 'name="external_id"' not in staff.get(url).content.decode()
    inlines = {
        f"{prefix}-{count}": "0"
        for prefix in ("meters", "accounts")
        for count in ("TOTAL_FORMS", "INITIAL_FORMS")
    }
    response = staff.post(url, {"name": "Nine Ltd", "email": "nine@example.com", **inlines})
    assert response.status_code == 302, response.content.decode()[:2000]
    customer.refresh_from_db()
    assert (customer.name, customer.email, customer.external_id) == (
        "Nine Ltd",
        "nine@example.com",
        "cust-9",
    )
