"""The demo `make run` loads, looked at the way its users look at it: each operator's API
client (meters, billing accounts, metrics, collectors, streams), the platform API, and
the dashboard logins. Every test loads the demo afresh (each runs in its own transaction)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from common.json import loads
from tests.conftest import ApiClient, issue_token

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

METERS = "/usage-metering/v1/meters"
ACCOUNTS = "/billing/v1/accounts"
COLLECTORS = "/online-collection/v1/collectors"
STREAMS = "/stream-management/v1/streams"
# The customer of the demo's one failed record: nobody gave it a meter.
UNKNOWN = "guest@example.com"


def load() -> dict:
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    return loads(out.getvalue())


def client_for(application: dict) -> ApiClient:
    token = issue_token(Client(), application["clientId"], application["clientSecret"])
    return ApiClient(token["access_token"])


@pytest.fixture
def demo() -> dict:
    return load()


@pytest.fixture
def main(demo) -> ApiClient:
    """The demo operator's API client."""
    return client_for(demo["application"])


@pytest.fixture
def second(demo) -> ApiClient:
    """The second operator's API client."""
    return client_for(demo["secondOperator"]["application"])


def meters(client: ApiClient, **filters) -> list[dict]:
    response = client.get(METERS, {"limit": 100, **filters})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["total"] == len(body["meters"])
    return body["meters"]


def window(days: int = 8) -> tuple[datetime, datetime]:
    """Whole hours from `days` ago to the end of this hour."""
    end = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end += timedelta(hours=1)
    return end - timedelta(days=days), end


def metrics(client: ApiClient, *queries: dict, days: int = 8) -> dict[str, dict]:
    start, end = window(days)
    response = client.post(
        "/metrics",
        {
            "startTime": start.isoformat(),
            "endTime": end.isoformat(),
            "metricQueries": list(queries),
        },
    )
    assert response.status_code == 200, response.content
    return {result["id"]: result for result in response.json()["results"]}


def series(result: dict) -> dict:
    """{group value (None when not grouped): [values]}."""
    return {
        item.get("groupedBy", {}).get("fieldValue"): item["metricValues"] for item in result["data"]
    }


def by_type(found: list[dict]) -> dict[str, dict[str, dict]]:
    """Meters by meter type name, then by user id."""
    grouped: dict[str, dict[str, dict]] = {}
    for meter in found:
        grouped.setdefault(meter["meterTypeName"], {})[meter["userId"]] = meter
    return grouped


def test_several_named_customers_each_have_a_billing_account_and_meters(demo, main):
    customers = demo["demo"]["metering"]["customers"]
    assert 5 <= len(customers) <= 8
    assert "carol@example.com" in customers

    accounts = main.get(ACCOUNTS, {"limit": 100}).json()["accounts"]
    assert sorted(account["customerId"] for account in accounts) == sorted(customers)
    assert all(account["name"] for account in accounts)
    assert {account["invoiceCurrency"] for account in accounts} >= {"EUR"}
    # Every customer has a meter of every demo type.
    grouped = by_type(meters(main))
    assert set(grouped) == {"API calls", "Storage", "Pages printed"}
    for by_user in grouped.values():
        assert set(by_user) == set(customers)


def test_a_week_of_print_jobs_went_through_the_demo_stream_into_the_meters(demo, main):
    streams = demo["demo"]["streams"]
    sent = streams["records"]["sent"]
    stats = main.get(f"{COLLECTORS}/{streams['collector']['id']}/stats").json()
    assert stats["counts"] == {
        "UNPROCESSED": 0,
        "IN_PROGRESS": 0,
        "PROCESSED": sent - 1,
        "FAILED": 1,
    }

    # Spread over the week, by the hour (the ingestion chart's data).
    result = metrics(main, {"id": "hourly", "name": "EVENTS", "aggregationPeriod": "HOUR"}, days=8)[
        "hourly"
    ]
    (hourly,) = series(result).values()
    assert sum(hourly) == sent - 1
    busy_hours = [
        stamp for stamp, count in zip(result["data"][0]["timestamps"], hourly, strict=True) if count
    ]
    assert len(busy_hours) > 48
    assert len({stamp[:10] for stamp in busy_hours}) >= 7

    # What the stream metered is what the usage rollups hold: each customer's printing,
    # current period plus any closed one, equals its usage over the week.
    printing = by_type(meters(main, meterKey=streams["meterKey"]))["Pages printed"]
    usage = series(
        metrics(
            main,
            {
                "id": "pages",
                "name": "USAGE",
                "aggregationPeriod": "MONTH",
                "groupBy": "CUSTOMER_ID",
                "filters": [{"fieldName": "USAGE_METER_ID", "fieldValues": ["Pages printed"]}],
            },
        )["pages"]
    )
    weekly = {}
    for customer, meter in printing.items():
        closed = main.get(f"{METERS}/{meter['id']}/periods").json()["periods"]
        metered = Decimal(str(meter["value"])) + sum(Decimal(str(p["value"])) for p in closed)
        assert metered == sum(Decimal(str(value)) for value in usage[customer]), customer
        weekly[customer] = metered / Decimal(str(meter["capacity"]))
        # Each job names its printer: the meter breaks its pages down by printer.
        assert {group["group"] for group in meter["groupBreakdowns"]} <= set(streams["printers"])
        assert sum(Decimal(str(group["value"])) for group in meter["groupBreakdowns"]) == Decimal(
            str(meter["value"])
        )
    # Customers print at different rates: some near or past the capacity, some far below.
    assert max(weekly.values()) >= Decimal("0.8") > min(weekly.values()) > 0


