"""Metric definitions in the admin, as staff use them: the list with each metric's
index status, the add and change forms checked as the API checks a definition and
saved through its services, soft deletes, and a metric's value for a chosen customer
(the API's value, or why there is none)."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.json import dumps_text
from reporting.models import MetricDefinition
from tests.reporting.metric_helpers import (
    METRICS,
    backfill,
    create_metric,
    processed_collector,
    send_and_process,
    value_of,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

ADMIN = "/admin/reporting/metricdefinition/"
BASE = (timezone.now() - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


def at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


RECORDS = [
    {"id": "r1", "timestamp": at(1), "type": "api_call", "customerId": "c1",
     "tokens": {"output": 10}, "model": "gpt-4"},
    {"id": "r2", "timestamp": at(2), "type": "api_call", "customerId": "c1",
     "tokens": {"output": 2.5}, "model": "gpt-3"},
    {"id": "r3", "timestamp": at(5), "type": "api_call", "customerId": "c1",
     "tokens": {"output": 7}, "model": "gpt-4"},
    {"id": "r4", "timestamp": at(1), "type": "api_call", "customerId": "c2",
     "tokens": {"output": 100}, "model": "gpt-4"},
]  # fmt: skip

TOKENS_SUM = {
    "queryType": "simple",
    "aggregationType": "SUM",
    "eventName": "api_call",
    "valueProperty": "$.tokens.output",
}
TOKENS_SQL = (
    "SELECT coalesce(sum((payload->'tokens'->>'output')::numeric), 0) FROM events "
    "WHERE type = 'api_call'"
)


@pytest.fixture
def staff(staff_user) -> Client:
    """Django's test client logged in to the admin (`client` is acme's API client)."""
    browser = Client()
    browser.force_login(staff_user)
    return browser


@pytest.fixture
def collector(client) -> str:
    collector_id = processed_collector(client)
    send_and_process(client, collector_id, RECORDS)
    return collector_id


def metric(client, name: str, **fields) -> dict:
    return create_metric(client, {"name": name, **TOKENS_SUM, **fields})


def page_text(response) -> str:
    assert response.status_code == 200, response.content[:3000]
    return html.unescape(re.sub(r"\s+", " ", response.content.decode()))


def result_rows(response) -> str:
    """The list's table alone (the filters name every status too)."""
    return page_text(response).split('id="result_list"', 1)[1].split("</table>", 1)[0]


def form_errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.content[:3000]
    return {
        field: list(messages)
        for field, messages in response.context["adminform"].form.errors.items()
    }


def add_form(operator, **fields) -> dict[str, str]:
    """The add form as a browser posts it."""
    return {
        "operator": str(operator.pk),
        "name": "Output tokens",
        "description": "",
        "query_type": "simple",
        "aggregation_type": "SUM",
        "event_name": "api_call",
        "value_type": "NUMERIC",
        "value_property": "$.tokens.output",
        "filters": "",
        "sql": "",
        **fields,
    }


def change_form(stored: MetricDefinition, **fields) -> dict[str, str]:
    """The change form as a browser posts it: only the editable fields."""
    return {
        "name": stored.name,
        "description": stored.description,
        "event_name": stored.event_name,
        "value_property": stored.value_property,
        "filters": dumps_text(stored.filters) if stored.filters else "",
        "sql": stored.sql,
        **fields,
    }


def value_page(staff, metric_id: str, **params) -> dict:
    """The change page with the value form filled in; what its panel shows."""
    query = {f"value-{key}": value for key, value in params.items()}
    response = staff.get(f"{ADMIN}{metric_id}/change/", query)
    assert response.status_code == 200, response.content[:3000]
    return response.context["metric_value"]


# -- The list ----------------------------------------------------------------------------


