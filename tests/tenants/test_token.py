"""POST /oauth/token: the client-credentials flow and every way a request can be wrong."""

from __future__ import annotations

import base64

import pytest
from django.test import Client
from oauth2_provider.models import AccessToken
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from tenants.models import Operator
from tenants.services import application_access_create, operator_create, operator_set_status
from tests.conftest import AUDIENCE, assert_error_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def app_credentials(db):
    operator = operator_create(name="Initech")
    issued = application_access_create(
        operator=operator, name="billing", scopes=["read:meters", "metrics:read"]
    )
    return operator, issued.client_id, issued.client_secret


def token_body(client_id: str, client_secret: str, /, **overrides) -> dict:
    body = {
        "client_id": client_id,
        "client_secret": client_secret,
        "grant_type": "client_credentials",
        "audience": AUDIENCE,
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def post_json(body) -> object:
    return Client().post("/oauth/token", body, content_type="application/json")


def post_form(body) -> object:
    from urllib.parse import urlencode

    return Client().post(
        "/oauth/token", urlencode(body), content_type="application/x-www-form-urlencoded"
    )


def assert_oauth_error(response, status: int, code: str) -> dict:
    body = assert_error_body(response, status)
    assert body["error"] == code
    assert body["error_description"] == body["message"]
    assert response["Cache-Control"] == "no-store"
    return body


@pytest.mark.parametrize("send", [post_json, post_form], ids=["json", "form"])
def test_token_is_issued_with_the_applications_scopes(app_credentials, send):
    _, client_id, secret = app_credentials

    response = send(token_body(client_id, secret))

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "scope", "token_type"}
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"
    assert body["scope"].split() == ["usage-metering:read:meters", "metrics:read"]
    assert response["Cache-Control"] == "no-store"


def test_token_is_stored_only_as_a_checksum(app_credentials):
    _, client_id, secret = app_credentials
    raw = post_json(token_body(client_id, secret)).json()["access_token"]

    stored = AccessToken.objects.get()
    assert stored.token == ""
    assert raw not in stored.token_checksum


def test_client_secret_is_stored_hashed(app_credentials):
    operator, _client_id, secret = app_credentials
    application = operator.application_accesses.get().application
    assert application.client_secret != secret
    assert secret not in application.client_secret


def test_http_basic_client_authentication_is_accepted(app_credentials):
    _, client_id, secret = app_credentials
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()

    response = Client().post(
        "/oauth/token",
        {"grant_type": "client_credentials", "audience": AUDIENCE},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )

    assert response.status_code == 200, response.content


def test_audience_may_carry_a_trailing_slash(app_credentials):
    _, client_id, secret = app_credentials
    assert post_json(token_body(client_id, secret, audience=AUDIENCE + "/")).status_code == 200


def test_a_narrower_scope_can_be_requested(app_credentials):
    _, client_id, secret = app_credentials
    response = post_json(token_body(client_id, secret, scope="metrics:read"))
    assert response.status_code == 200
    assert response.json()["scope"] == "metrics:read"


def test_a_scope_the_application_lacks_is_refused(app_credentials):
    _, client_id, secret = app_credentials
    response = post_json(token_body(client_id, secret, scope="usage-metering:delete:meters"))
    assert_oauth_error(response, 400, "invalid_scope")
    assert AccessToken.objects.count() == 0


def test_an_application_with_no_scopes_gets_a_token_with_none(db):
    operator = operator_create(name="Empty")
    issued = application_access_create(operator=operator, name="none", scopes=[])
    response = post_json(token_body(issued.client_id, issued.client_secret))
    assert response.status_code == 200
    assert response.json()["scope"] == ""


def test_wrong_secret_is_401_invalid_client(app_credentials):
    _, client_id, _ = app_credentials
    response = post_json(token_body(client_id, "not-the-secret"))
    assert_oauth_error(response, 401, "invalid_client")
    assert "WWW-Authenticate" in response


def test_unknown_client_is_401_invalid_client(db):
    response = post_json(token_body("no-such-client", "whatever"))
    assert_oauth_error(response, 401, "invalid_client")


def test_suspended_operator_gets_no_token(app_credentials):
    operator, client_id, secret = app_credentials
    operator_set_status(operator=operator, status=Operator.Status.SUSPENDED)
    response = post_json(token_body(client_id, secret))
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize("missing", ["client_id", "client_secret", "grant_type", "audience"])
def test_missing_field_is_400_invalid_request(app_credentials, missing):
    _, client_id, secret = app_credentials
    response = post_json(token_body(client_id, secret, **{missing: None}))
    body = assert_oauth_error(response, 400, "invalid_request")
    assert missing in body["message"]


def test_empty_field_is_400_invalid_request(app_credentials):
    _, client_id, _secret = app_credentials
    assert_oauth_error(post_json(token_body(client_id, "")), 400, "invalid_request")


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "CLIENT_CREDENTIALS"])
def test_other_grant_types_are_400_unsupported_grant_type(app_credentials, grant_type):
    _, client_id, secret = app_credentials
    response = post_json(token_body(client_id, secret, grant_type=grant_type))
    assert_oauth_error(response, 400, "unsupported_grant_type")


def test_wrong_audience_is_400(app_credentials):
    _, client_id, secret = app_credentials
    response = post_json(token_body(client_id, secret, audience="https://elsewhere.example"))
    body = assert_oauth_error(response, 400, "invalid_request")
    assert AUDIENCE in body["message"]


