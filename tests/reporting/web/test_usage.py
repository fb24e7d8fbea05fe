"""The usage explorer (`/dashboard/usage/`): `POST /metrics` as a form. Each test asks
the page and the API the same question and compares: the chart and the table hold the
API's numbers, the CSV download is the API's CSV, and a question the API refuses is
refused on the page with the API's words, beside the field that caused it."""

from __future__ import annotations

import datetime
import html
import json
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reporting.web.usage import ROWS_SHOWN, SERIES_SHOWN
from tenants.models import OperatorMembership
from tests.conftest import ApiClient
from tests.reporting.web.scene import OperatorScene, member, meters_fill, operator_scene

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER
USAGE_PAGE = "/dashboard/usage/"
USAGE_CSV = "/dashboard/usage/csv/"
CSV_HEADER = "id,name,groupByField,groupByValue,timestamp,value"


def today() -> datetime.date:
    return timezone.now().astimezone(datetime.UTC).date()


def api_body(
    *,
    metric: str = "USAGE",
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    period: str = "DAY",
    **query,
) -> dict:
    """The API's request for a question over whole UTC days, `end` included (the last
    7 days by default), as a client of `POST /metrics` would write it."""
    end = end or today()
    start = start or end - datetime.timedelta(days=6)
    return {
        "startTime": f"{start}T00:00:00Z",
        "endTime": f"{end + datetime.timedelta(days=1)}T00:00:00Z",
        "metricQueries": [{"id": metric, "name": metric, "aggregationPeriod": period, **query}],
    }


def api_answer(scene: OperatorScene, body: dict) -> dict:
    response = ApiClient(scene.tenant.token).post("/metrics", body)
    assert response.status_code == 200, response.content
    [result] = json.loads(response.content, parse_float=Decimal)["results"]
    return result


def api_refusal(scene: OperatorScene, body: dict) -> list[str]:
    response = ApiClient(scene.tenant.token).post("/metrics", body)
    assert response.status_code == 400, response.content
    return [detail["message"] for detail in response.json()["details"]]


def chart(page: str) -> dict:
    value = re.search(r'id="usage-chart".*?data-value="([^"]*)"', page, re.S).group(1)
    return json.loads(html.unescape(value), parse_float=Decimal)


def table_rows(page: str) -> list[str]:
    table = page.split('id="usage-table"', 1)[1].split("</tbody>", 1)[0]
    return table.split("<tbody", 1)[1].split("<tr")[1:]


def field_errors(page: str, name: str) -> str:
    """The text of the errors shown under the form field `name`."""
    field = page.split(f'name="{name}"', 1)[1].split('class="flex flex-col group mb-4"', 1)[0]
    found = re.search(r'<div class="mt-2 text-red-600[^"]*">(.*?)</div>', field, re.S)
    return (
        html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1)))) if found else ""
    )


def assert_drawn_as_answered(page: str, answer: dict) -> None:
    """The chart holds every series of the API's answer, in its order and values."""
    drawn = chart(page)
    assert len(drawn["labels"]) == len(answer["data"][0]["timestamps"])
    assert [dataset["data"] for dataset in drawn["datasets"]] == [
        series["metricValues"] for series in answer["data"]
    ]
    groups = [series.get("groupedBy", {}).get("fieldValue") for series in answer["data"]]
    if groups != [None]:
        assert [dataset["label"] for dataset in drawn["datasets"]] == groups


# -- Answers -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_explorer_opens_on_the_last_7_days_of_usage_per_day(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, VIEWER)))

    response = bob.get(USAGE_PAGE)

    assert response.status_code == 200
    page = response.content.decode()
    assert "<title> Usage explorer · Acme · Tally</title>" in page
    answer = api_answer(acme_scene, api_body())
    assert_drawn_as_answered(page, answer)
    assert answer["data"][0]["metricValues"][-1] == 2600  # 900 + 500 + 1,200 calls today
    rows = table_rows(page)
    assert len(rows) == 7
    assert f"{today():%a} {today().day} {today():%b %Y}" in rows[-1] and "2,600" in rows[-1]
    assert "values added up: choose a meter type" in page
    start = today() - datetime.timedelta(days=6)
    assert (
        f'href="{USAGE_CSV}?metric=USAGE&amp;period=DAY&amp;start={start}&amp;end={today()}"'
        in page
    )


