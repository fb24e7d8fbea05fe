"""/global-parameters/v1/parameters: the API reference's rules, each with its status."""

from __future__ import annotations

import pytest
from django.db import connection

from parameters.models import MASK, Parameter
from parameters.rules import MAX_PARAMETERS_PER_OPERATOR
from parameters.services import parameter_create
from tests.conftest import SENSITIVE_SENTINEL, assert_error_body, make_tenant

pytestmark = pytest.mark.django_db

BASE = "/global-parameters/v1/parameters"
SECRET = f"sk_live_{SENSITIVE_SENTINEL}_4242"


@pytest.fixture(autouse=True)
def _generous_limits(settings):
    # Most tests here make more calls than 2/s burst 4 allows; limits get their own tests.
    settings.TALLY["RATE_LIMITS"]["parameters"] = {"rate": 1000, "burst": 1000}
    settings.TALLY["RATE_LIMITS"]["parameters-delete"] = {"rate": 1000, "burst": 1000}


@pytest.fixture
def client(acme, api_client):
    return api_client(acme.token)


def create(client, **fields):
    body = {"name": "credentials/gateway/api-key", "type": "standard", "value": "v1", **fields}
    return client.post(BASE, body)


# Create


def test_create_answers_201_with_the_name(client):
    response = create(client, description="Gateway key")
    assert response.status_code == 201, response.content
    assert response.json() == {"name": "credentials/gateway/api-key"}


def test_created_parameter_reads_back(client):
    create(client, description="Gateway key")
    body = client.get(f"{BASE}/credentials/gateway/api-key").json()
    assert body["name"] == "credentials/gateway/api-key"
    assert body["type"] == "standard"
    assert body["value"] == "v1"
    assert body["description"] == "Gateway key"
    assert body["updatedAt"].endswith("Z")


@pytest.mark.parametrize(
    "name",
    ["a", "a.b-c_d", "group/sub/name", "/".join(["x"] * 10), "n" * 900, "A1/b2.C3"],
)
def test_valid_names_are_accepted(client, name):
    assert create(client, name=name).status_code == 201


@pytest.mark.parametrize(
    "name",
    [
        "",
        "n" * 901,
        "/".join(["x"] * 11),
        "has space",
        "trailing/",
        "/leading",
        "double//slash",
        "ümlaut",
        "semi;colon",
        "star*",
    ],
    ids=[
        "empty",
        "too-long",
        "too-deep",
        "space",
        "trailing",
        "leading",
        "double",
        "unicode",
        "semicolon",
        "star",
    ],
)
def test_invalid_names_are_400(client, name):
    body = assert_error_body(create(client, name=name), 400)
    assert body["details"][0]["field"] == "name"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"value": ""}, "value"),
        ({"value": "v" * 8193}, "value"),
        ({"value": 12}, "value"),
        ({"description": "d" * 1025}, "description"),
        ({"type": "Standard"}, "type"),
        ({"type": "secret"}, "type"),
        ({"type": 1}, "type"),
        ({"name": None}, "name"),
        ({"unknown": "x"}, "unknown"),
        ({"updatedAt": "2020-01-01T00:00:00Z"}, "updatedAt"),
    ],
    ids=[
        "empty-value",
        "long-value",
        "number-value",
        "long-description",
        "type-case",
        "type-unknown",
        "type-number",
        "null-name",
        "unknown-field",
        "read-only",
    ],
)
def test_invalid_create_bodies_are_400(client, fields, field):
    body = assert_error_body(create(client, **fields), 400)
    assert field in [item["field"] for item in body["details"]]


@pytest.mark.parametrize("missing", ["name", "type", "value"])
def test_required_fields_are_400_when_missing(client, missing):
    body = {"name": "a", "type": "standard", "value": "v"}
    del body[missing]
    error = assert_error_body(client.post(BASE, body), 400)
    assert error["details"][0]["field"] == missing


def test_value_of_8192_characters_is_accepted(client):
    assert create(client, value="v" * 8192, description="d" * 1024).status_code == 201


def test_duplicate_name_is_409(client):
    create(client)
    body = assert_error_body(create(client, value="other"), 409)
    assert "already exists" in body["message"]


def test_the_101st_parameter_is_409(acme, client):
    for index in range(MAX_PARAMETERS_PER_OPERATOR):
        parameter_create(operator=acme.operator, name=f"p{index}", type="standard", value="v")
    body = assert_error_body(create(client, name="one-too-many"), 409)
    assert str(MAX_PARAMETERS_PER_OPERATOR) in body["message"]
    assert Parameter.objects.filter(operator=acme.operator).count() == MAX_PARAMETERS_PER_OPERATOR


def test_quota_and_names_are_per_operator(acme, globex, api_client):
    create(api_client(acme.token))
    assert create(api_client(globex.token)).status_code == 201


# Read


def test_get_of_a_missing_name_is_404(client):
    assert_error_body(client.get(f"{BASE}/nope"), 404)