def test_the_demo_usage_fired_threshold_alerts(demo, main):
    Alert = apps.get_model("metering", "Alert")
    Notification = apps.get_model("metering", "Notification")
    operator_id = demo["operator"]["id"]
    alerts = Notification.objects.filter(
        operator_id=operator_id, kind=Notification.Kind.THRESHOLD_CROSSED
    )
    assert alerts.exists()
    assert {payload["meterId"] for payload in alerts.values_list("payload", flat=True)} <= {
        meter["id"] for meter in meters(main)
    }

    # The stream's meters alert where their usage crossed 90 % of the capacity, and the
    # alert went down the meter node's threshold output into the stream's log.
    stream = demo["demo"]["streams"]
    printing = by_type(meters(main, meterKey=stream["meterKey"]))["Pages printed"]
    crossed = {meter["id"] for meter in printing.values() if meter["value"] >= 900}
    fired = set(
        Alert.objects.filter(meter_id__in=[m["id"] for m in printing.values()]).values_list(
            "meter_id", flat=True
        )
    )
    assert {str(meter_id) for meter_id in fired} == crossed
    logged = main.get(f"{STREAMS}/{stream['stream']['id']}/logs", {"limit": 100}).json()["logs"]
    alerted = {line["payload"]["id"] for line in logged if line["nodeId"] == "alerts"}
    assert alerted == crossed


def test_a_daily_meter_type_has_closed_periods(demo, main):
    storage = by_type(meters(main))["Storage"]
    now = timezone.now()
    for meter in storage.values():
        periods = main.get(f"{METERS}/{meter['id']}/periods").json()["periods"]
        assert len(periods) >= 6
        for period in periods:
            end = datetime.fromisoformat(period["periodEnd"].replace("Z", "+00:00"))
            assert end <= now
            assert end - datetime.fromisoformat(period["periodStart"].replace("Z", "+00:00")) <= (
                timedelta(days=1)
            )
    Notification = apps.get_model("metering", "Notification")
    assert Notification.objects.filter(
        operator_id=demo["operator"]["id"], kind=Notification.Kind.PERIOD_CLOSED
    ).exists()


def test_one_record_failed_in_the_stream_with_its_node_and_reason(demo, main):
    streams = demo["demo"]["streams"]
    failed_status = {"fieldName": "EVENT_STATUS", "fieldValues": ["FAILED"]}
    results = metrics(
        main,
        {
            "id": "all",
            "name": "EVENTS",
            "aggregationPeriod": "MONTH",
            "groupBy": "SCHEMA_NAME",
            "filters": [failed_status],
        },
        {
            "id": "guest",
            "name": "EVENTS",
            "aggregationPeriod": "MONTH",
            "filters": [failed_status, {"fieldName": "CUSTOMER_ID", "fieldValues": [UNKNOWN]}],
        },
    )
    assert {kind: sum(values) for kind, values in series(results["all"]).items()} == {
        "print_job": 1
    }
    assert [sum(values) for values in series(results["guest"]).values()] == [1]
    Record = apps.get_model("collection", "Record")
    (reason,) = Record.objects.filter(
        collector_id=streams["collector"]["id"], status=Record.Status.FAILED
    ).values_list("failure_reason", flat=True)
    assert reason.startswith(f"Meter (meter): No meter for user {UNKNOWN} in category Printing")


