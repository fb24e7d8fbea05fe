"""The platform dashboard's pages for staff (`/platform/operators/`, `connectors/`,
`billing/`, `settings/`), through the browser's client: what they show equals what the
platform API answers, suspension reaches the operator's tokens, the billing downloads
are the API's bytes, settings are checked as the API checks them; and who may do what.
"""

from __future__ import annotations

import datetime
import html
import json
import re
import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.json import dumps
from reporting.platform import OPERATOR_SORTS
from reporting.web.platform_pages import OPERATORS_PER_PAGE, SORT_TITLES
from tenants.models import Operator, OperatorMembership, PlatformSettings
from tenants.services import operator_create, operator_set_status
from tests.conftest import ApiClient, make_tenant
from tests.reporting.platform_helpers import CONNECTORS, OPERATORS, REPORT, connect, fold
from tests.reporting.web.scene import events_add, member, operator_scene

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalogue", "generous_limits")]

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER
PAGES = [
    "/platform/operators/",
    "/platform/connectors/",
    "/platform/billing/",
    "/platform/settings/",
]
METER_TYPES = "/usage-metering/v1/meter-types"
SETTINGS_API = "/platform-api/settings"


def staff_member(username: str, *, may_change: bool = True):
    """A staff user; `may_change` gives the permissions the admin asks for to change
    operators and the platform settings."""
    user = member(username, staff=True)
    if may_change:
        user.user_permissions.add(
            *Permission.objects.filter(
                content_type__app_label="tenants",
                codename__in=["change_operator", "change_platformsettings"],
            )
        )
    return user


@pytest.fixture
def staff(browser_as):
    return browser_as(staff_member("alice"))


@pytest.fixture
def onlooker(browser_as):
    """Staff who may look at the platform pages but change nothing."""
    return browser_as(staff_member("olivia", may_change=False))


def csrf_token(page: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def text_of(page: str, element_id: str, closing: str = "</tr>") -> str:
    """The visible text of the element with this id, whitespace folded."""
    part = page.split(f'id="{element_id}"', 1)[1].split(closing, 1)[0]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", part.split(">", 1)[1])).split())


def row_ids(page: str, prefix: str) -> list[str]:
    return re.findall(rf'<tr [^>]*id="{prefix}-([0-9a-f-]+)"', page)


def status_change(client: Client, operator: Operator, status: str, **extra):
    return client.post(f"/platform/operators/{operator.pk}/status/", {"status": status, **extra})


# -- Who may open and change them ------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitors_are_sent_to_log_in(path):
    for method in (Client().get, Client().post):
        response = method(path)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={path}"


def test_operator_users_find_no_platform_pages_and_change_nothing(acme_scene, browser_as):
    admin = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    viewer = browser_as(member("vera", (acme_scene.operator, VIEWER)))
    PlatformSettings.load()
    before = PlatformSettings.objects.get()

    for client in (admin, viewer):
        for path in PAGES:
            assert client.get(path).status_code == 404, path
        assert status_change(client, acme_scene.operator, "suspended").status_code == 404
        response = client.post("/platform/settings/", {"name": "Taken over"})
        assert response.status_code == 404

    acme_scene.operator.refresh_from_db()
    assert acme_scene.operator.status == Operator.Status.ACTIVE
    assert PlatformSettings.objects.get().name == before.name


def test_staff_without_the_permission_may_look_and_not_change(acme_scene, onlooker):
    for path in PAGES:
        assert onlooker.get(path).status_code == 200, path
    listing = onlooker.get("/platform/operators/").content.decode()
    assert "Suspend" not in listing and "read only" in listing
    form = onlooker.get("/platform/settings/").content.decode()
    assert "Save the settings" not in form and "disabled" in form

    refused = status_change(onlooker, acme_scene.operator, "suspended")
    assert refused.status_code == 403
    assert "Nothing was changed" in refused.content.decode()
    refused = onlooker.post(
        "/platform/settings/",
        {"name": "Renamed", "contact_email": "ops@example.com", "event_weight": "5"},
    )
    assert refused.status_code == 403

    acme_scene.operator.refresh_from_db()
    assert acme_scene.operator.status == Operator.Status.ACTIVE
    assert PlatformSettings.load().name == "Tally"


def test_every_form_needs_its_csrf_token(acme_scene):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_member("alice"))

    refused = [
        status_change(browser, acme_scene.operator, "suspended"),
        browser.post("/platform/settings/", {"name": "No token", "contact_email": "a@b.example"}),
    ]
    assert [response.status_code for response in refused] == [403, 403]
    acme_scene.operator.refresh_from_db()
    assert acme_scene.operator.status == Operator.Status.ACTIVE
    assert PlatformSettings.load().name == "Tally"

    # With the token its page carries, the same change goes through.
    token = csrf_token(browser.get("/platform/operators/").content.decode())
    response = status_change(browser, acme_scene.operator, "suspended", csrfmiddlewaretoken=token)
    assert response.status_code == 302
    acme_scene.operator.refresh_from_db()
    assert acme_scene.operator.status == Operator.Status.SUSPENDED


