"""Aggregation over HTTP: the stores an import makes, and the lookup of a session by the
key its group values make, as the aggregator computes it."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from streams.models import AggregationFlush, AggregationSession, AggregationStore
from streams.runtime.sessions import session_key
from tests.conftest import assert_error_body, make_tenant
from tests.streams.runtime.helpers import (
    create_collector,
    import_stream,
    ingest,
    process_all,
    set_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

STORES = "/aggregation/v1/stores"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CREATED = datetime(2025, 10, 27, 14, 4, 31, 648000, tzinfo=UTC)


def totals_node(node_id: str = "totals", name: str = "Totals") -> dict:
    """A data aggregator grouping by customer and region (in that order)."""
    return {
        "id": node_id,
        "name": name,
        "type": "transforms/data_aggregate",
        "params": {
            "flushType": "TIMEOUT",
            "timeout": {"value": 1, "unit": "DAYS"},
            "groupKeys": [
                {"field": "customerId", "operationType": "NONE"},
                {"field": "region", "operationType": "NONE"},
            ],
            "operations": [{"field": "value", "type": "NUMERIC_SUM"}],
        },
    }


def orders_node(node_id: str = "orders", name: str = "Orders") -> dict:
    """A script aggregator: by customer and order, else by customer alone."""
    return {
        "id": node_id,
        "name": name,
        "type": "transforms/script_aggregate",
        "params": {
            "groupByRules": [{"fields": ["customerId", "orderId"]}, {"fields": ["customerId"]}],
            "onTransform": "session.data.n = (session.data.n || 0) + 1;",
        },
    }


def stream_with(*nodes: dict, name: str = "Aggregating") -> dict:
    return {"name": name, "nodes": list(nodes), "edges": []}


def store_of(stream: dict, node_id: str) -> str:
    """The storeId the import gave a node: the id of its store."""
    (node,) = [n for n in stream["nodes"] if n["id"] == node_id]
    return node["storeId"]


def add_session(store_id: str, values: list, *, data=None, meta=None, **fields):
    store = AggregationStore.objects.get(pk=store_id)
    return AggregationSession.objects.create(
        operator_id=store.operator_id,
        store=store,
        key=session_key(values),
        key_values=values,
        data=data if data is not None else {},
        meta=meta if meta is not None else {"count": 1},
        **fields,
    )


def lookup(client, store_id: str, *values: str):
    return client.get(f"{STORES}/{store_id}/sessions/lookup", {"fieldValues": list(values)})


# The list


def test_the_list_shows_each_store_the_import_made_with_its_node_and_group_fields(client):
    stream = import_stream(client, stream_with(totals_node(), orders_node(), name="Sales"))
    totals, orders = store_of(stream, "totals"), store_of(stream, "orders")
    add_session(totals, ["c1", "eu"])
    add_session(totals, ["c2", "eu"])

    response = client.get(STORES)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["nextCursor"] is None
    assert [store["id"] for store in body["stores"]] == [totals, orders]
    first, second = body["stores"]
    assert TIMESTAMP.match(first.pop("createdAt"))
    assert first == {
        "id": totals,
        "kind": "data",
        "streamId": stream["id"],
        "streamName": "Sales",
        "nodeId": "totals",
        "nodeName": "Totals",
        "groupFields": [["customerId", "region"]],
        "sessionCount": 2,
    }
    assert (second["kind"], second["nodeName"], second["sessionCount"]) == ("script", "Orders", 0)
    assert second["groupFields"] == [["customerId", "orderId"], ["customerId"]]


def test_the_list_pages_with_a_cursor_and_filters_by_stream(client):
    streams = [
        import_stream(client, stream_with(totals_node(), name=f"Stream {index}"))
        for index in range(5)
    ]
    expected = [store_of(stream, "totals") for stream in streams]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(STORES, params).json()
        assert len(page["stores"]) <= 2
        seen += [store["id"] for store in page["stores"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == expected  # oldest first, each once

    only = client.get(STORES, {"streamId": streams[3]["id"]}).json()
    assert [store["id"] for store in only["stores"]] == [expected[3]]
    assert client.get(STORES, {"streamId": str(uuid.uuid4())}).json()["stores"] == []
    for params, field in [
        ({"streamId": "nope"}, "streamId"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": "101"}, "limit"),
    ]:
        error = assert_error_body(client.get(STORES, params), 400)
        assert error["details"][0]["field"] == field


def test_a_store_whose_node_was_deleted_lists_without_node_name_or_fields(client):
    stream = import_stream(client, stream_with(totals_node(), orders_node()))
    orders = store_of(stream, "orders")
    response = client.post(
        "/stream-management/v1/streams/import",
        {
            "solutionId": stream["solutionId"],
            "streamConfig": stream_with(totals_node()),
            "allowNodeDeletion": True,
        },
    )
    assert response.status_code == 200, response.content
    listed = {store["id"]: store for store in client.get(STORES).json()["stores"]}
    assert (listed[orders]["nodeName"], listed[orders]["groupFields"]) == (None, [])
    # Its sessions cannot be looked up: the fields they were keyed by are gone.
    add_session(orders, ["c1"])
    body = assert_error_body(lookup(client, orders, "c1"), 404)
    assert "no longer" in body["message"]


def test_listing_takes_the_same_queries_for_any_number_of_stores(client, settings):
    settings.TALLY["TOKEN_CACHE_SECONDS"] = 60

    def list_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(STORES, {"limit": 100})
        assert response.status_code == 200
        return len(queries)

    stream = import_stream(client, stream_with(totals_node(), name="one"))
    add_session(store_of(stream, "totals"), ["c", "r"])
    one = list_queries()
    for index in range(6):
        more = import_stream(client, stream_with(totals_node(), orders_node(), name=f"m{index}"))
        add_session(store_of(more, "orders"), ["c"])
    assert list_queries() == one
    assert len(client.get(STORES, {"limit": 100}).json()["stores"]) == 13


# The lookup


def test_lookup_finds_a_session_by_two_values_in_field_order(client):
    stream = import_stream(client, stream_with(totals_node()))
    store_id = store_of(stream, "totals")
    add_session(
        store_id,
        ["c1", "eu"],
        data={"customerId": "c1", "region": "eu", "sum_value": Decimal("12.50")},
        meta={
            "count": 3,
            "firstEvent": "2025-10-27T14:04:31.648Z",
            "lastEvent": "2025-10-27T16:00:17.809Z",
            "partials": {"sum_value": "12.50"},
        },
        created_at=CREATED,
        updated_at=CREATED + timedelta(hours=2),
        timeout_at=CREATED + timedelta(days=1),
    )
    add_session(store_id, ["eu", "c1"], data={"other": True})

    response = lookup(client, store_id, "c1", "eu")
    assert response.status_code == 200, response.content
    assert b'"sum_value":12.50' in response.content  # a JSON number, its digits kept
    assert response.json() == {
        "createdAt": "2025-10-27T14:04:31.648Z",
        "updatedAt": "2025-10-27T16:04:31.648Z",
        "timeoutAt": "2025-10-28T14:04:31.648Z",
        "data": {"customerId": "c1", "region": "eu", "sum_value": 12.5},
        # `partials` is the runtime's own running state: not shown.
        "meta": {
            "count": 3,
            "firstEvent": "2025-10-27T14:04:31.648Z",
            "lastEvent": "2025-10-27T16:00:17.809Z",
        },
    }
    # The order of the values is the order of the fields: reversed is another session.
    assert lookup(client, store_id, "eu", "c1").json()["data"] == {"other": True}
    assert_error_body(lookup(client, store_id, "c1", "us"), 404)


def test_lookup_in_a_script_store_takes_the_values_of_any_of_its_rules(client):
    stream = import_stream(client, stream_with(orders_node()))
    store_id = store_of(stream, "orders")
    add_session(store_id, ["customer123", "order456"], data={"n": 2})
    add_session(store_id, ["customer123"], data={"n": 5})

    by_both = lookup(client, store_id, "customer123", "order456")
    assert by_both.status_code == 200, by_both.content
    assert by_both.json()["data"] == {"n": 2}
    assert by_both.json()["timeoutAt"] is None
    assert lookup(client, store_id, "customer123").json()["data"] == {"n": 5}
    body = assert_error_body(lookup(client, store_id, "order456", "customer123"), 404)
    assert "session" in body["message"]


def test_values_that_make_a_key_with_separators_find_only_their_session(client):
    stream = import_stream(client, stream_with(totals_node()))
    store_id = store_of(stream, "totals")
    add_session(store_id, ["a|b", "c"], data={"which": "pipe in the first"})
    add_session(store_id, ["a", "b|c"], data={"which": "pipe in the second"})
    assert lookup(client, store_id, "a|b", "c").json()["data"] == {"which": "pipe in the first"}
    assert lookup(client, store_id, "a", "b|c").json()["data"] == {"which": "pipe in the second"}


def test_a_wrong_number_of_values_is_400_naming_the_fields(client):
    stream = import_stream(client, stream_with(totals_node(), orders_node()))
    totals, orders = store_of(stream, "totals"), store_of(stream, "orders")

    body = assert_error_body(lookup(client, totals, "c1"), 400)
    assert body["details"][0]["field"] == "fieldValues"
    assert "2 fields (customerId, region)" in body["message"]
    body = assert_error_body(lookup(client, orders, "a", "b", "c"), 400)
    assert "2 fields (customerId, orderId) or 1 field (customerId)" in body["message"]


def test_lookup_without_field_values_is_400(client):
    stream = import_stream(client, stream_with(totals_node()))
    response = client.get(f"{STORES}/{store_of(stream, 'totals')}/sessions/lookup")
    body = assert_error_body(response, 400)
    assert body["details"][0]["field"] == "fieldValues"
    nul = lookup(client, store_of(stream, "totals"), "a\x00", "b")
    assert_error_body(nul, 400)


def test_unknown_malformed_and_other_operators_stores_are_404(client, globex, api_client):
    stream = import_stream(client, stream_with(totals_node()))
    store_id = store_of(stream, "totals")
    add_session(store_id, ["c1", "eu"])
    assert lookup(client, store_id, "c1", "eu").status_code == 200

    assert_error_body(lookup(client, str(uuid.uuid4()), "c1", "eu"), 404)
    assert_error_body(lookup(client, "not-a-uuid", "c1", "eu"), 404)
    other = api_client(globex.token)
    theirs = assert_error_body(lookup(other, store_id, "c1", "eu"), 404)
    unknown = assert_error_body(lookup(other, str(uuid.uuid4()), "c1", "eu"), 404)
    assert theirs["message"] == unknown["message"]  # nothing tells them it exists
    assert other.get(STORES).json() == {"stores": [], "nextCursor": None}
    assert other.get(STORES, {"streamId": stream["id"]}).json()["stores"] == []


def test_the_endpoints_need_a_token_with_the_sessions_scope(client, api_client):
    stream = import_stream(client, stream_with(totals_node()))
    store_id = store_of(stream, "totals")
    add_session(store_id, ["c1", "eu"])
    reader = make_tenant("Reader", scopes=["stream-management:read:streams"])
    for path in (STORES, f"{STORES}/{store_id}/sessions/lookup?fieldValues=c1&fieldValues=eu"):
        body = assert_error_body(api_client(reader.token).get(path), 403)
        assert "aggregation:read:sessions" in body["message"]
        assert_error_body(api_client().get(path), 401)


def test_the_endpoints_share_the_aggregation_rate_limit(client, settings):
    stream = import_stream(client, stream_with(totals_node()))
    store_id = store_of(stream, "totals")
    settings.TALLY["RATE_LIMITS"]["aggregation"] = {"rate": 0.001, "burst": 2}
    assert client.get(STORES).status_code == 200
    assert lookup(client, store_id, "c1", "eu").status_code == 404
    limited = assert_error_body(lookup(client, store_id, "c1", "eu"), 429)
    assert limited is not None
    # Other groups keep their own buckets.
    assert client.get("/stream-management/v1/solutions").status_code == 200


def test_lookup_finds_the_session_a_running_aggregator_made(client):
    """The key the endpoint computes is the runtime's: records through a realtime
    stream, then the session looked up by the values they were grouped by."""
    collector = create_collector(client, "Usage")
    node = totals_node()
    node["params"]["groupKeys"][1] = {"field": "at", "operationType": "MONTH"}
    config = {
        "name": "Running",
        "nodes": [
            {
                "id": "source",
                "name": "Collector",
                "type": "readers/online_collection",
                "params": {"collectorId": collector["id"]},
            },
            node,
            {"id": "out", "name": "Out", "type": "writers/log", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "totals"},
            {"id": "e2", "from": "totals", "to": "out"},
        ],
    }
    stream = import_stream(client, config)
    set_stream(client, stream["id"], enabled=True)
    ingest(
        client,
        collector["id"],
        [
            {"customerId": "c1", "at": "2024-10-01T10:00:00Z", "value": "1.10"},
            {"customerId": "c1", "at": "2024-10-15T10:00:00Z", "value": "2.20"},
            {"customerId": "c1", "at": "2024-11-01T10:00:00Z", "value": "9"},
        ],
    )
    process_all(collector["id"])
    store_id = store_of(stream, "totals")

    response = lookup(client, store_id, "c1", "2024-10")
    assert response.status_code == 200, response.content
    found = response.json()
    assert found["data"]["sum_value"] == 3.3
    assert found["meta"]["count"] == 2
    assert "partials" not in found["meta"]
    assert TIMESTAMP.match(found["timeoutAt"])
    listed = client.get(STORES, {"streamId": stream["id"]}).json()["stores"]
    assert [(s["id"], s["sessionCount"]) for s in listed] == [(store_id, 2)]


def test_the_openapi_schema_documents_both_endpoints(client):
    schema = client.get("/api/schema/?format=json").json()
    stores = schema["paths"][STORES]["get"]
    found = schema["paths"][f"{STORES}/{{id}}/sessions/lookup"]["get"]
    for operation in (stores, found):
        assert operation["security"] == [{"oauth2": ["aggregation:read:sessions"]}]
        assert "Rate limit group `aggregation`" in operation["description"]
    (field_values,) = [p for p in found["parameters"] if p["name"] == "fieldValues"]
    assert field_values["required"] is True
    assert field_values["schema"]["type"] == "array"


# The admin


@pytest.fixture
def staff(staff_user):
    from django.test import Client

    browser = Client()
    browser.force_login(staff_user)
    return browser


def test_admin_pages_show_stores_sessions_and_flushes(client, staff):
    stream = import_stream(client, stream_with(totals_node(), orders_node()))
    store_id = store_of(stream, "totals")
    session = add_session(
        store_id,
        ["c1", "eu"],
        data={"sum_value": Decimal("12.50")},
        meta={"count": 3, "partials": {"sum_value": "12.50"}},
    )
    store = AggregationStore.objects.get(pk=store_id)
    flush = AggregationFlush.objects.create(
        operator_id=store.operator_id,
        store=store,
        session_id=session.pk + 1000,
        key="c2|eu",
        flush_type="TIMEOUT",
    )

    stores = staff.get("/admin/streams/aggregationstore/").content.decode()
    assert store_id in stores
    assert f"?store__exact={store_id}" in stores
    page = staff.get(f"/admin/streams/aggregationstore/{store_id}/change/")
    assert page.status_code == 200
    assert "customerId, region" in page.content.decode()
    assert "Totals" in page.content.decode()
    for search in ({"q": store_id}, {"q": stream["name"]}, {"kind__exact": "data"}):
        assert staff.get("/admin/streams/aggregationstore/", search).status_code == 200

    sessions = staff.get("/admin/streams/aggregationsession/", {"store__exact": store_id})
    assert sessions.status_code == 200
    assert "c1|eu" in sessions.content.decode()
    page = staff.get(f"/admin/streams/aggregationsession/{session.pk}/change/").content.decode()
    assert "12.50" in page and "partials" in page  # the raw JSON, all of it
    assert 'name="_save"' not in page  # read only
    assert staff.get("/admin/streams/aggregationsession/", {"q": "c1"}).status_code == 200
    assert staff.get("/admin/streams/aggregationsession/add/").status_code == 403

    assert staff.get("/admin/streams/aggregationflush/").status_code == 200
    assert staff.get(f"/admin/streams/aggregationflush/{flush.pk}/change/").status_code == 200
    assert staff.get(f"/admin/streams/aggregationstore/{store_id}/delete/").status_code == 403
