"""The conventions every operator endpoint shares, exercised through test-only endpoints."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from oauth2_provider.models import AccessToken

from tenants import services
from tenants.models import Operator
from tenants.services import application_access_create, operator_set_status
from tests.conftest import assert_error_body, make_tenant

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.urls")]


# Authentication and scopes


def test_request_without_token_is_401_with_challenge(api_client):
    response = api_client().get("/test/applications")
    assert_error_body(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-token", "Bearer a b", "Bearer "],
    ids=["unknown", "spaces", "empty"],
)
def test_invalid_token_is_401(acme, api_client, header):
    response = api_client().get("/test/applications", HTTP_AUTHORIZATION=header)
    assert_error_body(response, 401)


def test_expired_token_is_401(acme, api_client):
    AccessToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    response = api_client(acme.token).get("/test/applications")
    body = assert_error_body(response, 401)
    assert "expired" in body["message"]


def test_token_without_the_scope_is_403(db, api_client):
    tenant = make_tenant("Scoped", scopes=["metrics:read", "usage-metering:create:meters"])
    response = api_client(tenant.token).get("/test/applications")
    body = assert_error_body(response, 403)
    assert "usage-metering:read:meters" in body["message"]


def test_short_form_scope_satisfies_the_endpoint(db, api_client):
    tenant = make_tenant("Short", scopes=["read:meters"])
    from django.test import Client

    from tests.conftest import issue_token

    short_token = issue_token(Client(), tenant.client_id, tenant.client_secret, scope="read:meters")
    assert short_token["scope"] == "read:meters"
    response = api_client(short_token["access_token"]).get("/test/applications")
    assert response.status_code == 200, response.content


def test_scope_is_checked_per_method(db, api_client):
    tenant = make_tenant("Reader", scopes=["read:meters"])
    response = api_client(tenant.token).post("/test/echo", {"name": "a", "amount": 1})
    body = assert_error_body(response, 403)
    assert "usage-metering:create:meters" in body["message"]


def test_suspended_operator_token_is_403_everywhere(acme, api_client):
    operator_set_status(operator=acme.operator, status=Operator.Status.SUSPENDED)
    for method, path in (("get", "/test/applications"), ("post", "/test/echo")):
        response = getattr(api_client(acme.token), method)(path, {"name": "a", "amount": 1})
        body = assert_error_body(response, 403)
        assert "suspended" in body["message"]


def test_narrowing_an_applications_scopes_revokes_its_tokens(acme, api_client):
    from tenants.services import application_access_update_scopes

    access = acme.operator.application_accesses.get()
    application_access_update_scopes(access=access, scopes=["metrics:read"])
    assert_error_body(api_client(acme.token).get("/test/applications"), 401)


def test_api_use_records_operator_last_activity(acme, api_client):
    # The fixture's token request was activity already: start again from none.
    Operator.objects.filter(pk=acme.operator.pk).update(last_active_at=None)
    cache.delete(f"operator-active:{acme.operator.pk}")
    services._last_marked.clear()
    api_client(acme.token).get("/test/applications")
    assert Operator.objects.get(pk=acme.operator.pk).last_active_at is not None


# Tenancy


def test_list_shows_only_the_callers_operator(acme, globex, api_client):
    application_access_create(operator=acme.operator, name="second")

    acme_ids = {
        a["clientId"]
        for a in api_client(acme.token).get("/test/applications").json()["applications"]
    }
    globex_ids = {
        a["clientId"]
        for a in api_client(globex.token).get("/test/applications").json()["applications"]
    }

    assert acme.client_id in acme_ids and len(acme_ids) == 2
    assert globex_ids == {globex.client_id}


# Pagination and sorting


@pytest.fixture
def many_applications(acme):
    for index in range(24):
        application_access_create(operator=acme.operator, name=f"app {index}")
    return acme


def test_list_defaults_to_twenty_items_with_total(many_applications, api_client):
    body = api_client(many_applications.token).get("/test/applications").json()
    assert set(body) == {"applications", "total"}
    assert body["total"] == 25
    assert len(body["applications"]) == 20


def test_limit_and_skip_page_through_every_item_once(many_applications, api_client):
    client = api_client(many_applications.token)
    seen = []
    for skip in range(0, 25, 7):
        page = client.get("/test/applications", {"limit": 7, "skip": skip}).json()
        seen.extend(item["id"] for item in page["applications"])
    assert len(seen) == len(set(seen)) == 25


def test_skip_past_the_end_is_an_empty_page(many_applications, api_client):
    body = api_client(many_applications.token).get("/test/applications", {"skip": 500}).json()
    assert body == {"applications": [], "total": 25}


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": -1}, "limit"),
        ({"skip": "-5"}, "skip"),
        ({"skip": "1.5"}, "skip"),
        ({"sortBy": "secret"}, "sortBy"),
        ({"sortOrder": "UP"}, "sortOrder"),
    ],
)
def test_bad_list_parameters_are_400(acme, api_client, params, field):
    response = api_client(acme.token).get("/test/applications", params)
    body = assert_error_body(response, 400)
    assert body["details"][0]["field"] == field


def test_limit_of_one_hundred_is_allowed(acme, api_client):
    assert api_client(acme.token).get("/test/applications", {"limit": 100}).status_code == 200


def test_sort_order_desc_reverses_the_list(many_applications, api_client):
    client = api_client(many_applications.token)
    ascending = client.get("/test/applications", {"limit": 100, "sortBy": "createdAt"}).json()
    descending = client.get(
        "/test/applications", {"limit": 100, "sortBy": "createdAt", "sortOrder": "desc"}
    ).json()
    ids = [item["id"] for item in ascending["applications"]]
    assert ids == [item["id"] for item in reversed(descending["applications"])]


def test_list_query_count_does_not_grow_with_items(
    many_applications, api_client, django_assert_max_num_queries
):
    client = api_client(many_applications.token)
    # token lookup, last-active gate, count, page
    with django_assert_max_num_queries(5):
        client.get("/test/applications", {"limit": 100})


# Representation


def test_timestamps_are_utc_with_milliseconds(acme, api_client):
    item = api_client(acme.token).get("/test/applications").json()["applications"][0]
    created = item["createdAt"]
    assert created.endswith("Z") and len(created) == len("2023-07-01T00:00:00.000Z")


def test_numbers_stay_exact_decimals_on_the_wire(acme, api_client):
    # A float would come back as 12345678901234568.
    response = api_client(acme.token).post(
        "/test/echo", b'{"name": "a", "amount": 12345678901234567.25}'
    )
    assert response.status_code == 201, response.content
    assert b'"amount":12345678901234567.25' in response.content

    whole = api_client(acme.token).post("/test/echo", {"name": "a", "amount": 1000})
    assert b'"amount":1000}' in whole.content or b'"amount":1000,' in whole.content


# Bad input


@pytest.mark.parametrize(
    "body, field",
    [
        ({"amount": 1}, "name"),
        ({"name": "a" * 11, "amount": 1}, "name"),
        ({"name": 12, "amount": 1}, "name"),
        ({"name": "a", "amount": "12"}, "amount"),
        ({"name": "a", "amount": True}, "amount"),
        ({"name": "a", "amount": -1}, "amount"),
        ({"name": "a", "amount": 1, "colour": "red"}, "colour"),
    ],
    ids=[
        "missing",
        "too-long",
        "number-as-name",
        "string-amount",
        "bool-amount",
        "negative",
        "unknown",
    ],
)
def test_invalid_bodies_are_400_naming_the_field(acme, api_client, body, field):
    response = api_client(acme.token).post("/test/echo", body)
    error = assert_error_body(response, 400)
    assert field in [item["field"] for item in error["details"]]


def test_immutable_field_sent_to_an_update_is_400(acme, api_client):
    response = api_client(acme.token).patch("/test/echo", {"kind": "other"})
    error = assert_error_body(response, 400)
    assert error["details"] == [
        {"field": "kind", "message": "This field cannot be changed after creation."}
    ]


@pytest.mark.parametrize(
    "raw", [b"{bad json", b"", b"NaN", b'{"amount": Infinity, "name": "a"}', b"\xff\xfe"]
)
def test_malformed_json_is_400(acme, api_client, raw):
    assert_error_body(api_client(acme.token).post("/test/echo", raw), 400)


def test_unsupported_content_type_is_415(acme, api_client):
    response = api_client(acme.token).post("/test/echo", "name=a", content_type="text/plain")
    assert_error_body(response, 415)


def test_oversized_body_is_413_before_parsing(acme, api_client):
    response = api_client(acme.token).post("/test/echo", b'{"name": "' + b"a" * 300 + b'"}')
    body = assert_error_body(response, 413)
    assert "200" in body["message"]


# Errors in the shared shape


def test_unknown_route_is_404_json(api_client):
    body = assert_error_body(api_client().get("/no/such/route"), 404)
    assert body["error"] == "Not Found"


def test_unknown_method_is_405_json(acme, api_client):
    body = assert_error_body(api_client(acme.token).delete("/test/applications"), 405)
    assert body["error"] == "Method Not Allowed"


def test_unhandled_exception_is_500_without_traceback(acme, api_client, caplog):
    client = api_client(acme.token)
    client.raise_request_exception = False
    response = client.get("/test/boom")
    body = assert_error_body(response, 500)
    assert "secret internals" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert body["error"] == "Internal Server Error"
    assert "secret internals" in caplog.text  # logged for operators, not shown to callers


def test_rate_limited_request_is_429_in_the_shared_shape(acme, api_client, settings):
    settings.TALLY["RATE_LIMITS"]["meters"] = {"rate": 0.001, "burst": 2}
    client = api_client(acme.token)
    assert [client.get("/test/applications").status_code for _ in range(3)] == [200, 200, 429]
    response = client.get("/test/applications")
    assert_error_body(response, 429)
    assert int(response["Retry-After"]) >= 1
    assert response["RateLimit-Limit"] == "2"
    assert response["RateLimit-Remaining"] == "0"


# The per-process token cache


def test_cached_token_skips_the_lookup(acme, api_client, settings, django_assert_max_num_queries):
    settings.TALLY["TOKEN_CACHE_SECONDS"] = 60
    client = api_client(acme.token)
    assert client.get("/test/applications").status_code == 200
    # Warm: no token query any more, only the view's own (count and page).
    with django_assert_max_num_queries(2):
        assert client.get("/test/applications").status_code == 200


def test_revocation_applies_once_the_cache_expires(acme, api_client, settings):
    from tenants.api import authentication

    settings.TALLY["TOKEN_CACHE_SECONDS"] = 60
    client = api_client(acme.token)
    assert client.get("/test/applications").status_code == 200
    AccessToken.objects.all().delete()
    assert client.get("/test/applications").status_code == 200  # within the cache window
    # Age the entry past its window, as time would.
    entries = authentication._resolved_tokens._entries
    entries[acme.token] = (0.0, *entries[acme.token][1:])
    assert_error_body(client.get("/test/applications"), 401)


def test_expired_token_is_refused_even_when_cached(acme, api_client, settings):
    settings.TALLY["TOKEN_CACHE_SECONDS"] = 60
    client = api_client(acme.token)
    assert client.get("/test/applications").status_code == 200
    from tenants.api import authentication

    # Time passes the token's expiry: for the cached copy and the stored row alike.
    past = timezone.now() - timedelta(seconds=1)
    _, _client, token = authentication._resolved_tokens._entries[acme.token]
    token.expires = past
    AccessToken.objects.update(expires=past)
    assert_error_body(client.get("/test/applications"), 401)


# OPTIONS is not offered: 405 in the shared shape, with the methods that are


@pytest.mark.parametrize("path", ["/test/applications", "/test/echo"])
def test_options_answers_405_with_allow(db, api_client, path):
    tenant = make_tenant("Describer", scopes=["metrics:read"])
    response = api_client(tenant.token).options(path)
    assert_error_body(response, 405)
    assert "GET" in response["Allow"] or "POST" in response["Allow"]
    assert_error_body(api_client().options(path), 401)