def test_the_list_shows_each_query_type_and_the_backfill_progress(staff, client, collector):
    metric(client, "Tokens simple")
    indexed = metric(client, "Tokens indexed", queryType="indexed")
    create_metric(client, {"name": "Tokens complex", "queryType": "complex", "sql": TOKENS_SQL})
    # The scene: the backfill has walked the record ids up to 420 of 1 to 1000.
    MetricDefinition.objects.filter(pk=indexed["id"]).update(
        backfill_from=0, indexed_through=420, backfill_target=1000
    )

    rows = result_rows(staff.get(ADMIN))

    for name in ("Tokens simple", "Tokens indexed", "Tokens complex"):
        assert name in rows
    assert re.findall(r"Backfilling \d+%", rows) == ["Backfilling 42%"]
    assert "Ready" not in rows
    backfill(indexed["id"])
    rows = result_rows(staff.get(ADMIN))
    assert "Ready" in rows and "Backfilling" not in rows


def test_the_list_costs_the_same_queries_for_2_or_8_metrics(staff, client):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff.get(ADMIN).status_code == 200
        return len(captured)

    for n in range(2):
        metric(client, f"Metric {n}", queryType="indexed")
    few = queries()
    for n in range(2, 8):
        metric(client, f"Metric {n}")
    assert queries() == few


def test_filters_and_search_narrow_the_list(staff, client, globex, api_client):
    metric(client, "Acme simple", eventName="acme_call")
    metric(client, "Acme indexed", queryType="indexed")
    create_metric(
        api_client(globex.token), {"name": "Globex simple", **TOKENS_SUM, "eventName": "print"}
    )

    def names(**params) -> set[str]:
        response = staff.get(ADMIN, params)
        assert response.status_code == 200
        return {each.name for each in response.context["cl"].result_list}

    assert names() == {"Acme simple", "Acme indexed", "Globex simple"}
    assert names(query_type__exact="indexed") == {"Acme indexed"}
    assert names(index_status__exact="BACKFILLING") == {"Acme indexed"}
    assert names(aggregation_type__exact="SUM", operator__id__exact=str(globex.operator.pk)) == {
        "Globex simple"
    }
    assert names(q="acme_call") == {"Acme simple"}  # event name
    assert names(q="Globex") == {"Globex simple"}  # operator name
    assert names(q="indexed") == {"Acme indexed"}  # name


def test_deleted_metrics_are_listed_only_when_asked_for(staff, client):
    metric(client, "Kept")
    gone = metric(client, "Gone")
    assert client.post(f"{METRICS}/{gone['id']}/delete").status_code == 200

    def names(**params) -> set[str]:
        return {each.name for each in staff.get(ADMIN, params).context["cl"].result_list}

    assert names() == {"Kept"}
    assert names(state="deleted") == {"Gone"}
    assert names(state="all") == {"Kept", "Gone"}


# -- Adding and changing -----------------------------------------------------------------


