"""A staff member opens a metric definition in a real browser, enters a customer and
reads the metric's value, the same as the API answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import ApiClient, make_tenant
from tests.reporting.metric_helpers import (
    create_metric,
    processed_collector,
    send_and_process,
    value_of,
)

BASE = (timezone.now() - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_staff_read_a_metric_value_for_a_customer(live_server, staff_page, tmp_path):
    api = ApiClient(make_tenant("Acme").token)
    collector = processed_collector(api)
    send_and_process(
        api,
        collector,
        [
            {"id": "r1", "timestamp": at(1), "type": "api_call", "customerId": "c1",
             "tokens": {"output": 10}},
            {"id": "r2", "timestamp": at(2), "type": "api_call", "customerId": "c1",
             "tokens": {"output": 2.5}},
            {"id": "r3", "timestamp": at(5), "type": "api_call", "customerId": "c1",
             "tokens": {"output": 7}},
            {"id": "r4", "timestamp": at(1), "type": "api_call", "customerId": "c2",
             "tokens": {"output": 100}},
        ],
    )  # fmt: skip
    metric = create_metric(
        api,
        {
            "name": "Output tokens",
            "queryType": "simple",
            "aggregationType": "SUM",
            "eventName": "api_call",
            "valueProperty": "$.tokens.output",
        },
    )
    page = staff_page(viewport={"width": 1400, "height": 1000})

    # 1. From the list to the metric's page.
    page.goto(f"{live_server.url}/admin/reporting/metricdefinition/")
    page.click("text=Output tokens")
    page.wait_for_url("**/change/")

    # 2. All time for customer c1.
    page.fill("#id_value-customer", "c1")
    page.click("#metric-value-form button[type=submit]")
    page.locator("#metric-value-number").wait_for()
    assert page.inner_text("#metric-value-number") == "19.5"
    assert value_of(api, metric["id"], "c1")["value"] == 19.5
    # The change form is untouched by the value's GET: still there, still filled.
    assert page.input_value("#id_name") == "Output tokens"

    # 3. A range: the first three hours.
    page.select_option("#id_value-timeframe", "RANGE")
    page.fill("#id_value-start", at(0))
    page.fill("#id_value-end", at(3))
    page.click("#metric-value-form button[type=submit]")
    page.wait_for_url("**value-timeframe=RANGE**")
    assert page.inner_text("#metric-value-number") == "12.5"
    assert page.input_value("#id_value-customer") == "c1"
    page.screenshot(path=str(tmp_path / "metric-value.png"), full_page=True)
    assert (tmp_path / "metric-value.png").stat().st_size > 0
