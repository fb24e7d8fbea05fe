"""The metering admin pages load, search and show derived columns."""

from __future__ import annotations

from decimal import Decimal

import pytest

from metering.models import Meter, MeterType
from metering.services import meter_create, meter_type_create

pytestmark = pytest.mark.django_db


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
        "thresholds": "[]",
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
        ({"thresholds": '[{"value": -1}]'}, "value"),
        ({"thresholds": '[{"percent": 5}]'}, "Unknown field"),
        ({"capacity": "-5"}, "negative"),
    ],
)
def test_meter_type_form_validates_like_the_api(staff, meter, changes, message):
    url = f"/admin/metering/metertype/{meter.meter_type_id}/change/"
    response = staff.post(url, _type_form(meter, **changes))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert MeterType.objects.get(pk=meter.meter_type_id).reset_cron == "0 0 * * *"


def test_meter_type_form_saves_valid_changes(staff, meter):
    url = f"/admin/metering/metertype/{meter.meter_type_id}/change/"
    response = staff.post(
        url, _type_form(meter, reset_cron="0  * * * *", thresholds='[{"value": 50}]')
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    saved = MeterType.objects.get(pk=meter.meter_type_id)
    assert saved.reset_cron == "0 * * * *"
    assert saved.thresholds == [{"value": "50"}]


def test_meter_form_refuses_bad_thresholds(staff, meter):
    url = f"/admin/metering/meter/{meter.pk}/change/"
    data = {
        "capacity": "",
        "thresholds": '[{"value": 1, "capacityPercentage": 2}]',
        "custom_fields": "{}",
    }
    response = staff.post(url, data)
    assert response.status_code == 200
    assert "exactly one" in response.content.decode()


def test_meter_list_shows_exact_trimmed_values(staff, meter):
    page = staff.get("/admin/metering/meter/").content.decode()
    assert ">50<" in page and ">200<" in page
    assert "50.0000000000" not in page