def test_the_add_form_creates_an_indexed_metric_that_starts_backfilling(
    staff, client, collector, acme, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff.post(f"{ADMIN}add/", add_form(acme.operator, query_type="indexed"))

    assert response.status_code == 302, form_errors(response)
    created = MetricDefinition.objects.get(name="Output tokens")
    assert created.operator == acme.operator
    assert created.index_status == MetricDefinition.IndexStatus.BACKFILLING
    assert created.backfill_target > 0 and created.backfill_started_at is not None
    assert len(callbacks) == 1  # the backfill task, queued once the row is committed
    answer = client.get(f"{METRICS}/{created.pk}").json()
    assert answer["indexStatus"] == "BACKFILLING"
    assert answer["valueProperty"] == "$.tokens.output"
    # The task's work, then the same value as the API's.
    backfill(str(created.pk))
    assert value_page(staff, created.pk, customer="c1").value == "19.5"


def test_the_add_form_stores_filters_and_complex_sql(staff, client, collector, acme):
    filtered = add_form(
        acme.operator,
        name="GPT-4 tokens",
        filters='[{"property": "$.model", "op": "eq", "value": "gpt-4"}]',
    )
    assert staff.post(f"{ADMIN}add/", filtered).status_code == 302
    sql = add_form(
        acme.operator,
        name="Tokens by SQL",
        query_type="complex",
        aggregation_type="",
        event_name="",
        value_property="",
        sql=TOKENS_SQL,
    )
    assert staff.post(f"{ADMIN}add/", sql).status_code == 302

    gpt4 = MetricDefinition.objects.get(name="GPT-4 tokens")
    assert gpt4.filters == [{"property": "$.model", "op": "eq", "value": "gpt-4"}]
    assert value_of(client, str(gpt4.pk), "c1")["value"] == 17
    complex_metric = MetricDefinition.objects.get(name="Tokens by SQL")
    assert complex_metric.index_status == "" and complex_metric.sql == TOKENS_SQL
    assert value_of(client, str(complex_metric.pk), "c1")["value"] == 19.5


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"aggregation_type": ""}, "aggregation_type", "simple metrics need an aggregationType."),
        ({"event_name": ""}, "event_name", "simple metrics need an eventName (a record type)."),
        ({"value_property": ""}, "value_property", "SUM reads a value: valueProperty is required."),
        (
            {"value_property": "$.tokens..output"},
            "value_property",
            "valueProperty '$.tokens..output' is not a property path",
        ),
        (
            {"value_type": "STRING"},
            "aggregation_type",
            "SUM does not apply to STRING values; STRING metrics take COUNT, UNIQUE_COUNT, LATEST.",
        ),
        (
            {"filters": '[{"property": "$.model", "op": "like", "value": "gpt"}]'},
            "filters",
            "filters[0].op: op must be one of: eq, neq, gt, gte, lt, lte, in, exists.",
        ),
        ({"filters": '{"model": "gpt-4"}'}, "filters", "filters is a list of"),
        ({"sql": "SELECT 1"}, "sql", "sql is only for complex metrics."),
        (
            {"query_type": "complex", "aggregation_type": "", "value_property": "", "sql": ""},
            "sql",
            "Complex metrics need sql: one SELECT over events.",
        ),
        (
            {"query_type": "complex", "value_property": "", "sql": "DELETE FROM events"},
            "sql",
            "",
        ),
    ],
)
def test_an_invalid_definition_shows_the_api_words_on_its_field(
    staff, acme, fields, field, message
):
    response = staff.post(f"{ADMIN}add/", add_form(acme.operator, **fields))

    errors = form_errors(response)
    assert field in errors, errors
    assert any(each.startswith(message) for each in errors[field]), errors
    assert not MetricDefinition.objects.exists()


def test_a_taken_name_is_a_form_error_not_a_failure(staff, client, acme, monkeypatch):
    metric(client, "Output tokens")

    errors = form_errors(staff.post(f"{ADMIN}add/", add_form(acme.operator)))
    assert errors == {"name": ["A metric named 'Output tokens' exists already."]}

    # Taken between the form's check and the save: the service's refusal, on the form.
    from reporting import admin as reporting_admin
    from reporting.services import MetricNameTaken

    def taken_meanwhile(**fields):
        raise MetricNameTaken(fields["name"])

    monkeypatch.setattr(reporting_admin, "metric_create", taken_meanwhile)
    response = staff.post(f"{ADMIN}add/", add_form(acme.operator, name="Fresh"))
    assert form_errors(response) == {"__all__": ["A metric named 'Fresh' exists already."]}
    assert MetricDefinition.objects.count() == 1


def test_a_name_a_deleted_metric_had_is_free_again(staff, client, acme):
    gone = metric(client, "Output tokens")
    client.post(f"{METRICS}/{gone['id']}/delete")

    assert staff.post(f"{ADMIN}add/", add_form(acme.operator)).status_code == 302
    assert MetricDefinition.objects.live().get().name == "Output tokens"


def test_the_fixed_fields_cannot_change(staff, client, collector):
    made = metric(client, "Output tokens", queryType="indexed")
    backfill(made["id"])
    stored = MetricDefinition.objects.get(pk=made["id"])

    page = staff.get(f"{ADMIN}{stored.pk}/change/").content.decode()
    for fixed in ("operator", "query_type", "aggregation_type", "value_type"):
        assert f'name="{fixed}"' not in page
    assert 'name="event_name"' in page

    # Posted anyway: ignored, while the editable fields change through the service.
    response = staff.post(
        f"{ADMIN}{stored.pk}/change/",
        change_form(
            stored,
            name="Renamed",
            query_type="complex",
            aggregation_type="MAX",
            value_type="STRING",
            filters='[{"property": "$.model", "op": "eq", "value": "gpt-4"}]',
        ),
    )

    assert response.status_code == 302, form_errors(response)
    stored.refresh_from_db()
    assert (stored.name, stored.query_type, stored.aggregation_type, stored.value_type) == (
        "Renamed",
        "indexed",
        "SUM",
        "NUMERIC",
    )
    # What it counts changed: the indexed metric counts its records again.
    assert stored.index_status == MetricDefinition.IndexStatus.BACKFILLING
    backfill(made["id"])
    assert value_of(client, made["id"], "c1")["value"] == 17