def test_names_with_slashes_route_to_the_parameter(client):
    create(client, name="a/b")
    create(client, name="a/b/c", value="deeper")
    assert client.get(f"{BASE}/a/b").json()["value"] == "v1"
    assert client.get(f"{BASE}/a/b/c").json()["value"] == "deeper"
    assert_error_body(client.get(f"{BASE}/a"), 404)


def test_sensitive_value_is_masked_everywhere(client):
    create(client, name="secret", type="sensitive", value=SECRET)
    assert client.get(f"{BASE}/secret").json()["value"] == MASK
    listed = client.get(BASE).json()["parameters"]
    assert listed[0]["value"] == MASK
    assert SECRET not in client.get(BASE).content.decode()


# List


@pytest.fixture
def three(acme):
    for name, description in (("beta", "b"), ("alpha", "c"), ("gamma/one", "a")):
        parameter_create(
            operator=acme.operator, name=name, type="standard", value="v", description=description
        )


def test_list_defaults_to_name_order(client, three):
    body = client.get(BASE).json()
    assert body["total"] == 3
    assert [item["name"] for item in body["parameters"]] == ["alpha", "beta", "gamma/one"]
    assert set(body["parameters"][0]) == {"name", "type", "description", "value", "updatedAt"}


def test_list_sorts_by_description_descending(client, three):
    body = client.get(BASE, {"sortBy": "description", "sortOrder": "DESC"}).json()
    assert [item["description"] for item in body["parameters"]] == ["c", "b", "a"]


def test_list_filters_by_partial_name(client, three):
    body = client.get(BASE, {"name": "AMM"}).json()
    assert [item["name"] for item in body["parameters"]] == ["gamma/one"]
    assert body["total"] == 1


@pytest.mark.parametrize(
    "params", [{"limit": 101}, {"skip": -1}, {"sortBy": "value"}, {"sortOrder": "sideways"}]
)
def test_bad_list_parameters_are_400(client, params):
    assert_error_body(client.get(BASE, params), 400)


def test_list_pages_with_limit_and_skip(client, three):
    body = client.get(BASE, {"limit": 1, "skip": 1}).json()
    assert [item["name"] for item in body["parameters"]] == ["beta"]
    assert body["total"] == 3


def test_list_query_count_is_constant(acme, client, django_assert_max_num_queries):
    for index in range(30):
        parameter_create(operator=acme.operator, name=f"p{index}", type="sensitive", value="v")
    with django_assert_max_num_queries(5):
        client.get(BASE, {"limit": 100})


# Update


def test_patch_changes_value_and_description(client):
    create(client)
    response = client.patch(f"{BASE}/credentials/gateway/api-key", {"value": "v2"})
    assert response.status_code == 200
    assert response.json() == {"name": "credentials/gateway/api-key"}
    client.patch(f"{BASE}/credentials/gateway/api-key", {"description": "new"})
    body = client.get(f"{BASE}/credentials/gateway/api-key").json()
    assert (body["value"], body["description"]) == ("v2", "new")


def test_patch_moves_updated_at(client):
    create(client)
    before = client.get(f"{BASE}/credentials/gateway/api-key").json()["updatedAt"]
    client.patch(f"{BASE}/credentials/gateway/api-key", {"description": "x"})
    after = client.get(f"{BASE}/credentials/gateway/api-key").json()["updatedAt"]
    assert after >= before


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, None),
        ({"type": "sensitive"}, "type"),
        ({"name": "renamed"}, "name"),
        ({"value": ""}, "value"),
        ({"value": "v" * 8193}, "value"),
        ({"description": "d" * 1025}, "description"),
        ({"value": ["list"]}, "value"),
        ({"colour": "red"}, "colour"),
    ],
    ids=[
        "empty",
        "type",
        "name",
        "empty-value",
        "long-value",
        "long-description",
        "list",
        "unknown",
    ],
)
def test_invalid_patches_are_400_and_change_nothing(client, body, field):
    create(client)
    error = assert_error_body(client.patch(f"{BASE}/credentials/gateway/api-key", body), 400)
    assert error["details"][0]["field"] == field
    stored = client.get(f"{BASE}/credentials/gateway/api-key").json()
    assert (stored["value"], stored["type"]) == ("v1", "standard")


def test_patch_of_a_missing_name_is_404(client):
    assert_error_body(client.patch(f"{BASE}/nope", {"value": "x"}), 404)


def test_patching_a_sensitive_value_keeps_it_encrypted(client):
    create(client, name="secret", type="sensitive", value="first")
    client.patch(f"{BASE}/secret", {"value": SECRET})
    stored = Parameter.objects.get(name="secret")
    assert stored.plain_value == ""
    assert SECRET not in stored.encrypted_value


# Delete