def test_a_batch_stream_has_run_once(demo, main):
    batch = demo["demo"]["streams"]["batchStream"]
    executions = main.get(f"{STREAMS}/{batch['id']}/executions").json()["executions"]
    assert [(e["status"], e["recordsRead"], e["recordsFailed"]) for e in executions] == [
        ("SUCCEEDED", 3, 0)
    ]


def test_the_platform_api_has_figures_for_both_operators(demo, api_client, platform_key):
    platform = api_client(platform_key)
    summary = platform.get("/platform-api/metrics/summary").json()
    sent = demo["demo"]["streams"]["records"]["sent"]
    second_sent = demo["secondOperator"]["demo"]["streams"]["records"]["sent"]
    assert summary["eventsIngested"] == sent + second_sent
    assert summary["apiCalls"] > 0
    assert summary["gatewayRequests"] > 0
    assert summary["activeConnections"] >= 2

    figures = {
        item["name"]: item
        for item in platform.get("/platform-api/metrics/operators").json()["operators"]
    }
    for name, events in (
        (demo["operator"]["name"], sent),
        (demo["secondOperator"]["name"], second_sent),
    ):
        assert figures[name]["eventsIngested"] == events
        assert figures[name]["apiCalls"] > 0
        assert figures[name]["lastActiveAt"]
    # The week before today, in the billing report.
    today = timezone.now().date()
    report = platform.get(
        "/platform-api/usage/report",
        {"start": (today - timedelta(days=7)).isoformat(), "end": today.isoformat()},
    )
    assert report.status_code == 200, report.content
    lines = {line["name"]: line for line in report.json()["operators"]}
    for name in (demo["operator"]["name"], demo["secondOperator"]["name"]):
        assert sum(lines[name]["apiCallsByCategory"].values()) > 0
        assert lines[name]["eventsByType"]["print_job"] > 0
    connectors = {
        item["id"]: item
        for item in platform.get("/platform-api/metrics/connectors").json()["connectors"]
    }
    assert connectors["online-collection"]["connections"]["active"] == 2
    assert connectors["webhook"]["connections"]["total"] == 2


def test_the_second_operator_sees_only_its_own_data(demo, main, second):
    own = demo["secondOperator"]["demo"]["metering"]["customers"]
    assert {meter["userId"] for meter in meters(second)} == set(own)
    assert not set(own) & set(demo["demo"]["metering"]["customers"])
    assert {a["customerId"] for a in second.get(ACCOUNTS).json()["accounts"]} == set(own)
    usage = metrics(second, {"id": "u", "name": "USAGE", "groupBy": "CUSTOMER_ID"})["u"]
    assert set(series(usage)) == set(own)

    # Each operator's objects are another's 404s.
    their_collector = demo["secondOperator"]["demo"]["streams"]["collector"]["id"]
    assert main.get(f"{COLLECTORS}/{their_collector}").status_code == 404
    their_meter = meters(second)[0]["id"]
    assert main.get(f"{METERS}/{their_meter}").status_code == 404
    our_stream = demo["demo"]["streams"]["stream"]["id"]
    assert second.get(f"{STREAMS}/{our_stream}").status_code == 404


def test_the_demo_logins_sign_in_with_their_roles(demo):
    Membership = apps.get_model("tenants", "OperatorMembership")
    main_name, second_name = demo["operator"]["name"], demo["secondOperator"]["name"]
    users = {user["username"]: user for user in demo["users"]}
    assert set(users) == {"demo-admin", "demo-viewer", "both"}
    expected = {
        "demo-admin": {main_name: "admin"},
        "demo-viewer": {main_name: "viewer"},
        "both": {main_name: "viewer", second_name: "admin"},
    }
    for username, user in users.items():
        assert user["memberships"] == expected[username]
        signed_in = authenticate(username=username, password=user["password"])
        assert signed_in is not None and not signed_in.is_staff
        held = dict(Membership.objects.filter(user=signed_in).values_list("operator__name", "role"))
        assert held == expected[username]
    staff = demo["staff"]
    assert authenticate(username="admin", password=staff["password"]).is_staff


def test_existing_demo_users_keep_their_passwords(django_user_model):
    django_user_model.objects.create_user(username="demo-viewer", password="kept-pw-123")

    printed = load()

    (viewer,) = [user for user in printed["users"] if user["username"] == "demo-viewer"]
    assert viewer["password"] is None
    assert authenticate(username="demo-viewer", password="kept-pw-123") is not None
