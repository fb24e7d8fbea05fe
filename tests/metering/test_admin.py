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
