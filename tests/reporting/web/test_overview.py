"""The operator overview (`/dashboard/`): its figures come from the rollups and equal
what the scene did; its lists cost the same number of queries whatever their length."""

from __future__ import annotations

import datetime
import html
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reporting.platform import platform_summary
from tenants.models import OperatorMembership
from tests.reporting.web.scene import events_add, member, meters_fill, operator_scene

ADMIN = OperatorMembership.Role.ADMIN


def figure(page: str, element_id: str) -> str:
    """The big number of the card with this id."""
    card = page.split(f'id="{element_id}"', 1)[1]
    return re.search(r"tally-figure[^>]*>([^<]*)<", card).group(1).strip()


def chart(page: str) -> dict:
    value = re.search(r'id="ingestion-chart".*?data-value="([^"]*)"', page, re.S).group(1)
    return json.loads(html.unescape(value))


@pytest.mark.django_db
def test_the_overview_counts_what_the_operator_ingested(acme_scene, globex_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    response = bob.get("/dashboard/")
    now = timezone.now()

    assert response.status_code == 200
    page = response.content.decode()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = midnight.replace(day=1)
    week_ago = now.replace(minute=0, second=0, microsecond=0) - datetime.timedelta(hours=167)
    times = acme_scene.event_times
    assert figure(page, "events-today") == str(sum(moment >= midnight for moment in times))
    assert figure(page, "events-period") == str(sum(moment >= month for moment in times))
    # The failed record is one of the three ingested now.
    assert figure(page, "records-failed") == "1"
    # 900 and 1,200 of 1,000 calls are at 80% or more; 500 is not.
    assert figure(page, "meters-near-capacity") == "2"

    drawn = chart(page)
    assert len(drawn["labels"]) == len(drawn["datasets"][0]["data"]) == 7 * 24
    assert sum(drawn["datasets"][0]["data"]) == sum(moment >= week_ago for moment in times)
    assert drawn["datasets"][0]["data"][-1] == 3  # the records of this hour


@pytest.mark.django_db
def test_the_overview_lists_the_fullest_meters_and_the_latest_alerts(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    page = bob.get("/dashboard/").content.decode()

    near = page.split('id="near-capacity-list"', 1)[1].split("</ul>", 1)[0]
    fullest, second = acme_scene.customer(2), acme_scene.customer(0)
    assert near.index(fullest) < near.index(second)  # 120% before 90%
    assert acme_scene.customer(1) not in near  # 50%
    assert "1,200 / 1,000 calls · 120%" in near
    assert "900 / 1,000 calls · 90%" in near
    assert "width: 100.0%" in near and "width: 90.0%" in near  # the bar stops at 100%

    alerts = page.split('id="alert-list"', 1)[1].split("</ul>", 1)[0]
    assert alerts.count("Almost full reached") == 2
    assert f"{fullest} · API calls" in alerts
    assert "1,200 against 800 calls" in alerts


@pytest.mark.django_db
def test_an_operator_with_nothing_yet_sees_what_would_fill_the_page(browser_as):
    scene = operator_scene("Initech")
    bob = browser_as(member("bob", (scene.operator, ADMIN)))

    page = bob.get("/dashboard/").content.decode()

    assert 'id="chart-empty"' in page and "No events in the last 7 days" in page
    assert 'id="near-capacity-empty"' in page
    assert 'id="alerts-empty"' in page
    assert figure(page, "events-today") == "0"
    assert "<canvas" not in page


@pytest.mark.django_db
def test_the_overview_runs_the_same_queries_for_one_row_as_for_many(browser_as):
    scene = operator_scene("Acme")
    events_add(scene, [timezone.now()], failing=1)
    meters_fill(scene, [900])
    bob = browser_as(member("bob", (scene.operator, ADMIN)))
    bob.get("/dashboard/")  # the session's first request may do more

    with CaptureQueriesContext(connection) as one_row:
        assert bob.get("/dashboard/").status_code == 200

    day = datetime.timedelta(days=1)
    events_add(scene, [timezone.now() - n * day for n in range(6)], failing=3)
    meters_fill(scene, [810, 850, 990, 1000, 1500, 2000])
    with CaptureQueriesContext(connection) as many_rows:
        page = bob.get("/dashboard/").content.decode()

    assert page.count("Almost full reached") == 7
    assert len(many_rows) == len(one_row), [query["sql"] for query in many_rows]
    assert len(one_row) <= 8, [query["sql"] for query in one_row]


@pytest.mark.django_db
def test_the_platform_overview_shows_the_platform_summary(acme_scene, globex_scene, browser_as):
    staff = browser_as(member("alice", staff=True))

    page = staff.get("/platform/").content.decode()

    summary = platform_summary()
    assert summary.operators.total == 2
    assert figure(page, "kpi-operators") == "2"
    assert "2 active · 0 suspended" in page
    assert figure(page, "kpi-api-calls") == f"{summary.api_calls:,}"
    assert figure(page, "kpi-events") == f"{summary.events_ingested:,}"
    assert figure(page, "kpi-gateway") == f"{summary.gateway_requests:,}"
    assert figure(page, "kpi-connections") == f"{summary.active_connections:,}"


@pytest.mark.django_db
def test_the_platform_overview_costs_the_same_queries_with_more_operators(browser_as):
    staff = browser_as(member("alice", staff=True))
    operator_scene("Acme")
    staff.get("/platform/")
    with CaptureQueriesContext(connection) as few:
        staff.get("/platform/")

    for name in ("Globex", "Initech", "Umbrella"):
        events_add(operator_scene(name), [timezone.now()])
    with CaptureQueriesContext(connection) as more:
        assert staff.get("/platform/").status_code == 200

    assert len(more) == len(few), [query["sql"] for query in more]
