"""The usage explorer in a real browser: an operator user asks a question with the
form, reads the chart (drawn by Chart.js from the project's own static files) and
downloads the CSV, which is what `POST /metrics` answers with `Accept: text/csv`; the
page fits a phone's 390 px without scrolling sideways."""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path

import pytest
from django.utils import timezone

from tenants.models import OperatorMembership
from tests.conftest import ApiClient
from tests.e2e.dashboard import DESKTOP, assert_fits, assert_no_horizontal_scroll, dashboard_login
from tests.reporting.web.scene import PASSWORD, member, meters_fill, operator_scene

VIEWER = OperatorMembership.Role.VIEWER
CSV_HEADER = ["id", "name", "groupByField", "groupByValue", "timestamp", "value"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_operator_user_downloads_the_usage_csv_the_api_answers(live_server, page):
    acme = operator_scene("Acme")
    meters_fill(acme, [900, 500, 1200])
    globex = operator_scene("Globex")
    meters_fill(globex, [950])
    member("bob", (acme.operator, VIEWER))
    base = live_server.url
    today = timezone.now().astimezone(datetime.UTC).date()
    start = today - datetime.timedelta(days=2)

    # 1. Open the explorer from the navigation and ask for usage by customer, per hour.
    page.set_viewport_size(DESKTOP)
    dashboard_login(page, base, "bob", PASSWORD)
    with page.expect_navigation():
        page.click("#nav-entries a:has-text('Usage')")
    assert page.title().strip() == "Usage explorer · Acme · Tally"
    page.select_option("#id_meter_type", label="API calls")
    page.select_option("#id_group_by", label="Customer")
    page.select_option("#id_period", label="Hour")
    page.fill("#id_start", start.isoformat())
    with page.expect_navigation():
        page.click("#usage-form button[type=submit]")

    # 2. The chart draws a line per customer of Acme's.
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('usage-chart'))"
    )
    labels = page.evaluate(
        "() => Chart.getChart(document.getElementById('usage-chart')).data.datasets"
        ".map(dataset => dataset.label)"
    )
    assert labels == [acme.customer(0), acme.customer(1), acme.customer(2)]
    assert globex.customer(0) not in page.content()
    assert_no_horizontal_scroll(page)

    # 3. Download the CSV: the API's answer to the same question, byte for byte.
    with page.expect_download() as started:
        page.click("#usage-csv")
    download = started.value
    assert download.suggested_filename == f"usage-{start}-{today}.csv"
    content = Path(download.path()).read_bytes().decode()
    header, *rows = csv.reader(io.StringIO(content, newline=""))
    assert header == CSV_HEADER
    assert len(rows) == 3 * 3 * 24  # three customers, three days of hours
    hour = timezone.now().astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:00:00.000Z")
    assert ["USAGE", "USAGE", "CUSTOMER_ID", acme.customer(2), hour, "1200"] in rows

    body = {
        "startTime": f"{start}T00:00:00Z",
        "endTime": f"{today + datetime.timedelta(days=1)}T00:00:00Z",
        "metricQueries": [
            {
                "id": "USAGE",
                "name": "USAGE",
                "aggregationPeriod": "HOUR",
                "groupBy": "CUSTOMER_ID",
                "filters": [
                    {"fieldName": "USAGE_METER_ID", "fieldValues": [str(acme.meter_type.pk)]}
                ],
            }
        ],
    }
    api = ApiClient(acme.tenant.token).post("/metrics", body, HTTP_ACCEPT="text/csv")
    assert api.status_code == 200
    assert content == api.content.decode()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_usage_explorer_fits_a_phone(live_server, page):
    scene = operator_scene("A company with a rather long operator name that must not overflow")
    meters_fill(scene, [990, 1500, 20, 30])
    member("wide", (scene.operator, VIEWER))
    base = live_server.url

    dashboard_login(page, base, "wide", PASSWORD)
    for query in (
        "",
        "?group_by=CUSTOMER_ID&period=HOUR",
        "?metric=REVENUE",
        "?metric=EVENTS&meter_type=not-a-type&customer=" + "x" * 400,
    ):
        assert_fits(page, f"{base}/dashboard/usage/{query}")
        assert page.title().strip(), query
