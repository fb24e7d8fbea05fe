"""The OpenAPI 3 document at /api/schema/ and the browsable docs at /api/docs/."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

OPENAPI_JSON = "application/vnd.oai.openapi+json"
HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


@pytest.fixture
def schema() -> dict:
    response = Client().get("/api/schema/", HTTP_ACCEPT=OPENAPI_JSON)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith(OPENAPI_JSON)
    return response.json()


def test_schema_is_a_valid_openapi_3_document(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Tally API"
    assert schema["info"]["version"]
    assert isinstance(schema["paths"], dict) and schema["paths"]
    for path, item in schema["paths"].items():
        assert path.startswith("/")
        for method, operation in item.items():
            assert method in HTTP_METHODS | {"parameters"}, (path, method)
            if method in HTTP_METHODS:
                assert operation["operationId"], (path, method)
                assert operation["responses"], (path, method)

    try:
        from openapi_spec_validator import validate
    except ImportError:  # not a dependency; the structural checks above still run
        return
    validate(schema)


def test_schema_is_also_served_as_json_by_format_parameter():
    response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_schema_describes_the_platform_settings_endpoint(schema):
    item = schema["paths"]["/platform-api/settings"]

    assert {"get", "put"} <= set(item)
    assert not {"post", "delete"} & set(item)
    for method in ("get", "put"):
        assert item[method]["security"] == [{"platformKey": []}]
    body = item["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = schema["components"]["schemas"][body.rsplit("/", 1)[-1]]
    assert set(request_schema["properties"]) == {"name", "contactEmail", "webhookUrl", "billing"}
    billing_ref = request_schema["properties"]["billing"]["$ref"]
    billing = schema["components"]["schemas"][billing_ref.rsplit("/", 1)[-1]]
    assert set(billing["properties"]) == {
        "apiCallWeight",
        "gatewayRequestWeight",
        "eventWeight",
        "storageGbWeight",
    }
    assert billing["properties"]["eventWeight"]["type"] == "number"
    response_ref = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    response_schema = schema["components"]["schemas"][response_ref["$ref"].rsplit("/", 1)[-1]]
    assert "updatedAt" in response_schema["properties"]


def test_schema_has_the_platform_key_and_oauth2_security_schemes(schema):
    schemes = schema["components"]["securitySchemes"]

    assert schemes["platformKey"]["type"] == "http"
    assert schemes["platformKey"]["scheme"] == "bearer"
    flow = schemes["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/oauth/token"
    assert "usage-metering:read:meters" in flow["scopes"]
    assert "metrics:write" in flow["scopes"]


def test_every_generated_operation_documents_its_error_responses(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation["responses"]
            assert {"401", "429"} <= set(responses), (path, method)
            error = responses["429"]["content"]["application/json"]["schema"]
            assert {"status", "error", "message", "details"} <= set(error["required"])


def test_schema_describes_the_token_endpoint(schema, settings):
    operation = schema["paths"]["/oauth/token"]["post"]

    assert operation["security"] == []
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "application/x-www-form-urlencoded"}
    request = content["application/json"]["schema"]
    assert set(request["properties"]) == {
        "client_id",
        "client_secret",
        "grant_type",
        "audience",
        "scope",
    }
    assert request["properties"]["grant_type"]["enum"] == ["client_credentials"]
    assert set(request["required"]) == {"client_id", "client_secret", "grant_type", "audience"}

    responses = operation["responses"]
    token = responses["200"]["content"]["application/json"]["schema"]
    assert set(token["required"]) == {"access_token", "expires_in", "scope", "token_type"}

    def error_codes(status: str) -> list[str]:
        return responses[status]["content"]["application/json"]["schema"]["properties"]["error"][
            "enum"
        ]

    assert {"invalid_request", "unsupported_grant_type", "invalid_scope"} <= set(error_codes("400"))
    assert error_codes("401") == ["invalid_client"]
    assert error_codes("429") == ["slow_down"]
    assert "Retry-After" in responses["429"]["headers"]
    assert "WWW-Authenticate" in responses["401"]["headers"]


def test_schema_operations_mention_their_rate_limit_group(schema):
    description = schema["paths"]["/platform-api/settings"]["get"]["description"]
    assert "Rate limit group `platform`" in description
    assert "Rate limit group `token`" in schema["paths"]["/oauth/token"]["post"]["description"]


def test_schema_is_served_to_callers_with_credentials(acme, platform_key):
    for token in (acme.token, platform_key):
        response = Client().get(
            "/api/schema/", HTTP_ACCEPT=OPENAPI_JSON, HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        assert response.status_code == 200, response.content


def test_docs_page_is_html(db):
    response = Client().get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "/api/schema/" in response.content.decode()


def test_docs_page_serves_its_own_assets(client):
    page = client.get("/api/docs/").content.decode()
    assert "drf_spectacular_sidecar" in page
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page


def test_root_leads_an_anonymous_visitor_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"


def test_schema_lists_the_token_endpoint_at_both_paths(schema):
    ours = schema["paths"]["/oauth/token"]["post"]
    reference = schema["paths"]["/authentication/v1/oauth/token"]["post"]
    assert ours["operationId"] != reference["operationId"]
    assert {**reference, "operationId": None} == {**ours, "operationId": None}


def test_the_schema_generates_without_warnings():
    from django.core.management import call_command

    # --fail-on-warn: an ambiguous or unresolvable part of the schema fails the suite.
    call_command("spectacular", "--fail-on-warn", "--file", "/dev/null")


@pytest.mark.parametrize("path", ["/account/nope/", "/dashboard/nope/", "/login/nope/"])
def test_unknown_browser_pages_answer_an_html_404(db, path):
    response = Client().get(path)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_unknown_api_paths_answer_a_json_404(db):
    response = Client().get("/v1/nope")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