def test_an_operator_that_does_not_exist_is_the_platforms_404(staff):
    response = staff.post(f"/platform/operators/{uuid.uuid4()}/status/", {"status": "suspended"})

    assert response.status_code == 404
    assert 'id="not-found"' in response.content.decode()


def test_a_status_change_is_only_ever_a_post(acme_scene, staff):
    path = f"/platform/operators/{acme_scene.operator.pk}/status/"

    for method in (staff.get, staff.put, staff.delete):
        assert method(path).status_code == 405
    acme_scene.operator.refresh_from_db()
    assert acme_scene.operator.status == Operator.Status.ACTIVE


# -- Operators --------------------------------------------------------------------------------


def test_the_operators_table_shows_what_the_platform_api_answers(
    acme_scene, globex_scene, staff, platform
):
    connect(ApiClient(acme_scene.tenant.token), collectors=2)
    operator_set_status(operator=globex_scene.operator, status=Operator.Status.SUSPENDED)
    fold()

    page = staff.get("/platform/operators/").content.decode()

    answer = platform.get(OPERATORS).json()
    assert answer["total"] == 2
    assert row_ids(page, "operator") == [item["id"] for item in answer["operators"]]
    for item in answer["operators"]:
        row = text_of(page, f"operator-{item['id']}")
        assert row.startswith(f"{item['name']} {item['status'].capitalize()} ")
        figures = f"{item['apiCalls']:,} {item['eventsIngested']:,} {item['activeConnections']:,}"
        assert figures in row
    acme = text_of(page, f"operator-{acme_scene.operator.pk}")
    # 6 records ingested; the scene's collector and the 2 connected through the API.
    assert " 6 3 Suspend" in acme
    assert "Reactivate" in text_of(page, f"operator-{globex_scene.operator.pk}")
    assert "2 operators, by name (ascending)" in text_of(page, "operators-shown", "</p>")


def test_operators_sort_by_every_sort_of_the_api(acme_scene, globex_scene, staff, platform):
    operator_create(name="Initech")  # never active, nothing counted
    fold()
    assert list(SORT_TITLES) == OPERATOR_SORTS  # a column for every sort the API has

    for sort_by in OPERATOR_SORTS:
        for order in ("asc", "desc"):
            page = staff.get(f"/platform/operators/?sort={sort_by}&order={order}")
            answer = platform.get(OPERATORS, {"sortBy": sort_by, "sortOrder": order.upper()})
            expected = [item["id"] for item in answer.json()["operators"]]
            assert row_ids(page.content.decode(), "operator") == expected, (sort_by, order)

    page = staff.get("/platform/operators/?sort=eventsIngested&order=asc").content.decode()
    assert 'aria-sort="ascending"' in page
    # The current column's header now sorts the other way round.
    assert "?sort=eventsIngested&amp;order=desc&amp;page=1" in page


