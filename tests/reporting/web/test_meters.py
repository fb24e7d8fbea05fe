"""The meters pages (`/dashboard/meters/` and a page per meter): the operator's meters
with their values against capacity, filtered and paged; a meter's period history,
thresholds and alerts. Read only, another operator's meter is a 404, and the number of
queries does not grow with the rows."""

from __future__ import annotations

import datetime
import html
import json
import re
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metering.models import Alert, Meter, MeterPeriod
from metering.usage import UsageUpdate, usage_apply
from reporting.web.meters import PAGE_SIZE
from tenants.models import OperatorMembership
from tests.factories import MeterTypeFactory
from tests.reporting.web.scene import OperatorScene, member, meters_fill, operator_scene

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER
METERS = "/dashboard/meters/"
DASH = "\N{EN DASH}"


def meter_url(meter: Meter) -> str:
    return f"{METERS}{meter.pk}/"


def listed(page: str) -> str:
    """The rows of the meters table (empty when there is none)."""
    if 'id="meter-rows"' not in page:
        return ""
    return page.split('id="meter-rows"', 1)[1].split("</tbody>", 1)[0]


def chart(page: str) -> dict:
    value = re.search(r'id="period-chart".*?data-value="([^"]*)"', page, re.S).group(1)
    return json.loads(html.unescape(value))


def day_time(moment: datetime.datetime) -> str:
    """A moment as the pages write it: "5 Jul 2024, 14:03"."""
    return f"{moment.day} {moment:%b %Y, %H:%M}"


def history_add(scene: OperatorScene, user_id: str, values: list[int]) -> Meter:
    """A meter of the scene's daily "API calls" type with one value a day, the last one
    today: each day's update closes the day before, as the worker's usage does. Values
    of 800 and more reach the 80% threshold in their period."""
    now = timezone.now()
    for days_ago, value in zip(range(len(values) - 1, -1, -1), values, strict=True):
        moment = now - datetime.timedelta(days=days_ago)
        update = UsageUpdate(scene.meter_type.pk, None, "default", user_id, Decimal(value), moment)
        usage_apply(operator=scene.operator, updates=[update], now=moment)
    return Meter.objects.get(operator=scene.operator, user_id=user_id)


# -- The list ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_list_shows_each_meter_against_its_capacity_with_thresholds_marked(
    acme_scene, globex_scene, browser_as
):
    bob = browser_as(member("bob", (acme_scene.operator, VIEWER)))

    response = bob.get(METERS)

    assert response.status_code == 200
    page = response.content.decode()
    assert "<title> Meters · Acme · Tally</title>" in page
    rows = listed(page)
    assert rows.count("<tr") == 3
    # By customer: 900, 500, then 1,200 of 1,000 calls.
    first, second, third = (acme_scene.customer(index) for index in range(3))
    assert rows.index(first) < rows.index(second) < rows.index(third)
    assert "900 / 1,000 calls" in rows and "90%" in rows
    assert "1,200 / 1,000 calls" in rows and "120%" in rows
    assert "width: 90.0%" in rows and "width: 100.0%" in rows  # the bar stops at 100%
    assert rows.count('class="tally-gauge-mark" style="left: 80.0%"') == 3  # 80% of capacity
    assert 'title="Almost full: 800 calls"' in rows
    assert "bg-red-600" in rows and "bg-orange-500" in rows  # over capacity, near it
    for meter in acme_scene.meters:
        assert f'href="{meter_url(meter)}"' in rows
    start = acme_scene.meters[0].period_start
    assert day_time(start) in rows
    assert f"1{DASH}3 of" not in page and "3 meters" in page
    assert "globex" not in page.lower()


@pytest.mark.django_db
def test_meters_are_filtered_by_meter_type_and_customer(acme_scene, browser_as):
    storage = MeterTypeFactory(operator=acme_scene.operator, name="Storage", unit="GB")
    usage_apply(
        operator=acme_scene.operator,
        updates=[
            UsageUpdate(
                storage.pk, None, "default", acme_scene.customer(1), Decimal("2.5"), timezone.now()
            )
        ],
    )
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    by_type = listed(bob.get(METERS, {"meter_type": storage.pk}).content.decode())
    assert by_type.count("<tr") == 1
    assert "Storage" in by_type and "2.5 GB" in by_type and "no capacity set" in by_type

    by_customer = bob.get(METERS, {"user_id": "customer-1@"}).content.decode()
    rows = listed(by_customer)
    assert rows.count("<tr") == 2  # API calls and Storage
    assert acme_scene.customer(0) not in rows
    assert "2 meters matching the filters" in by_customer

    both = listed(
        bob.get(METERS, {"meter_type": storage.pk, "user_id": "CUSTOMER-1"}).content.decode()
    )
    assert both.count("<tr") == 1  # the id matches whatever its case

    nothing = bob.get(METERS, {"user_id": "nobody"}).content.decode()
    assert 'id="meters-empty"' in nothing and "No meter matches these filters" in nothing
    assert listed(nothing) == ""


