"""The platform API's answers are what the OpenAPI document says, no more and no less:
each documented response schema, made strict (no undocumented key, every documented key
present, millisecond UTC timestamps), validates real answers."""

from __future__ import annotations

import jsonschema
import pytest

from metering.notifications import webhook_endpoint_set
from tenants.services import operator_set_status
from tests.openapi import openapi_document, resolved, strict
from tests.reporting.platform_helpers import (
    CONNECTORS,
    OPERATORS,
    REPORT,
    SUMMARY,
    connect,
    fold,
)
from tests.streams.runtime.helpers import ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


@pytest.fixture(scope="module")
def openapi() -> dict:
    return openapi_document()


def validator(openapi: dict, path: str) -> jsonschema.Draft7Validator:
    operation = openapi["paths"][path]["get"]
    content = operation["responses"]["200"]["content"]["application/json"]["schema"]
    schema = strict(resolved(content, openapi["components"]["schemas"]))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture
def busy(api_client, acme, globex):
    """Two operators with connections, usage and a suspension."""
    client = api_client(acme.token)
    made = connect(client, collectors=2, deleted=1, http_streams=[True, False])
    ingest(client, made["collectors"][0]["id"], [{"id": "1", "type": "print"}, {"id": "2"}])
    webhook_endpoint_set(operator=globex.operator, url="https://hooks.example.com/g")
    operator_set_status(operator=globex.operator, status="suspended")
    fold()


@pytest.mark.parametrize(
    "path, params",
    [
        (SUMMARY, {}),
        (OPERATORS, {}),
        (OPERATORS, {"sortBy": "apiCalls", "sortOrder": "DESC", "limit": 1}),
        (CONNECTORS, {}),
        (REPORT, {"start": "2026-01-01", "end": "2026-12-31"}),
    ],
)
def test_answers_match_the_documented_schema(openapi, platform, busy, path, params):
    response = platform.get(path, params)
    assert response.status_code == 200, response.content

    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator(openapi, path).iter_errors(response.json())
    ]
    assert not problems, "\n".join(problems)


def test_an_operator_never_active_has_a_null_last_active_at(openapi, platform, acme):
    from tenants.models import Operator

    Operator.objects.update(last_active_at=None)
    body = platform.get(OPERATORS).json()
    assert body["operators"][0]["lastActiveAt"] is None
    assert not list(validator(openapi, OPERATORS).iter_errors(body))


def test_the_report_documents_its_csv_and_parameters(openapi):
    operation = openapi["paths"][REPORT]["get"]

    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    parameters = {item["name"]: item for item in operation["parameters"]}
    for name in ("start", "end"):
        assert parameters[name]["required"] is True
        assert parameters[name]["schema"]["format"] == "date"
    assert operation["security"] == [{"platformKey": []}]
    assert "Rate limit group `platform`" in operation["description"]


def test_the_operators_list_documents_paging_and_sorting(openapi):
    parameters = {item["name"]: item for item in openapi["paths"][OPERATORS]["get"]["parameters"]}

    assert parameters["limit"]["schema"]["maximum"] == 100
    assert parameters["sortBy"]["schema"]["enum"] == [
        "name",
        "status",
        "createdAt",
        "lastActiveAt",
        "apiCalls",
        "eventsIngested",
        "activeConnections",
    ]
    assert parameters["sortOrder"]["schema"]["enum"] == ["ASC", "DESC"]