def test_operators_are_paged(staff):
    for index in range(OPERATORS_PER_PAGE + 3):
        operator_create(name=f"Operator {index:02}")

    first = staff.get("/platform/operators/").content.decode()
    second = staff.get("/platform/operators/?page=2").content.decode()
    past = staff.get("/platform/operators/?page=9").content.decode()

    assert len(row_ids(first, "operator")) == OPERATORS_PER_PAGE
    assert "Page 1 of 2" in first and "?sort=name&amp;order=asc&amp;page=2" in first
    assert row_ids(second, "operator") == [
        str(operator.pk) for operator in Operator.objects.order_by("name")[OPERATORS_PER_PAGE:]
    ]
    assert "26\N{EN DASH}28 of 28 operators" in text_of(second, "operators-shown", "</p>")
    assert row_ids(past, "operator") == row_ids(second, "operator")  # the last page


@pytest.mark.parametrize(
    "query, said",
    [
        ("sort=size", "“size” is not a column to sort by; sorted by name instead."),
        ("order=sideways", "The order is “asc” or “desc”; ascending is shown instead."),
        ("page=first", "A page number is a whole number of 1 or more; the first is shown."),
        ("page=0", "A page number is a whole number of 1 or more; the first is shown."),
        ("page=99999999999999999999999", "1\N{EN DASH}1 of 1 operator, by name"),
    ],
)
def test_a_bad_sort_or_page_is_said_and_the_default_shown(acme_scene, staff, query, said):
    response = staff.get(f"/platform/operators/?{query}")

    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert said in page
    assert row_ids(page, "operator") == [str(acme_scene.operator.pk)]


def test_the_operators_page_costs_the_same_queries_for_more_operators(staff):
    scene = operator_scene("Acme")
    events_add(scene, [timezone.now()])
    staff.get("/platform/operators/")
    with CaptureQueriesContext(connection) as few:
        staff.get("/platform/operators/")

    for name in ("Globex", "Initech", "Umbrella", "Hooli"):
        events_add(operator_scene(name), [timezone.now()] * 2)
    fold()
    for sort_by in ("name", "apiCalls"):
        with CaptureQueriesContext(connection) as more:
            page = staff.get(f"/platform/operators/?sort={sort_by}").content.decode()
        assert len(row_ids(page, "operator")) == 5
        assert len(more) == len(few), [query["sql"] for query in more.captured_queries]


def test_no_operators_yet_says_how_to_add_one(staff):
    page = staff.get("/platform/operators/").content.decode()

    assert 'id="operators-empty"' in page and "No operators yet" in page
    assert "<table" not in page


def test_staff_suspend_an_operator_and_its_tokens_get_403_until_reactivated(
    acme_scene, staff, platform
):
    token = ApiClient(acme_scene.tenant.token)
    assert token.get(METER_TYPES).status_code == 200
    back = "/platform/operators/?sort=apiCalls&order=desc&page=1"

    response = status_change(staff, acme_scene.operator, "suspended", next=back)

    assert response.status_code == 302 and response["Location"] == back
    page = staff.get(back).content.decode()
    assert "Acme is suspended: its API tokens are refused (403)" in page
    assert "Suspended" in text_of(page, f"operator-{acme_scene.operator.pk}")
    refused = token.get(METER_TYPES)
    assert refused.status_code == 403
    assert refused.json()["status"] == 403
    (listed,) = platform.get(OPERATORS).json()["operators"]
    assert listed["status"] == "suspended"

    response = status_change(staff, acme_scene.operator, "active")

    assert response.status_code == 302 and response["Location"] == "/platform/operators/"
    assert (
        "Acme is active: its API tokens are accepted again."
        in staff.get("/platform/operators/").content.decode()
    )
    assert token.get(METER_TYPES).status_code == 200


def test_suspending_one_operator_leaves_the_others_tokens_alone(staff):
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    status_change(staff, acme.operator, "suspended")

    assert ApiClient(acme.token).get(METER_TYPES).status_code == 403
    assert ApiClient(acme.token).get("/online-collection/v1/collectors").status_code == 403
    assert ApiClient(globex.token).get(METER_TYPES).status_code == 200


@pytest.mark.parametrize("status", ["", "deleted", "SUSPENDED"])
def test_an_unknown_status_changes_nothing_and_says_so(acme_scene, staff, status):
    response = status_change(staff, acme_scene.operator, status)

    assert response.status_code == 400
    assert "is not a status (active or suspended)" in response.content.decode()
    acme_scene.operator.refresh_from_db()
    assert acme_scene.operator.status == Operator.Status.ACTIVE