QUESTIONS = {
    "one customer's meter type by the hour": (
        lambda scene: {
            "meter_type": str(scene.meter_type.pk),
            "customer": scene.customer(2),
            "period": "HOUR",
            "start": str(today() - datetime.timedelta(days=1)),
        },
        lambda scene: api_body(
            period="HOUR",
            start=today() - datetime.timedelta(days=1),
            filters=[
                {"fieldName": "USAGE_METER_ID", "fieldValues": [str(scene.meter_type.pk)]},
                {"fieldName": "CUSTOMER_ID", "fieldValues": [scene.customer(2)]},
            ],
        ),
    ),
    "usage split by customer": (
        lambda scene: {"group_by": "CUSTOMER_ID"},
        lambda scene: api_body(groupBy="CUSTOMER_ID"),
    ),
    "events by status per week": (
        lambda scene: {
            "metric": "EVENTS",
            "group_by": "EVENT_STATUS",
            "period": "WEEK",
            "start": str(today() - datetime.timedelta(days=20)),
        },
        lambda scene: api_body(
            metric="EVENTS",
            period="WEEK",
            start=today() - datetime.timedelta(days=20),
            groupBy="EVENT_STATUS",
        ),
    ),
    "usage per month by meter type": (
        lambda scene: {"group_by": "USAGE_METER_ID", "period": "MONTH"},
        lambda scene: api_body(period="MONTH", groupBy="USAGE_METER_ID"),
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("question", list(QUESTIONS))
def test_each_question_is_answered_as_post_metrics_answers_it(acme_scene, browser_as, question):
    form, body = QUESTIONS[question]
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    response = bob.get(USAGE_PAGE, form(acme_scene))

    assert response.status_code == 200
    page = response.content.decode()
    answer = api_answer(acme_scene, body(acme_scene))
    assert_drawn_as_answered(page, answer)
    assert any(value for series in answer["data"] for value in series["metricValues"])
    assert len(table_rows(page)) == len(answer["data"][0]["timestamps"])
    # What the page would ask the API, shown for developers, is the same question.
    shown = html.unescape(page.split('id="usage-api"', 1)[1].split("<pre", 1)[1].split(">", 1)[1])
    assert json.loads(shown.split("</pre>", 1)[0]) == body(acme_scene)


@pytest.mark.django_db
def test_a_range_with_nothing_counted_says_what_would_fill_it(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    page = bob.get(USAGE_PAGE, {"metric": "REVENUE"}).content.decode()

    assert 'id="usage-empty"' in page and "Nothing counted in this range" in page
    assert "<canvas" not in page
    assert "Revenue (USD)" in page
    assert all(
        value == 0
        for value in api_answer(acme_scene, api_body(metric="REVENUE"))["data"][0]["metricValues"]
    )


@pytest.mark.django_db
def test_the_csv_download_is_the_apis_csv(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, VIEWER)))
    start = today() - datetime.timedelta(days=2)

    response = bob.get(USAGE_CSV, {"group_by": "CUSTOMER_ID", "start": str(start)})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="usage-{start}-{today()}.csv"'
    api = ApiClient(acme_scene.tenant.token).post(
        "/metrics", api_body(start=start, groupBy="CUSTOMER_ID"), HTTP_ACCEPT="text/csv"
    )
    assert api.status_code == 200
    assert response.content == api.content
    lines = response.content.decode().splitlines()
    assert lines[0] == CSV_HEADER
    assert f"USAGE,USAGE,CUSTOMER_ID,{acme_scene.customer(2)},{today()}T00:00:00.000Z,1200" in lines
    assert len(lines) == 1 + 3 * 3  # three customers, three days


@pytest.mark.django_db
def test_many_series_and_buckets_are_cut_on_the_page_but_not_in_the_csv(browser_as):
    scene = operator_scene("Acme")
    meters_fill(scene, [index + 1 for index in range(SERIES_SHOWN + 2)])
    bob = browser_as(member("bob", (scene.operator, ADMIN)))
    question = {
        "group_by": "CUSTOMER_ID",
        "period": "HOUR",
        "start": str(today() - datetime.timedelta(days=19)),
    }

    page = bob.get(USAGE_PAGE, question).content.decode()

    drawn = chart(page)
    assert len(drawn["datasets"]) == SERIES_SHOWN
    # The largest: the two smallest customers (values 1 and 2) are left out.
    assert scene.customer(0) not in page.split('id="usage-answer"', 1)[1]
    assert f"{SERIES_SHOWN + 2} series, the {SERIES_SHOWN} largest shown" in page
    assert len(drawn["labels"]) == 20 * 24
    assert len(table_rows(page)) == ROWS_SHOWN
    assert f"The latest {ROWS_SHOWN} buckets; the CSV has all {20 * 24:,}" in page
    csv_lines = bob.get(USAGE_CSV, question).content.decode().splitlines()
    assert len(csv_lines) == 1 + (SERIES_SHOWN + 2) * 20 * 24


# -- Refusals ------------------------------------------------------------------------------

REFUSALS = {
    "a meter type for events": (
        lambda scene: {"metric": "EVENTS", "meter_type": str(scene.meter_type.pk)},
        lambda scene: api_body(
            metric="EVENTS",
            filters=[{"fieldName": "USAGE_METER_ID", "fieldValues": [str(scene.meter_type.pk)]}],
        ),
        "meter_type",
    ),
    "an unknown metric": (
        lambda scene: {"metric": "FOO"},
        lambda scene: api_body(metric="FOO"),
        "metric",
    ),
    "too many hours": (
        lambda scene: {"period": "HOUR", "start": "2020-01-01"},
        lambda scene: api_body(period="HOUR", start=datetime.date(2020, 1, 1)),
        "period",
    ),
    "an end before the start": (
        lambda scene: {"start": str(today()), "end": str(today() - datetime.timedelta(days=3))},
        lambda scene: api_body(start=today(), end=today() - datetime.timedelta(days=3)),
        "end",
    ),
    "a currency for usage": (
        lambda scene: {"currency": "INVOICE"},
        lambda scene: api_body(configs={"CURRENCY": "INVOICE"}),
        "currency",
    ),
    "usage split by event status": (
        lambda scene: {"group_by": "EVENT_STATUS"},
        lambda scene: api_body(groupBy="EVENT_STATUS"),
        "group_by",
    ),
    "a customer id longer than the API takes": (
        lambda scene: {"customer": "c" * 321},
        lambda scene: api_body(filters=[{"fieldName": "CUSTOMER_ID", "fieldValues": ["c" * 321]}]),
        "customer",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_question_the_api_refuses_is_refused_with_its_words(acme_scene, browser_as, refusal):
    form, body, field = REFUSALS[refusal]
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    for path in (USAGE_PAGE, USAGE_CSV):
        response = bob.get(path, form(acme_scene))

        assert response.status_code == 400
        assert response["Content-Type"].startswith("text/html")
        page = response.content.decode()
        assert 'id="usage-invalid"' in page and "<canvas" not in page
        shown = field_errors(page, field)
        for message in api_refusal(acme_scene, body(acme_scene)):
            assert message in shown, (message, shown)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("question", "field", "message"),
    [
        ({"start": "yesterday"}, "start", "Enter a valid date."),
        ({"end": "2024-02-30"}, "end", "Enter a valid date."),
        ({"end": "9999-12-31"}, "end", "Must be 9998-12-31 or earlier."),
        ({"start": "0001-01-01", "end": "0001-01-03"}, None, None),
        ({"start": "9998-12-01", "end": "9998-12-31", "period": "MONTH"}, None, None),
    ],
)
def test_days_are_read_by_the_page_and_never_fail_it(
    acme_scene, browser_as, question, field, message
):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    response = bob.get(USAGE_PAGE, question)

    page = response.content.decode()
    if field is None:
        assert response.status_code == 200
        assert "Nothing counted in this range" in page
    else:
        assert response.status_code == 400
        assert message in field_errors(page, field)


@pytest.mark.django_db
def test_another_operators_customers_and_meter_types_are_not_answered(
    acme_scene, globex_scene, browser_as
):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    theirs = bob.get(USAGE_PAGE, {"customer": globex_scene.customer(0)}).content.decode()
    assert "Nothing counted in this range" in theirs

    their_type = bob.get(USAGE_PAGE, {"meter_type": str(globex_scene.meter_type.pk)})
    assert their_type.status_code == 400
    assert "Unknown meter type" in field_errors(their_type.content.decode(), "meter_type")

    split = bob.get(USAGE_PAGE, {"group_by": "CUSTOMER_ID"}).content.decode()
    assert "globex" not in split.lower()
    assert acme_scene.customer(0) in split


# -- Access and cost -----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_explorer_runs_the_same_queries_for_one_series_as_for_many(browser_as):
    scene = operator_scene("Acme")
    meters_fill(scene, [100])
    bob = browser_as(member("bob", (scene.operator, ADMIN)))
    question = {"group_by": "CUSTOMER_ID", "period": "HOUR"}
    bob.get(USAGE_PAGE, question)

    with CaptureQueriesContext(connection) as one:
        assert bob.get(USAGE_PAGE, question).status_code == 200

    meters_fill(scene, [index * 10 for index in range(1, 12)])
    with CaptureQueriesContext(connection) as many:
        page = bob.get(USAGE_PAGE, question).content.decode()
    with CaptureQueriesContext(connection) as download:
        assert bob.get(USAGE_CSV, question).status_code == 200

    assert len(chart(page)["datasets"]) == SERIES_SHOWN
    assert len(many) == len(one), [query["sql"] for query in many]
    assert len(download) == len(one), [query["sql"] for query in download]


@pytest.mark.django_db
def test_the_explorer_is_read_only_and_for_members_only(acme_scene, browser_as):
    adam = member("adam", (acme_scene.operator, ADMIN))
    admin, strict = browser_as(adam), browser_as(adam, enforce_csrf_checks=True)
    viewer = browser_as(member("vera", (acme_scene.operator, VIEWER)))

    for path in (USAGE_PAGE, USAGE_CSV):
        assert viewer.get(path).status_code == 200
        assert viewer.post(path).status_code == 403
        assert admin.post(path).status_code == 405  # nothing to post to
        without_token = strict.post(path)
        assert without_token.status_code == 403 and "CSRF" in without_token.content.decode()
        assert Client().get(path)["Location"] == f"/login/?next={path}"
