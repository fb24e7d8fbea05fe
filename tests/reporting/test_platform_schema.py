"""The platform API's answers are what the OpenAPI document says, no more and no less:
each documented response schema, made strict (no undocumented key, every documented key
present, millisecond UTC timestamps), validates real answers."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

from metering.notifications import webhook_endpoint_set
from tenants.services import operator_set_status
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

MILLISECOND_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.fixture(scope="module")
def openapi() -> dict:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(schema, renderer_context={}))


def _resolved(node: Any, schemas: dict) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _resolved(schemas[node["$ref"].rsplit("/", 1)[1]], schemas)
        return {key: _resolved(value, schemas) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolved(value, schemas) for value in node]
    return node


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(value) for value in node]
    if not isinstance(node, dict):
        return node
    node = {key: _strict(value) for key, value in node.items()}
    if "properties" in node:
        node["additionalProperties"] = False
        node["required"] = sorted(node["properties"])
    if node.get("format") == "date-time":
        node["pattern"] = MILLISECOND_UTC
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return node


def validator(openapi: dict, path: str) -> jsonschema.Draft7Validator:
    operation = openapi["paths"][path]["get"]
    content = operation["responses"]["200"]["content"]["application/json"]["schema"]
    schema = _strict(_resolved(content, openapi["components"]["schemas"]))
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
