"""A staff member sets a meter type's thresholds as rows in a real browser; the API reads
them back and usage fires them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from metering.models import Alert, MeterType
from metering.usage import UsageUpdate, usage_apply
from tenants.services import operator_create


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_staff_sets_threshold_rows_and_they_fire(live_server, staff_page, tmp_path):

    operator = operator_create(name="AlphaPrint")

    page = staff_page(viewport={"width": 1400, "height": 1000})

    # 1. A new meter type with two threshold rows (the third row is left blank).
    page.goto(f"{live_server.url}/admin/metering/metertype/add/")
    page.select_option("#id_operator", str(operator.pk))
    page.fill("#id_name", "Pay-Per-Print")
    page.fill("#id_unit", "sheets")
    page.select_option("#id_aggregation", "Sum")
    page.fill("#id_capacity", "100")
    page.fill("#id_timezone", "Etc/UTC")
    page.fill("#id_reset_cron", "0 0 1 * *")
    row_inputs = [
        ("EMAIL_MAINTENANCE", "capacityPercentage", "90", '{"action": "EMAIL"}'),
        ("DEACTIVATE_PRINTER", "absoluteValue", "100", '{"action": "DEACTIVATE"}'),
    ]
    for row, (name, kind, number, custom) in enumerate(row_inputs):
        page.fill(f"#id_thresholds_{row * 4}", name)
        page.select_option(f"#id_thresholds_{row * 4 + 1}", kind)
        page.fill(f"#id_thresholds_{row * 4 + 2}", number)
        page.fill(f"#id_thresholds_{row * 4 + 3}", custom)

    # 2. A bad row first: the form says which row and keeps what was typed.
    page.fill("#id_thresholds_10", "-5")
    page.select_option("#id_thresholds_9", "absoluteValue")
    page.click("button[name=_continue]")
    page.locator(".errornote").first.wait_for()
    assert "Row 3, number: Must be 0 or more." in page.content()
    assert page.input_value("#id_thresholds_0") == "EMAIL_MAINTENANCE"
    page.screenshot(path=str(tmp_path / "thresholds-error.png"), full_page=True)

    page.fill("#id_thresholds_10", "")
    page.select_option("#id_thresholds_9", "")
    page.click("button[name=_continue]")
    page.wait_for_url("**/change/")
    page.screenshot(path=str(tmp_path / "thresholds-saved.png"), full_page=True)
    assert page.input_value("#id_thresholds_2") == "90"
    assert page.input_value("#id_capacity") == "100"

    assert (tmp_path / "thresholds-saved.png").stat().st_size > 0
    meter_type = MeterType.objects.get()
    now = timezone.now()
    for value in (50, 45, 10):
        usage_apply(
            operator=operator,
            updates=[UsageUpdate(meter_type.pk, None, "pages", "printer-1", Decimal(value), now)],
        )
    fired = Alert.objects.order_by("threshold_value").values_list("threshold_name", "threshold")
    assert list(fired) == [
        (
            "EMAIL_MAINTENANCE",
            {
                "kind": "capacityPercentage",
                "number": "90",
                "name": "EMAIL_MAINTENANCE",
                "customFields": {"action": "EMAIL"},
            },
        ),
        (
            "DEACTIVATE_PRINTER",
            {
                "kind": "absoluteValue",
                "number": "100",
                "name": "DEACTIVATE_PRINTER",
                "customFields": {"action": "DEACTIVATE"},
            },
        ),
    ]