def test_the_change_form_checks_the_definition_with_its_fixed_fields(staff, client):
    made = metric(client, "Output tokens")
    stored = MetricDefinition.objects.get(pk=made["id"])

    errors = form_errors(
        staff.post(f"{ADMIN}{stored.pk}/change/", change_form(stored, value_property=""))
    )

    assert errors == {"value_property": ["SUM reads a value: valueProperty is required."]}
    stored.refresh_from_db()
    assert stored.value_property == "$.tokens.output"


def test_renaming_onto_a_taken_name_is_a_form_error(staff, client):
    metric(client, "Taken")
    made = metric(client, "Mine")
    stored = MetricDefinition.objects.get(pk=made["id"])

    errors = form_errors(
        staff.post(f"{ADMIN}{stored.pk}/change/", change_form(stored, name="Taken"))
    )

    assert errors == {"name": ["A metric named 'Taken' exists already."]}


# -- Deleting ----------------------------------------------------------------------------


def test_deleting_is_soft_and_the_api_answers_404(staff, client, collector):
    made = metric(client, "Output tokens", queryType="indexed")
    backfill(made["id"])

    confirm = staff.get(f"{ADMIN}{made['id']}/delete/")
    assert confirm.status_code == 200
    # Only the definition is listed: its rollups are an index, not records to review.
    (listed,) = confirm.context["deleted_objects"]
    assert "Output tokens" in listed
    assert dict(confirm.context["model_count"]) == {"metric definitions": 1}

    assert staff.post(f"{ADMIN}{made['id']}/delete/", {"post": "yes"}).status_code == 302

    stored = MetricDefinition.objects.get(pk=made["id"])
    assert stored.deleted_at is not None
    assert stored.index_status == ""
    assert client.get(f"{METRICS}/{made['id']}").status_code == 404
    # Kept for the record: read-only, and not deleted twice.
    page = staff.get(f"{ADMIN}{made['id']}/change/")
    assert page.status_code == 200
    assert 'name="name"' not in page.content.decode()
    assert "metric_value" not in page.context  # a deleted metric has no value
    assert staff.get(f"{ADMIN}{made['id']}/delete/").status_code == 403


def test_the_delete_action_deletes_softly_through_the_service(staff, client):
    first, second = metric(client, "First"), metric(client, "Second")
    kept = metric(client, "Kept")

    response = staff.post(
        ADMIN,
        {
            "action": "delete_selected",
            "_selected_action": [first["id"], second["id"]],
            "post": "yes",
        },
    )

    assert response.status_code == 302
    assert MetricDefinition.objects.count() == 3
    assert set(MetricDefinition.objects.live().values_list("name", flat=True)) == {"Kept"}
    assert client.get(f"{METRICS}/{first['id']}").status_code == 404
    assert client.get(f"{METRICS}/{kept['id']}").status_code == 200


# -- The value for a chosen customer ---------------------------------------------------------


def test_the_value_form_shows_the_value_the_api_answers(staff, client, collector):
    simple = metric(client, "Tokens simple")
    indexed = metric(client, "Tokens indexed", queryType="indexed")
    backfill(indexed["id"])
    sql = create_metric(
        client, {"name": "Tokens complex", "queryType": "complex", "sql": TOKENS_SQL}
    )

    for made in (simple, indexed, sql):
        shown = value_page(staff, made["id"], customer="c1", timeframe="ALL")
        assert shown.value == "19.5", (made["name"], shown)
        assert shown.covers == "Customer c1, all time."
        assert value_of(client, made["id"], "c1")["value"] == 19.5
    assert value_page(staff, simple["id"], customer="c2").value == "100"
    assert value_page(staff, simple["id"], customer="nobody").value == "0"

    ranged = value_page(
        staff, indexed["id"], customer="c1", timeframe="RANGE", start=at(0), end=at(3)
    )
    assert ranged.value == "12.5"
    assert ranged.covers.startswith("Customer c1, ")
    page = page_text(staff.get(f"{ADMIN}{simple['id']}/change/", {"value-customer": "c1"}))
    assert 'id="metric-value-number">19.5<' in page