def test_bulk_delete_reports_deleted_and_invalid_names(client):
    create(client, name="a")
    create(client, name="b")
    response = client.delete(BASE, {"parameters": ["a", "missing", "b", "a"]})
    assert response.status_code == 200, response.content
    assert response.json() == {
        "deletedCount": 2,
        "deletedParameters": ["a", "b"],
        "invalidParameters": ["missing"],
    }
    assert client.get(BASE).json()["total"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"parameters": []},
        {"parameters": "a"},
        {"parameters": [1]},
        {"names": ["a"]},
        {"parameters": ["p"] * 101},
    ],
    ids=["missing", "empty", "string", "number", "wrong-key", "too-many"],
)
def test_invalid_delete_bodies_are_400(client, body):
    create(client, name="p")
    assert_error_body(client.delete(BASE, body), 400)
    assert client.get(BASE).json()["total"] == 1


# Tenant isolation


def test_another_operator_cannot_read_change_or_delete(acme, globex, api_client):
    parameter_create(operator=acme.operator, name="shared/name", type="standard", value="acme")
    intruder = api_client(globex.token)

    assert_error_body(intruder.get(f"{BASE}/shared/name"), 404)
    assert_error_body(intruder.patch(f"{BASE}/shared/name", {"value": "pwned"}), 404)
    assert intruder.get(BASE).json() == {"parameters": [], "total": 0}
    assert intruder.get(BASE, {"name": "shared"}).json()["total"] == 0
    deleted = intruder.delete(BASE, {"parameters": ["shared/name"]}).json()
    assert deleted == {
        "deletedCount": 0,
        "deletedParameters": [],
        "invalidParameters": ["shared/name"],
    }

    owner = api_client(acme.token).get(f"{BASE}/shared/name").json()
    assert owner["value"] == "acme"


def test_same_name_in_two_operators_deletes_only_the_callers(acme, globex, api_client):
    for tenant in (acme, globex):
        parameter_create(operator=tenant.operator, name="n", type="standard", value="v")
    api_client(globex.token).delete(BASE, {"parameters": ["n"]})
    assert Parameter.objects.filter(operator=acme.operator, name="n").exists()
    assert not Parameter.objects.filter(operator=globex.operator, name="n").exists()


# Scopes and rate limits


@pytest.mark.parametrize(
    "method, path, body, scope",
    [
        ("get", BASE, None, "global-parameters:read:parameters"),
        ("get", f"{BASE}/x", None, "global-parameters:read:parameters"),
        (
            "post",
            BASE,
            {"name": "x", "type": "standard", "value": "v"},
            "global-parameters:create:parameters",
        ),
        ("patch", f"{BASE}/x", {"value": "v"}, "global-parameters:update:parameters"),
        ("delete", BASE, {"parameters": ["x"]}, "global-parameters:delete:parameters"),
    ],
)
def test_each_endpoint_requires_its_scope(db, api_client, method, path, body, scope):
    from tenants.scopes import ALL_SCOPES

    without = make_tenant("Limited", scopes=[s for s in ALL_SCOPES if s != scope])
    kwargs = {"data": body} if body is not None else {}
    response = getattr(api_client(without.token), method)(path, **kwargs)
    error = assert_error_body(response, 403)
    assert scope in error["message"]

    with_scope = make_tenant("Allowed", scopes=[scope])
    response = getattr(api_client(with_scope.token), method)(path, **kwargs)
    assert response.status_code != 403


def test_default_rate_limits_match_the_reference(settings):
    from config.rate_limits import DEFAULT_RATE_LIMITS

    assert DEFAULT_RATE_LIMITS["parameters"] == {"rate": 2, "burst": 4}
    assert DEFAULT_RATE_LIMITS["parameters-delete"] == {"rate": 1, "burst": 2}


def test_reads_and_writes_share_a_bucket_of_four(client, settings):
    settings.TALLY["RATE_LIMITS"]["parameters"] = {"rate": 0.001, "burst": 4}
    statuses = [client.get(BASE).status_code for _ in range(3)]
    statuses.append(create(client).status_code)
    statuses.append(client.get(BASE).status_code)
    assert statuses == [200, 200, 200, 201, 429]
    limited = client.get(f"{BASE}/x")
    assert_error_body(limited, 429)
    assert limited["RateLimit-Limit"] == "4"


def test_delete_has_its_own_bucket_of_two(client, settings):
    settings.TALLY["RATE_LIMITS"]["parameters-delete"] = {"rate": 0.001, "burst": 2}
    settings.TALLY["RATE_LIMITS"]["parameters"] = {"rate": 0.001, "burst": 4}
    body = {"parameters": ["x"]}
    assert [client.delete(BASE, body).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get(BASE).status_code == 200  # the read bucket is untouched


def test_database_never_holds_a_sensitive_plaintext(client):
    create(client, name="secret", type="sensitive", value=SECRET)
    with connection.cursor() as cursor:
        cursor.execute("SELECT parameters_parameter::text FROM parameters_parameter")
        rows = [row[0] for row in cursor.fetchall()]
    assert rows and all(SECRET not in row for row in rows)