@pytest.mark.parametrize(
    "back", ["https://elsewhere.example/platform/operators/", "/dashboard/", "//evil.example/"]
)
def test_after_a_change_the_list_is_shown_never_another_site(acme_scene, staff, back):
    response = status_change(staff, acme_scene.operator, "suspended", next=back)

    assert response.status_code == 302
    assert response["Location"] == "/platform/operators/"


# -- Connectors -------------------------------------------------------------------------------


def chart(page: str, canvas_id: str) -> dict:
    value = re.search(rf'id="{canvas_id}".*?data-value="([^"]*)"', page, re.S).group(1)
    return json.loads(html.unescape(value))


def test_connectors_show_what_the_platform_api_answers(acme_scene, globex_scene, staff, platform):
    connect(ApiClient(acme_scene.tenant.token), collectors=1, deleted=1)

    page = staff.get("/platform/connectors/").content.decode()

    answer = platform.get(CONNECTORS).json()["connectors"]
    drawn = chart(page, "adoption-chart")
    assert drawn["labels"] == [item["name"] for item in answer]
    assert drawn["datasets"][0]["data"] == [item["operatorsUsing"] for item in answer]
    assert drawn["datasets"][1]["data"] == [item["connections"]["active"] for item in answer]
    for item in answer:
        row = text_of(page, f"connector-{item['id']}")
        connections = item["connections"]
        assert row == (
            f"{item['name']} {item['id']} {item['direction'].capitalize()} "
            f"{item['operatorsUsing']} {connections['active']} {connections['inactive']} "
            f"{item['gatewayCalls']:,}"
        )
    # Both operators; each scene's collector and acme's new one active, acme's deleted
    # one inactive; one ingestion request per scene through them.
    assert text_of(page, "connector-online-collection").endswith(" 2 3 1 2")


def test_connectors_with_no_connection_yet_say_what_would_count(staff):
    page = staff.get("/platform/connectors/").content.decode()

    assert 'id="adoption-empty"' in page and "No connections yet" in page
    assert "<canvas" not in page
    assert 'id="connector-online-collection"' in page  # the catalogue is still listed


def test_the_connectors_page_costs_the_same_queries_for_more_operators(staff):
    operator_scene("Acme")
    staff.get("/platform/connectors/")
    with CaptureQueriesContext(connection) as few:
        staff.get("/platform/connectors/")

    for name in ("Globex", "Initech", "Umbrella"):
        connect(ApiClient(operator_scene(name).tenant.token), collectors=2, deleted=1)
    with CaptureQueriesContext(connection) as more:
        assert staff.get("/platform/connectors/").status_code == 200

    assert len(more) == len(few), [query["sql"] for query in more.captured_queries]


# -- Billing report ---------------------------------------------------------------------------


def test_the_report_opens_on_this_month_and_shows_the_apis_figures(
    acme_scene, globex_scene, staff, platform
):
    fold()
    today = timezone.now().date()
    start, end = today.replace(day=1).isoformat(), today.isoformat()

    page = staff.get("/platform/billing/").content.decode()

    assert f'name="start" value="{start}"' in page and f'name="end" value="{end}"' in page
    report = platform.get(REPORT, {"start": start, "end": end}).json()
    assert row_ids(page, "billing") == [line["id"] for line in report["operators"]]
    for line in [*report["operators"], report["totals"]]:
        row = text_of(page, f"billing-{line['id']}" if "id" in line else "billing-totals")
        api_calls = sum(line["apiCallsByCategory"].values())
        events = sum(line["eventsByType"].values())
        assert f" {api_calls:,} " in row
        assert f" {events:,} " in row
        assert row.endswith(f" {line['billableUnits']:,}")
    # This month's records of the scene (the one from 10 days ago may be last month's).
    acme_events = sum(moment.date() >= today.replace(day=1) for moment in acme_scene.event_times)
    assert f"api-call {acme_events}" in text_of(page, f"billing-{acme_scene.operator.pk}")
    assert f"csv?start={start}&amp;end={end}" in page and f"json?start={start}" in page


