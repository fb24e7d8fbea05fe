"""GET/PUT /platform-api/settings: the platform profile, behind a platform API key."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tenants.models import PlatformApiKey, PlatformSettings
from tenants.services import platform_key_create, platform_key_revoke
from tests.conftest import assert_error_body

pytestmark = pytest.mark.django_db

URL = "/platform-api/settings"
ISO_MILLIS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

VALID = {
    "name": "Tally Cloud",
    "contactEmail": "ops@example.com",
    "webhookUrl": "https://hooks.example.com/tally",
}


def test_get_returns_the_platform_profile(api_client, platform_key):
    response = api_client(platform_key).get(URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"name", "contactEmail", "webhookUrl", "billing", "updatedAt"}
    assert body["name"] == "Tally"
    assert body["contactEmail"] is None
    assert body["webhookUrl"] is None
    assert ISO_MILLIS_Z.match(body["updatedAt"])


def test_put_replaces_the_profile_and_returns_it(api_client, platform_key):
    client = api_client(platform_key)

    response = client.put(URL, VALID)

    assert response.status_code == 200, response.content
    body = response.json()
    assert {key: body[key] for key in VALID} == VALID
    assert ISO_MILLIS_Z.match(body["updatedAt"])
    row = PlatformSettings.objects.get()
    assert (row.name, row.contact_email, row.webhook_url) == (
        "Tally Cloud",
        "ops@example.com",
        "https://hooks.example.com/tally",
    )
    assert client.get(URL).json() == body


def test_put_without_a_webhook_clears_it(api_client, platform_key):
    client = api_client(platform_key)
    client.put(URL, VALID)

    response = client.put(URL, {"name": "Tally", "contactEmail": "ops@example.com"})

    assert response.status_code == 200, response.content
    assert response.json()["webhookUrl"] is None
    assert PlatformSettings.objects.get().webhook_url == ""


def test_put_trims_the_name(api_client, platform_key):
    response = api_client(platform_key).put(URL, {**VALID, "name": "  Tally  "})
    assert response.status_code == 200
    assert response.json()["name"] == "Tally"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"contactEmail": "ops@example.com"}, "name"),
        ({**VALID, "name": ""}, "name"),
        ({**VALID, "name": "   "}, "name"),
        ({**VALID, "name": "x" * 201}, "name"),
        ({**VALID, "name": 42}, "name"),
        ({**VALID, "contactEmail": "not-an-email"}, "contactEmail"),
        ({"name": "Tally"}, "contactEmail"),
        ({**VALID, "webhookUrl": "ftp://x.example.com/hook"}, "webhookUrl"),
        ({**VALID, "webhookUrl": "not a url"}, "webhookUrl"),
        ({**VALID, "colour": "blue"}, "colour"),
        ({**VALID, "updatedAt": "2023-07-01T00:00:00.000Z"}, "updatedAt"),
        ({**VALID, "contact_email": "ops@example.com"}, "contact_email"),
    ],
    ids=[
        "missing-name",
        "empty-name",
        "blank-name",
        "long-name",
        "number-name",
        "bad-email",
        "missing-email",
        "ftp-webhook",
        "not-a-url-webhook",
        "unknown-field",
        "read-only-updatedAt",
        "snake-case-field",
    ],
)
def test_put_with_a_bad_field_is_400_naming_it(api_client, platform_key, body, field):
    response = api_client(platform_key).put(URL, body)

    error = assert_error_body(response, 400)
    assert field in [item["field"] for item in error["details"]], error
    assert PlatformSettings.objects.filter(name="Tally Cloud").count() == 0


def test_a_name_of_exactly_200_characters_is_accepted(api_client, platform_key):
    response = api_client(platform_key).put(URL, {**VALID, "name": "x" * 200})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"name"', b"null"], ids=["array", "string", "null"])
def test_put_with_a_body_that_is_not_an_object_is_400(api_client, platform_key, raw):
    response = api_client(platform_key).put(URL, raw)
    assert_error_body(response, 400)


def test_put_with_invalid_json_is_400(api_client, platform_key):
    response = api_client(platform_key).put(URL, b'{"name": ')
    assert_error_body(response, 400)


def test_no_credentials_is_401_with_www_authenticate(db):
    response = Client().get(URL)

    assert_error_body(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_operator_access_token_is_refused(api_client, acme):
    response = api_client(acme.token).get(URL)

    assert_error_body(response, 401)
    assert "WWW-Authenticate" in response


def test_a_revoked_key_is_refused(api_client):
    issued = platform_key_create(name="Old")
    assert api_client(issued.raw_key).get(URL).status_code == 200

    platform_key_revoke(key=issued.key)

    assert_error_body(api_client(issued.raw_key).get(URL), 401)


@pytest.mark.parametrize(
    "header",
    ["Bearer tly_platform_xxx", "Bearer tly_platform_", "Bearer not-a-key", "Bearer a b"],
    ids=["garbage-key", "bare-prefix", "no-prefix", "malformed"],
)
def test_an_unknown_key_is_refused(db, platform_key, header):
    response = Client().get(URL, HTTP_AUTHORIZATION=header)
    assert_error_body(response, 401)


def test_a_key_sent_with_another_scheme_is_not_accepted(platform_key):
    response = Client().get(URL, HTTP_AUTHORIZATION=f"Token {platform_key}")
    assert_error_body(response, 401)


@pytest.mark.parametrize("method", ["post", "delete", "patch"])
def test_other_methods_are_405_in_the_error_shape(api_client, platform_key, method):
    response = getattr(api_client(platform_key), method)(URL, VALID)

    assert_error_body(response, 405)
    assert "PUT" in response["Allow"]


def test_using_a_key_records_when_it_was_last_used(api_client, platform_key):
    key = PlatformApiKey.objects.get()
    assert key.last_used_at is None

    api_client(platform_key).get(URL)

    key.refresh_from_db()
    assert key.last_used_at is not None


@pytest.mark.urls("tests.api.urls")
def test_platform_keys_are_refused_on_operator_endpoints(api_client, platform_key, acme):
    assert api_client(acme.token).get("/test/applications").status_code == 200

    response = api_client(platform_key).get("/test/applications")

    body = assert_error_body(response, 401)
    assert "Platform API keys" in body["message"]


def test_put_with_a_null_contact_email_is_400(api_client, platform_key):
    response = api_client(platform_key).put(
        "/platform-api/settings", {"name": "Tally", "contactEmail": None}
    )
    body = assert_error_body(response, 400)
    assert body["details"][0]["field"] == "contactEmail"