def test_the_value_form_answers_a_get_and_keeps_the_change_form(staff, client, collector):
    made = metric(client, "Tokens simple")

    page = staff.get(f"{ADMIN}{made['id']}/change/").content.decode()

    form = re.search(r'<form method="get"[^>]*id="metric-value-form"', page)
    assert form is not None
    assert 'name="value-customer"' in page
    assert 'name="name"' in page  # the change form is still there


def test_a_backfilling_metric_shows_its_progress_and_no_value(staff, client, collector):
    made = metric(client, "Tokens indexed", queryType="indexed")

    page = page_text(staff.get(f"{ADMIN}{made['id']}/change/"))
    assert "Backfilling 0%" in page
    assert "backfill progress" in page.lower()
    stored = MetricDefinition.objects.get(pk=made["id"])
    assert f"record id 0 of {stored.backfill_target}" in page

    shown = value_page(staff, made["id"], customer="c1")
    assert shown.value is None
    assert shown.problem.startswith("The metric is backfilling: its rollups cover 0%")
    assert "The metric is backfilling" in page_text(
        staff.get(f"{ADMIN}{made['id']}/change/", {"value-customer": "c1"})
    )

    backfill(made["id"])
    ready = page_text(staff.get(f"{ADMIN}{made['id']}/change/"))
    assert "every record" in ready and "100%" in ready
    assert value_page(staff, made["id"], customer="c1").value == "19.5"


def test_a_customer_without_a_cycle_is_told_so(staff, client, collector):
    made = metric(client, "Tokens simple")

    shown = value_page(staff, made["id"], customer="c1", timeframe="CURRENT_CYCLE")

    assert shown.value is None
    assert shown.problem.startswith("The customer has no current pricing cycle")


def test_a_failing_sql_metric_says_why(staff, client, collector):
    made = create_metric(
        client,
        {
            "name": "Broken",
            "queryType": "complex",
            "sql": "SELECT (payload->>'model')::numeric FROM events WHERE type = 'api_call' "
            "LIMIT 1",
        },
    )

    shown = value_page(staff, made["id"], customer="c1")

    assert shown.value is None
    assert shown.problem_kind == "error"
    assert shown.problem.startswith("The metric's SQL failed: ")


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"customer": ""}, {"customer": ["This field is required."]}),
        (
            {"customer": "c1", "timeframe": "RANGE"},
            {"start": ["A range needs its start."], "end": ["A range needs its end."]},
        ),
        (
            {"customer": "c1", "timeframe": "RANGE", "start": at(3), "end": at(1)},
            {"end": ["end must be after start."]},
        ),
        ({"customer": "c1", "timeframe": "WEEK"}, {"timeframe": None}),
    ],
)
def test_the_value_form_says_what_is_missing(staff, client, params, errors):
    made = metric(client, "Tokens simple")

    shown = value_page(staff, made["id"], **params)

    assert shown.value is None
    assert set(shown.form.errors) == set(errors)
    for field, messages in errors.items():
        if messages is not None:
            assert shown.form.errors[field] == messages


def test_only_staff_who_may_view_metrics_see_values(staff, client, collector):
    made = metric(client, "Tokens simple")
    url = f"{ADMIN}{made['id']}/change/?value-customer=c1"
    clerk = User.objects.create_user(username="clerk", password="x", is_staff=True)
    browser = Client()
    browser.force_login(clerk)

    assert browser.get(url).status_code == 403

    clerk.user_permissions.add(Permission.objects.get(codename="view_metricdefinition"))
    clerk = User.objects.get(pk=clerk.pk)  # permissions are cached on the user
    browser.force_login(clerk)
    response = browser.get(url)
    assert response.status_code == 200
    assert response.context["metric_value"].value == "19.5"
    assert 'name="name"' not in response.content.decode()  # view only