@pytest.mark.parametrize("extension, accept", [("csv", "text/csv"), ("json", "application/json")])
def test_the_downloads_are_the_platform_apis_answers_byte_for_byte(
    acme_scene, globex_scene, staff, platform, extension, accept
):
    fold()
    today = timezone.now().date().isoformat()
    params = {"start": "2025-12-01", "end": today}

    download = staff.get(f"/platform/billing/report.{extension}", params)
    api = platform.get(REPORT, params, HTTP_ACCEPT=accept)

    assert download.status_code == api.status_code == 200
    assert download.content == api.content
    assert download["Content-Type"] == api["Content-Type"]
    assert download["Content-Disposition"] == (
        f'attachment; filename="usage-report-2025-12-01-{today}.{extension}"'
    )
    assert "Acme" in download.content.decode() and "Globex" in download.content.decode()


@pytest.mark.parametrize(
    "params, field, said",
    [
        ({"start": "2026-03-31", "end": "2026-03-01"}, "end", "end must not be before start."),
        ({"start": "2026-3-1", "end": "2026-03-31"}, "start", "Must be a date written YYYY-MM-DD."),
        ({"start": "2026-02-30", "end": "2026-03-31"}, "start", "Must be a date written"),
        ({"start": "2025-01-01", "end": "2026-01-02"}, "end", "may span at most 366 days."),
        ({"start": "2026-03-01"}, "end", "This field is required."),
        ({"start": "2026-03-01", "end": ""}, "end", "Must be a date written YYYY-MM-DD."),
        ({"start": "2026-03-01", "end": "9999-12-31"}, "end", "end must be on or before"),
    ],
)
def test_a_bad_range_is_said_at_its_field_as_the_api_says_it(
    acme_scene, staff, platform, params, field, said
):
    for path in ("/platform/billing/", "/platform/billing/report.csv"):
        response = staff.get(path, params)

        assert response.status_code == 400
        page = html.unescape(response.content.decode())
        assert said in page
        assert 'id="billing-table"' not in page
        assert response["Content-Type"].startswith("text/html")
    # The API refuses the same input for the same field.
    api = platform.get(REPORT, params).json()
    assert field in [detail["field"] for detail in api["details"]]


def test_a_range_without_operators_says_there_is_nothing_to_bill(acme_scene, staff):
    page = staff.get("/platform/billing/", {"start": "2020-01-01", "end": "2020-01-31"})

    text = page.content.decode()
    assert page.status_code == 200
    assert 'id="billing-empty"' in text and "Nothing to bill in this range" in text
    assert "1 January 2020 to 31 January 2020, 31 days (UTC) · 0 operators" in text


def test_billable_units_show_every_digit_without_trailing_zeros(acme_scene, staff):
    fold()
    PlatformSettings.objects.update_or_create(
        id=PlatformSettings.SINGLETON_ID,
        defaults={
            "billing_event_weight": Decimal("0.1250000000"),
            "billing_api_call_weight": 0,
            "billing_gateway_request_weight": Decimal("0.0000000001"),
        },
    )
    today = timezone.now().date()
    start = (today - datetime.timedelta(days=300)).isoformat()

    page = staff.get("/platform/billing/", {"start": start, "end": today.isoformat()})
    page = page.content.decode()

    row = text_of(page, f"billing-{acme_scene.operator.pk}")
    # 6 events * 0.125 + 1 ingestion request * 0.0000000001; storage is free.
    assert row.endswith(" 0.7500000001")


def test_the_billing_page_costs_the_same_queries_for_more_operators(staff):
    events_add(operator_scene("Acme"), [timezone.now()])
    staff.get("/platform/billing/")
    with CaptureQueriesContext(connection) as few:
        staff.get("/platform/billing/")

    for name in ("Globex", "Initech", "Umbrella"):
        events_add(operator_scene(name), [timezone.now()] * 2)
    fold()
    with CaptureQueriesContext(connection) as more:
        page = staff.get("/platform/billing/").content.decode()

    assert len(row_ids(page, "billing")) == 4
    assert len(more) == len(few), [query["sql"] for query in more.captured_queries]


