"""/online-collection/v1/collectors: the API reference's rules, each with its status."""

from __future__ import annotations

import pytest

from collection.models import Collector
from collection.rules import MAX_COLLECTORS_PER_OPERATOR
from collection.services import collector_provision
from tenants.scopes import ALL_SCOPES
from tests.collection.conftest import BASE, data_url, make_collector
from tests.conftest import assert_error_body, make_tenant

pytestmark = pytest.mark.django_db


def create(client, name="Collector Name"):
    return client.post(BASE, {"name": name})


# Create


def test_create_answers_201_with_a_creating_collector(client):
    response = create(client)
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "name", "status", "createdAt", "updatedAt"}
    assert body["name"] == "Collector Name"
    assert body["status"] == "CREATING"
    assert body["createdAt"].endswith("Z") and len(body["createdAt"]) == 24


def test_provisioning_makes_the_collector_active_once(client):
    collector_id = create(client).json()["id"]
    assert collector_provision(collector_id=collector_id) is True
    assert collector_provision(collector_id=collector_id) is False
    assert client.get(f"{BASE}/{collector_id}").json()["status"] == "ACTIVE"


def test_create_queues_provisioning_on_commit(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        create(client)
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    "name", ["a", "n" * 80, "Usage (EU) v1.2", "under_score-dash", "tab\tand space", "Zähler"]
)
def test_valid_names_are_accepted(client, name):
    assert create(client, name).status_code == 201


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": ""}, "name"),
        ({"name": "n" * 81}, "name"),
        ({"name": "slash/name"}, "name"),
        ({"name": "semi;colon"}, "name"),
        ({"name": 'quote"d'}, "name"),
        ({"name": 12}, "name"),
        ({"name": None}, "name"),
        ({}, "name"),
        ({"name": "ok", "status": "ACTIVE"}, "status"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
    ids=[
        "empty",
        "too-long",
        "slash",
        "semicolon",
        "quote",
        "number",
        "null",
        "missing",
        "read-only",
        "unknown",
    ],
)
def test_invalid_create_bodies_are_400(client, body, field):
    error = assert_error_body(client.post(BASE, body), 400)
    assert field in [item["field"] for item in error["details"]]
    assert not Collector.objects.exists()


def test_duplicate_name_is_409(client):
    create(client)
    error = assert_error_body(create(client), 409)
    assert "already exists" in error["message"]


def test_the_sixth_collector_is_409(acme, client):
    for index in range(MAX_COLLECTORS_PER_OPERATOR):
        make_collector(acme, name=f"c{index}", active=False)
    error = assert_error_body(create(client, "one too many"), 409)
    assert str(MAX_COLLECTORS_PER_OPERATOR) in error["message"]
    assert Collector.objects.filter(operator=acme.operator).count() == 5


def test_deleting_frees_a_name_and_a_place(acme, client):
    collectors = [make_collector(acme, name=f"c{index}") for index in range(5)]
    client.delete(f"{BASE}/{collectors[0].pk}")
    assert create(client, "c0").status_code == 201


def test_names_and_quota_are_per_operator(acme, globex, api_client):
    for index in range(5):
        make_collector(acme, name=f"c{index}", active=False)
    assert create(api_client(globex.token), "c0").status_code == 201


# Read and list


def test_get_answers_the_collector(client, collector):
    body = client.get(f"{BASE}/{collector.pk}").json()
    assert body["id"] == str(collector.pk)
    assert body["status"] == "ACTIVE"


@pytest.mark.parametrize("collector_id", ["nope", "8a76066d-ff29-417c-a18e-abde22e44310"])
def test_get_of_an_unknown_id_is_404(client, collector_id):
    assert_error_body(client.get(f"{BASE}/{collector_id}"), 404)


@pytest.fixture
def three(acme):
    made = [make_collector(acme, name=name, active=False) for name in ("beta", "alpha", "gamma")]
    collector_provision(collector_id=made[2].pk)
    return made


def test_list_defaults_to_name_order(client, three):
    body = client.get(BASE).json()
    assert body["total"] == 3
    assert [item["name"] for item in body["collectors"]] == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    "sort_by, order, expected",
    [
        ("name", "DESC", ["gamma", "beta", "alpha"]),
        ("createdAt", "ASC", ["beta", "alpha", "gamma"]),
        ("createdAt", "DESC", ["gamma", "alpha", "beta"]),
        ("updatedAt", "DESC", ["gamma", "alpha", "beta"]),
    ],
)
def test_list_sorts(client, three, sort_by, order, expected):
    body = client.get(BASE, {"sortBy": sort_by, "sortOrder": order}).json()
    assert [item["name"] for item in body["collectors"]] == expected


def test_list_sorts_by_status(client, three):
    # ACTIVE sorts before CREATING; ties are broken by id, so only the head is fixed.
    body = client.get(BASE, {"sortBy": "status"}).json()
    assert [item["status"] for item in body["collectors"]] == ["ACTIVE", "CREATING", "CREATING"]
    assert body["collectors"][0]["name"] == "gamma"


def test_list_pages_with_limit_and_skip(client, three):
    body = client.get(BASE, {"limit": 1, "skip": 1}).json()
    assert [item["name"] for item in body["collectors"]] == ["beta"]
    assert body["total"] == 3


@pytest.mark.parametrize(
    "params", [{"limit": 101}, {"skip": -1}, {"sortBy": "id"}, {"sortOrder": "up"}]
)
def test_bad_list_parameters_are_400(client, params):
    assert_error_body(client.get(BASE, params), 400)