@pytest.mark.django_db
def test_a_filter_that_cannot_be_used_is_explained_not_a_500(acme_scene, globex_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    for meter_type, message in (
        ("not-an-id", "is not a valid UUID"),
        (str(uuid.uuid4()), "Select a valid choice"),
        (str(globex_scene.meter_type.pk), "Select a valid choice"),
    ):
        response = bob.get(METERS, {"meter_type": meter_type})
        assert response.status_code == 400, meter_type
        page = response.content.decode()
        assert message in page, meter_type
        assert "These filters cannot be used" in page
        assert listed(page) == ""  # not the unfiltered list either
        assert globex_scene.customer(0) not in page

    too_long = bob.get(METERS, {"user_id": "x" * 321})
    assert too_long.status_code == 400
    assert "Ensure this value has at most 320 characters" in too_long.content.decode()

    # Pages past the end or not numbers show the nearest page.
    for number in ("abc", "-1", "999", "1" * 30):
        response = bob.get(METERS, {"page": number})
        assert response.status_code == 200, number
        assert listed(response.content.decode()).count("<tr") == 3


@pytest.mark.django_db
def test_many_meters_are_paged_and_the_pages_keep_the_filter(browser_as):
    scene = operator_scene("Acme")
    meters_fill(scene, [index * 10 for index in range(PAGE_SIZE + 5)])
    bob = browser_as(member("bob", (scene.operator, ADMIN)))
    type_id = scene.meter_type.pk

    first = bob.get(METERS, {"meter_type": type_id}).content.decode()
    assert listed(first).count("<tr") == PAGE_SIZE
    assert f"1{DASH}{PAGE_SIZE} of 30 meters" in first
    assert "Page 1 of 2" in first
    assert f'href="?meter_type={type_id}&amp;page=2" rel="next"' in first

    second = bob.get(METERS, {"meter_type": type_id, "page": 2}).content.decode()
    assert listed(second).count("<tr") == 5
    assert f'href="?meter_type={type_id}&amp;page=1" rel="prev"' in second
    on_pages = {meter.user_id for meter in scene.meters}
    shown = {user_id for user_id in on_pages if user_id in listed(first) + listed(second)}
    assert shown == on_pages


@pytest.mark.django_db
def test_the_list_runs_the_same_queries_for_one_meter_as_for_a_full_page(browser_as):
    scene = operator_scene("Acme")
    meters_fill(scene, [900])
    bob = browser_as(member("bob", (scene.operator, ADMIN)))
    bob.get(METERS)  # the session's first request may do more

    with CaptureQueriesContext(connection) as one:
        assert bob.get(METERS).status_code == 200

    meters_fill(scene, [index * 50 for index in range(PAGE_SIZE + 3)])
    storage = MeterTypeFactory(
        operator=scene.operator,
        name="Storage",
        capacity=Decimal(10),
        thresholds=[{"absoluteValue": 5}, {"capacityPercentage": 90}],
    )
    usage_apply(
        operator=scene.operator,
        updates=[UsageUpdate(storage.pk, None, "default", "zed", Decimal(7), timezone.now())],
    )
    with CaptureQueriesContext(connection) as many:
        page = bob.get(METERS).content.decode()

    assert listed(page).count("<tr") == PAGE_SIZE
    assert len(many) == len(one), [query["sql"] for query in many]


@pytest.mark.django_db
def test_an_operator_without_meters_is_told_what_makes_one(browser_as):
    scene = operator_scene("Initech")
    bob = browser_as(member("bob", (scene.operator, ADMIN)))

    page = bob.get(METERS).content.decode()

    assert 'id="meters-empty"' in page and "No meters yet" in page
    assert "POST /usage-metering/v1/meters" in page


# -- A meter's page ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_meters_page_draws_its_period_history_and_lists_its_alerts(acme_scene, browser_as):
    meter = history_add(acme_scene, "dana@acme.example", [300, 850, 400, 120])
    bob = browser_as(member("bob", (acme_scene.operator, VIEWER)))

    response = bob.get(meter_url(meter))

    assert response.status_code == 200
    page = response.content.decode()
    assert "<title> dana@acme.example · API calls · Acme · Tally</title>" in page
    periods = list(MeterPeriod.objects.filter(meter=meter).order_by("period_start"))
    assert [period.value for period in periods] == [300, 850, 400]

    drawn = chart(page)
    assert drawn["datasets"][0]["data"] == [300, 850, 400, 120]
    assert len(drawn["labels"]) == 4 and drawn["labels"][-1] == "Current period"
    # Daily periods are labelled by their day, the first by the moment it started.
    assert drawn["labels"][1] == f"{periods[1].period_start.day} {periods[1].period_start:%b %Y}"

    table = page.split('id="period-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr") == 5  # the header, the current period and three closed ones
    values = re.findall(r"([\d,]+) calls", table)
    assert values == ["120", "400", "850", "300"]  # newest first
    assert "current" in table.split('id="period-current"', 1)[1].split("</tr>", 1)[0]

    thresholds = page.split('id="threshold-list"', 1)[1].split("</ul>", 1)[0]
    assert "Almost full" in thresholds and "80% of capacity = 800 calls" in thresholds
    assert "reached this period" not in thresholds  # 120 of 1,000 now

    [alert] = Alert.objects.filter(meter=meter)
    alerts = page.split('id="meter-alert-list"', 1)[1].split("</ul>", 1)[0]
    assert "Almost full" in alerts
    assert "reached at 850 against 800 calls" in alerts
    assert f"{day_time(alert.crossed_at)}:{alert.crossed_at:%S} UTC" in alerts
    assert f"period from {day_time(alert.period_start)}" in alerts


@pytest.mark.django_db
def test_a_meter_that_reached_a_threshold_this_period_says_so(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    full = acme_scene.meters[2]  # 1,200 of 1,000

    page = bob.get(meter_url(full)).content.decode()

    thresholds = page.split('id="threshold-list"', 1)[1].split("</ul>", 1)[0]
    assert "reached this period" in thresholds
    assert "reached at 1,200 against 800 calls" in page
    assert 'id="periods-empty"' in page and "No period has closed yet" in page
    assert chart(page)["datasets"][0]["data"] == [1200]


@pytest.mark.django_db
def test_a_meter_without_thresholds_or_alerts_says_what_would_show(browser_as):
    scene = operator_scene("Initech")
    plain = MeterTypeFactory(operator=scene.operator, name="Storage", unit="GB")
    usage_apply(
        operator=scene.operator,
        updates=[UsageUpdate(plain.pk, None, "default", "zed", Decimal("0.25"), timezone.now())],
    )
    meter = Meter.objects.get(meter_type=plain)
    bob = browser_as(member("bob", (scene.operator, ADMIN)))

    page = bob.get(meter_url(meter)).content.decode()

    assert 'id="thresholds-empty"' in page
    assert 'id="meter-alerts-empty"' in page
    assert "0.25 GB" in page and "none set" in page


@pytest.mark.django_db
def test_the_overviews_alerts_lead_to_the_meters_page(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    overview = bob.get("/dashboard/").content.decode()
    alerts = overview.split('id="alert-list"', 1)[1].split("</ul>", 1)[0]
    links = re.findall(r'href="(/dashboard/meters/[^"]+)"', alerts)

    assert sorted(links) == sorted(
        meter_url(meter) for meter in acme_scene.meters if meter.value >= 800
    )
    for link in links:
        assert bob.get(link).status_code == 200


@pytest.mark.django_db
def test_another_operators_meter_is_a_404(acme_scene, globex_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    for path in (meter_url(globex_scene.meters[0]), f"{METERS}{uuid.uuid4()}/"):
        response = bob.get(path)
        assert response.status_code == 404
        page = response.content.decode()
        assert 'id="not-found"' in page
        assert globex_scene.customer(0) not in page
    assert bob.get(f"{METERS}not-an-id/").status_code == 404


@pytest.mark.django_db
def test_the_meters_pages_change_nothing(acme_scene, browser_as):
    adam = member("adam", (acme_scene.operator, ADMIN))
    admin, strict = browser_as(adam), browser_as(adam, enforce_csrf_checks=True)
    viewer = browser_as(member("vera", (acme_scene.operator, VIEWER)))
    meters = Meter.objects.filter(operator=acme_scene.operator).order_by("id")
    before = list(meters.values_list("id", "value", "updated_at"))

    for path in (METERS, meter_url(acme_scene.meters[0])):
        refused = viewer.post(path, {"value": 0})
        assert refused.status_code == 403
        assert "read-only access to Acme" in refused.content.decode()
        assert admin.post(path, {"value": 0}).status_code == 405  # nothing to post to
        without_token = strict.post(path, {"value": 0})
        assert without_token.status_code == 403
        assert "CSRF" in without_token.content.decode()
    assert list(meters.values_list("id", "value", "updated_at")) == before


@pytest.mark.django_db
def test_a_meters_page_runs_the_same_queries_whatever_its_history(acme_scene, browser_as):
    short = history_add(acme_scene, "short@acme.example", [100])
    long = history_add(acme_scene, "long@acme.example", [900, 100, 950, 200, 990, 50])
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    bob.get(meter_url(short))

    with CaptureQueriesContext(connection) as few:
        assert bob.get(meter_url(short)).status_code == 200
    with CaptureQueriesContext(connection) as many:
        page = bob.get(meter_url(long)).content.decode()

    assert page.count("reached at") == 3
    assert len(many) == len(few), [query["sql"] for query in many]


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_login_page(acme_scene):
    for path in (METERS, meter_url(acme_scene.meters[0])):
        response = Client().get(path)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={path}"