# -- Settings ---------------------------------------------------------------------------------


def settings_form(**changes) -> dict:
    return {
        "name": "Tally Cloud",
        "contact_email": "ops@tally.example",
        "webhook_url": "https://hooks.tally.example/platform",
        "api_call_weight": "0.0001",
        "gateway_request_weight": "2",
        "event_weight": "0.5",
        "storage_gb_weight": "12.25",
        **changes,
    }


def test_the_settings_page_shows_the_current_settings(staff):
    page = staff.get("/platform/settings/").content.decode()

    assert 'name="name" value="Tally"' in page
    # The default weights, exact and without trailing zeros (stored as 1.0000000000).
    assert 'name="api_call_weight" value="1"' in page
    assert 'name="storage_gb_weight" value="0"' in page
    assert "<title> Platform settings · Tally</title>" in page


def test_staff_change_the_settings_and_the_api_answers_them(staff, platform):
    response = staff.post("/platform/settings/", settings_form())

    assert response.status_code == 302 and response["Location"] == "/platform/settings/"
    page = staff.get("/platform/settings/").content.decode()
    assert "The platform settings are saved." in page
    assert 'name="api_call_weight" value="0.0001"' in page
    answer = json.loads(platform.get(SETTINGS_API).content, parse_float=Decimal)
    assert answer["name"] == "Tally Cloud"
    assert answer["contactEmail"] == "ops@tally.example"
    assert answer["webhookUrl"] == "https://hooks.tally.example/platform"
    assert answer["billing"] == {
        "apiCallWeight": Decimal("0.0001"),
        "gatewayRequestWeight": 2,
        "eventWeight": Decimal("0.5"),
        "storageGbWeight": Decimal("12.25"),
    }
    # An empty webhook URL clears it, as the API's PUT does.
    staff.post("/platform/settings/", settings_form(webhook_url=""))
    assert platform.get(SETTINGS_API).json()["webhookUrl"] is None


@pytest.mark.parametrize(
    "field, value, said",
    [
        ("name", "", "This field may not be blank."),
        ("name", "x" * 201, "Ensure this field has no more than 200 characters."),
        ("contact_email", "", "This field may not be blank."),
        ("contact_email", "not-an-address", "Enter a valid email address."),
        ("webhook_url", "ftp://files.example/", "Must be an http or https URL."),
        ("webhook_url", "not a url", "Enter a valid URL."),
        ("event_weight", "-1", "Ensure this value is greater than or equal to 0."),
        ("event_weight", "a lot", "Must be a number."),
        ("event_weight", "1e3", "Must be a number."),
        ("event_weight", "", "Must be a number."),
        ("api_call_weight", "0.00000000001", "Ensure that there are no more than 10 decimal"),
    ],
)
def test_bad_settings_are_said_at_their_field_and_nothing_is_saved(
    staff, platform, field, value, said
):
    before = platform.get(SETTINGS_API).content

    response = staff.post("/platform/settings/", settings_form(**{field: value}))

    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert "Nothing was saved" in page
    # The message is under the field it is about.
    around = page.split(f'name="{field}"', 1)[1].split('name="', 1)[0]
    assert said in around, around
    assert platform.get(SETTINGS_API).content == before


def test_the_api_refuses_what_the_page_refuses(staff, platform):
    """The page's rules are the API's serializer: one bad value of each kind, sent to
    both, is refused by both for the same field."""
    body = {
        "name": "Tally",
        "contactEmail": "not-an-address",
        "billing": {"eventWeight": -1},
    }
    answer = platform.put(SETTINGS_API, dumps(body)).json()
    page = staff.post(
        "/platform/settings/", settings_form(contact_email="not-an-address", event_weight="-1")
    )

    assert {detail["field"] for detail in answer["details"]} == {
        "contactEmail",
        "billing.eventWeight",
    }
    text = html.unescape(page.content.decode())
    assert "Enter a valid email address." in text
    assert "Ensure this value is greater than or equal to 0." in text