def test_list_query_count_is_constant(acme, client, django_assert_max_num_queries):
    for index in range(5):
        make_collector(acme, name=f"c{index}")
    with django_assert_max_num_queries(5):
        client.get(BASE)


# Update


def test_patch_renames_and_moves_updated_at(client, collector):
    response = client.patch(f"{BASE}/{collector.pk}", {"name": "Renamed"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["name"] == "Renamed"
    assert body["status"] == "ACTIVE"
    assert body["updatedAt"] >= body["createdAt"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "bad/name"}, "name"),
        ({"status": "CREATING"}, "status"),
        ({"id": "x"}, "id"),
        ({"colour": "red"}, "colour"),
    ],
    ids=["empty", "blank", "pattern", "status", "id", "unknown"],
)
def test_invalid_patches_are_400_and_change_nothing(client, collector, body, field):
    error = assert_error_body(client.patch(f"{BASE}/{collector.pk}", body), 400)
    assert field in [item["field"] for item in error["details"]]
    collector.refresh_from_db()
    assert collector.name == "Main collector"


def test_renaming_to_a_taken_name_is_409(acme, client, collector):
    other = make_collector(acme, name="Other")
    assert_error_body(client.patch(f"{BASE}/{other.pk}", {"name": "Main collector"}), 409)


# Delete


def test_delete_answers_deleted_count_then_404(client, collector):
    response = client.delete(f"{BASE}/{collector.pk}")
    assert response.status_code == 200
    assert response.json() == {"deletedCount": 1}
    assert_error_body(client.get(f"{BASE}/{collector.pk}"), 404)
    assert_error_body(client.delete(f"{BASE}/{collector.pk}"), 404)
    assert_error_body(client.post(data_url(collector), {"data": {"id": "r1"}}), 404)
    assert client.get(BASE).json()["total"] == 0


def test_deleted_collector_keeps_its_records(client, collector):
    client.post(data_url(collector), {"data": [{"id": "r1"}, {"id": "r2"}]})
    client.delete(f"{BASE}/{collector.pk}")
    from collection.models import Record

    assert Record.objects.filter(collector_id=collector.pk).count() == 2
    assert Collector.objects.filter(pk=collector.pk, deleted_at__isnull=False).exists()


# Tenant isolation


def test_another_operator_cannot_see_change_ingest_or_delete(collector, globex, api_client):
    intruder = api_client(globex.token)
    url = f"{BASE}/{collector.pk}"
    assert_error_body(intruder.get(url), 404)
    assert_error_body(intruder.patch(url, {"name": "pwned"}), 404)
    assert_error_body(intruder.delete(url), 404)
    assert_error_body(intruder.post(data_url(collector), {"data": {"id": "x"}}), 404)
    assert_error_body(intruder.get(f"{url}/stats"), 404)
    assert intruder.get(BASE).json() == {"collectors": [], "total": 0}
    collector.refresh_from_db()
    assert collector.name == "Main collector" and collector.deleted_at is None


# Scopes and rate limits


@pytest.mark.parametrize(
    "method, suffix, body, scope",
    [
        ("get", "", None, "online-collection:read:collectors"),
        ("post", "", {"name": "x"}, "online-collection:create:collectors"),
        ("get", "/{id}", None, "online-collection:read:collectors"),
        ("patch", "/{id}", {"name": "y"}, "online-collection:update:collectors"),
        ("delete", "/{id}", None, "online-collection:delete:collectors"),
        ("get", "/{id}/stats", None, "online-collection:read:collectors"),
        ("post", "/{id}/data", {"data": {"id": "r"}}, "online-collection:ingest:collectors"),
    ],
)
def test_each_endpoint_requires_its_scope(api_client, acme, method, suffix, body, scope):
    collector = make_collector(acme)
    path = BASE + suffix.format(id=collector.pk)
    kwargs = {"data": body} if body is not None else {}
    without = make_tenant("Limited", scopes=[s for s in ALL_SCOPES if s != scope])
    error = assert_error_body(getattr(api_client(without.token), method)(path, **kwargs), 403)
    assert scope in error["message"]
    response = getattr(api_client(acme.token), method)(path, **kwargs)
    assert response.status_code != 403


def test_default_rate_limits_match_the_reference():
    from config.rate_limits import DEFAULT_RATE_LIMITS

    assert DEFAULT_RATE_LIMITS["collectors-write"] == {"rate": 1, "burst": 1}
    assert DEFAULT_RATE_LIMITS["collectors-read"] == {"rate": 5 / 60, "burst": 5}
    assert DEFAULT_RATE_LIMITS["ingestion"] == {"rate": 2000, "burst": 5}


def test_writes_allow_a_burst_of_one(client, settings):
    settings.TALLY["RATE_LIMITS"]["collectors-write"] = {"rate": 1, "burst": 1}
    assert create(client, "first").status_code == 201
    response = create(client, "second")
    assert_error_body(response, 429)
    assert response["Retry-After"] == "1"


def test_reads_allow_five_a_minute(client, collector, settings):
    settings.TALLY["RATE_LIMITS"]["collectors-read"] = {"rate": 5 / 60, "burst": 5}
    statuses = [client.get(f"{BASE}/{collector.pk}").status_code for _ in range(5)]
    assert statuses == [200] * 5
    response = client.get(BASE)
    assert_error_body(response, 429)
    assert int(response["Retry-After"]) >= 11


def test_ingestion_has_its_own_bucket(client, collector, settings):
    settings.TALLY["RATE_LIMITS"]["ingestion"] = {"rate": 0.001, "burst": 5}
    statuses = [
        client.post(data_url(collector), {"data": {"id": f"r{i}"}}).status_code for i in range(6)
    ]
    assert statuses == [202] * 5 + [429]