@pytest.mark.parametrize(
    "raw, content_type",
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"client_id": 5}', "application/json"),
        (b"client_id=a&client_id=b", "application/x-www-form-urlencoded"),
        (b"client_id=a", "text/plain"),
        (b'{"client_id": "a", "color": "blue"}', "application/json"),
    ],
    ids=["bad-json", "not-object", "number", "repeated", "content-type", "unknown-field"],
)
def test_malformed_bodies_are_400_invalid_request(db, raw, content_type):
    response = Client().post("/oauth/token", raw, content_type=content_type)
    assert_oauth_error(response, 400, "invalid_request")


def test_malformed_basic_header_is_401(db):
    response = Client().post(
        "/oauth/token",
        {"grant_type": "client_credentials", "audience": AUDIENCE},
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic !!!",
    )
    assert_oauth_error(response, 401, "invalid_client")


def test_get_is_405(db):
    response = Client().get("/oauth/token")
    assert_error_body(response, 405)
    assert response["Allow"] == "POST"


def test_oversized_body_is_413(db):
    response = Client().post(
        "/oauth/token", b'{"client_id": "' + b"x" * 20000 + b'"}', content_type="application/json"
    )
    assert_error_body(response, 413)


def test_token_endpoint_defaults_to_ten_per_second_burst_five(settings):
    from config.rate_limits import DEFAULT_RATE_LIMITS

    assert DEFAULT_RATE_LIMITS["token"] == {"rate": 10, "burst": 5}


def test_token_requests_are_rate_limited_per_client_id(app_credentials, settings):
    settings.TALLY["RATE_LIMITS"]["token"] = {"rate": 0.01, "burst": 5}
    _, client_id, secret = app_credentials
    statuses = [post_json(token_body(client_id, "wrong")).status_code for _ in range(7)]
    # The first five are judged on their merits, then the bucket is dry.
    assert statuses == [401] * 5 + [429] * 2
    limited = post_json(token_body(client_id, secret))
    body = assert_oauth_error(limited, 429, "slow_down")
    assert body["status"] == 429
    assert int(limited["Retry-After"]) >= 1
    assert limited["RateLimit-Remaining"] == "0"
    # Another client id has its own bucket.
    assert post_json(token_body("another-client", "x")).status_code == 401


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("token_path", ["/oauth/token", "/authentication/v1/oauth/token"])
def test_client_credentials_flow_against_a_live_server(
    live_server, settings, monkeypatch, token_path
):
    """A real OAuth2 client library gets a token over HTTP, then calls the API with it,
    at Tally's path and at the one the reference product's clients use."""
    from tests.conftest import make_tenant

    # The test server speaks plain HTTP on loopback.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")

    tenant = make_tenant("Live")
    settings.TALLY["API_AUDIENCE"] = live_server.url

    session = OAuth2Session(client=BackendApplicationClient(client_id=tenant.client_id))
    token = session.fetch_token(
        token_url=f"{live_server.url}{token_path}",
        client_id=tenant.client_id,
        client_secret=tenant.client_secret,
        include_client_id=True,
        audience=live_server.url,
    )

    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert "usage-metering:read:meters" in token["scope"]
    # The token works on an operator endpoint: the platform API refuses it (401), which
    # proves it was read as an operator token and not ignored.
    response = session.get(f"{live_server.url}/platform-api/settings")
    assert response.status_code == 401
    assert response.json()["status"] == 401
    listed = session.get(f"{live_server.url}/usage-metering/v1/meter-types")
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"meterTypes": [], "total": 0}

    # A form-encoded request through plain HTTP works the same way.
    import requests

    form = requests.post(
        f"{live_server.url}{token_path}",
        data={
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "grant_type": "client_credentials",
            "audience": live_server.url,
        },
        timeout=10,
    )
    assert form.status_code == 200, form.text
    bad = requests.post(
        f"{live_server.url}{token_path}",
        json={
            "client_id": tenant.client_id,
            "client_secret": "wrong",
            "grant_type": "client_credentials",
            "audience": live_server.url,
        },
        timeout=10,
    )
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_client"


REFERENCE_PATH = "/authentication/v1/oauth/token"


def test_the_reference_products_path_answers_exactly_like_oauth_token(app_credentials, settings):
    settings.TALLY["RATE_LIMITS"]["token"] = {"rate": 100, "burst": 100}
    _, client_id, secret = app_credentials
    for body, status in [
        (token_body(client_id, secret), 200),
        (token_body(client_id, "wrong"), 401),
        (token_body(client_id, secret, grant_type="password"), 400),
        (token_body(client_id, secret, audience="https://elsewhere"), 400),
    ]:
        ours = post_json(body)
        reference = Client().post(REFERENCE_PATH, body, content_type="application/json")
        assert (ours.status_code, reference.status_code) == (status, status)
        if status == 200:
            assert set(reference.json()) == set(ours.json())
            assert reference.json()["scope"] == ours.json()["scope"]
        else:
            assert reference.json() == ours.json()
    assert Client().get(REFERENCE_PATH).status_code == 405


def test_both_token_paths_share_one_rate_limit(app_credentials, settings):
    settings.TALLY["RATE_LIMITS"]["token"] = {"rate": 0.01, "burst": 4}
    _, client_id, _ = app_credentials
    statuses = []
    for path in ["/oauth/token", REFERENCE_PATH] * 3:
        response = Client().post(
            path, token_body(client_id, "wrong"), content_type="application/json"
        )
        statuses.append(response.status_code)
    assert statuses == [401] * 4 + [429] * 2
