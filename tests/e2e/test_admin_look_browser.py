"""The admin at 1280 px in a real browser: the sidebar shows the groups staff work in, and
the wide lists (meters, records, notifications, periods, ingestions) fit the screen."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from metering.notifications import notifications_deliver_due
from metering.resets import meters_reset_due
from metering.usage import UsageUpdate, usage_apply
from tests.conftest import ApiClient, make_tenant
from tests.factories import CollectorFactory, MeterTypeFactory

GROUPS = ["Operators & access", "Metering", "Collection", "Streams", "Reporting", "System"]
WIDE_LISTS = [
    "/admin/metering/meter/",
    "/admin/collection/record/",
    "/admin/metering/notification/",
    "/admin/metering/meterperiod/",
    "/admin/collection/ingestion/",
]
# The results table against the box that holds it: wider means cut off (or scrolled).
TABLE_FITS = """() => {
    const table = document.querySelector('#result_list');
    const box = table.closest('[data-simplebar]') || table.parentElement;
    return {table: table.scrollWidth, box: box.clientWidth, rows: table.tBodies.length};
}"""


def usage_for_many_customers(operator) -> None:
    """Meters of customers with long ids, past their thresholds, and a closed day."""
    meter_type = MeterTypeFactory(
        operator=operator,
        name="Pages printed on the shared office printers",
        capacity=Decimal(1000),
        thresholds=[{"capacityPercentage": 80, "name": "ALMOST_FULL"}],
    )
    now = timezone.now()

    def usage(at: datetime.datetime) -> list[UsageUpdate]:
        return [
            UsageUpdate(
                meter_type.pk,
                None,
                "default",
                f"customer-{n}.with-a-long-name@example-enterprise.com",
                Decimal("987.6543210000"),
                at,
            )
            for n in range(8)
        ]

    usage_apply(operator=operator, updates=usage(now))
    tomorrow = now + datetime.timedelta(days=1)
    meters_reset_due(now=tomorrow)
    usage_apply(operator=operator, updates=usage(tomorrow), now=tomorrow)
    notifications_deliver_due()


def records_with_long_ids(tenant) -> None:
    """Eight requests of one record each: eight ingestions, eight records."""
    collector = CollectorFactory(operator=tenant.operator, name="Office printers, third floor")
    api = ApiClient(tenant.token)
    for n in range(8):
        record = {
            "id": f"print-job-{n}-0f8fad5b-d9cb-469f-a165-70867728950e",
            "type": "print_job_completed_on_shared_printer",
            "customerId": f"customer-{n}.with-a-long-name@example-enterprise.com",
        }
        response = api.post(
            f"/online-collection/v1/collectors/{collector.pk}/data", {"data": [record]}
        )
        assert response.status_code == 202, response.content


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_admin_at_1280_px_shows_the_groups_and_cuts_nothing_off(
    live_server, staff_page, tmp_path
):
    tenant = make_tenant("Northwind Office Supplies International")
    usage_for_many_customers(tenant.operator)
    records_with_long_ids(tenant)

    page = staff_page(viewport={"width": 1280, "height": 900})

    # 1. The sidebar and the front page list the groups, in order, System last.
    page.goto(f"{live_server.url}/admin/")
    sidebar = page.locator("#nav-sidebar-apps")
    for title in GROUPS:
        assert sidebar.get_by_role("heading", name=title).is_visible(), title
    front = page.locator("#admin-groups section h2").all_inner_texts()
    assert front == GROUPS
    assert page.title().endswith("| Tally")
    page.screenshot(path=str(tmp_path / "index.png"))

    # 2. The wide lists fit: the table is no wider than its box.
    for path in WIDE_LISTS:
        page.goto(f"{live_server.url}{path}")
        measured = page.evaluate(TABLE_FITS)
        page.screenshot(path=str(tmp_path / f"{path.strip('/').replace('/', '-')}.png"))
        assert measured["rows"] >= 8, (path, measured)
        assert measured["table"] <= measured["box"], (path, measured)

    # 3. Numbers are exact, without the column's ten decimal places.
    page.goto(f"{live_server.url}/admin/metering/meter/")
    values = page.locator("#result_list td.field-value").all_inner_texts()
    assert values and set(values) == {"987.654321"}
