"""Stream management over HTTP: the reference product's exports import and export
unchanged; names, tags, cas, generated keys, validation, cursors and isolation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.conftest import assert_error_body
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[3] / "shared/fixtures/usage-engine-streams"
FIXTURE_FILES = sorted(path.name for path in FIXTURES.glob("*.json"))
BASE = "/stream-management/v1"
GENERATED = {"transforms/meter": "meterKey", "transforms/data_aggregate": "storeId"}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(autouse=True)
def _generous_limits(settings):
    settings.TALLY["RATE_LIMITS"]["streams"] = {"rate": 10_000, "burst": 10_000}


@pytest.fixture
def solution_id(client) -> str:
    (solution,) = client.get(f"{BASE}/solutions").json()["solutions"]
    assert solution["isDefault"] is True
    return solution["id"]


def import_stream(client, solution_id, config, **options):
    body = {"solutionId": solution_id, "streamConfig": config, **options}
    return client.post(f"{BASE}/streams/import", body)


def without_generated(config: dict) -> dict:
    config = copy.deepcopy(config)
    for node in config["nodes"]:
        for key in ("meterKey", "storeId"):
            node.pop(key, None)
    return config


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_each_reference_export_round_trips_exactly(client, solution_id, name):
    original = fixture(name)
    response = import_stream(client, solution_id, original)
    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["importAction"] == "created" and answer["tag"] is None
    stream = answer["stream"]
    assert (stream["name"], stream["cas"], stream["enabled"]) == (original["name"], 1, False)

    exported = client.get(f"{BASE}/streams/{stream['id']}/export").json()
    assert without_generated(exported) == original
    for node in exported["nodes"]:
        key = GENERATED.get(node["type"])
        assert (key in node) == (key is not None), node["type"]

    fetched = client.get(f"{BASE}/streams/{stream['id']}", {"fields": "name,nodes.name"}).json()
    assert fetched == {
        "name": original["name"],
        "nodes": [{"name": node["name"]} for node in original["nodes"]],
    }
    (listed,) = client.get(f"{BASE}/streams", {"name": original["name"]}).json()["streams"]
    assert listed["id"] == stream["id"]


def test_name_conflicts_overwrite_copy_or_skip(client, solution_id):
    original = fixture("provisioning-meters.json")
    first = import_stream(client, solution_id, original).json()["stream"]

    skipped = import_stream(client, solution_id, original, onNameConflict="skip")
    assert skipped.status_code == 200
    assert skipped.json()["importAction"] == "skipped"
    assert skipped.json()["stream"]["id"] == first["id"]

    copies = [
        import_stream(client, solution_id, original, onNameConflict="create-new").json()
        for _ in range(2)
    ]
    assert [c["importAction"] for c in copies] == ["created-new", "created-new"]
    assert [c["stream"]["name"] for c in copies] == [
        f"{original['name']} (Copy)",
        f"{original['name']} (Copy 2)",
    ]

    changed = copy.deepcopy(original)
    changed["description"] = "now documented"
    overwritten = import_stream(client, solution_id, changed, onNameConflict="overwrite")
    assert overwritten.status_code == 200, overwritten.content
    assert overwritten.json()["importAction"] == "overwritten"
    stream = overwritten.json()["stream"]
    assert (stream["id"], stream["cas"], stream["description"]) == (
        first["id"],
        2,
        "now documented",
    )


def test_an_overwrite_that_drops_nodes_needs_allow_node_deletion(client, solution_id):
    original = fixture("provisioning-meter-types.json")
    import_stream(client, solution_id, original)
    smaller = copy.deepcopy(original)
    dropped = smaller["nodes"].pop()
    smaller["edges"] = [e for e in smaller["edges"] if dropped["id"] not in (e["from"], e["to"])]

    refused = import_stream(client, solution_id, smaller)
    body = assert_error_body(refused, 409)
    assert dropped["id"] in body["message"]

    allowed = import_stream(client, solution_id, smaller, allowNodeDeletion=True)
    assert allowed.status_code == 200, allowed.content
    exported = client.get(f"{BASE}/streams/{allowed.json()['stream']['id']}/export").json()
    assert exported == smaller


def test_tags_keep_snapshots_and_are_unique(client, solution_id):
    original = fixture("purge-meters.json")
    v1 = {**copy.deepcopy(original), "tag": "v1"}
    stream_id = import_stream(client, solution_id, v1).json()["stream"]["id"]
    v2 = {**copy.deepcopy(original), "tag": "v2", "description": "second"}
    answer = import_stream(client, solution_id, v2).json()
    assert (answer["importAction"], answer["tag"], answer["stream"]["cas"]) == (
        "overwritten",
        "v2",
        2,
    )

    assert client.get(f"{BASE}/streams/{stream_id}", {"tag": "v1"}).json()["tag"] == "v1"
    first = client.get(f"{BASE}/streams/{stream_id}/export", {"tag": "v1"}).json()
    assert first == v1
    assert client.get(f"{BASE}/streams/{stream_id}").json()["description"] == "second"
    versions = client.get(f"{BASE}/streams/{stream_id}/versions").json()
    assert versions["total"] == 2
    assert [v["tag"] for v in versions["versions"]] == ["v2", "v1"]
    assert_error_body(client.get(f"{BASE}/streams/{stream_id}", {"tag": "v9"}), 404)

    again = import_stream(client, solution_id, v1)
    assert_error_body(again, 409)


def test_generated_keys_stay_with_their_node_and_copies_get_their_own(client, solution_id):
    original = fixture("printing-as-a-service-with-metering.json")
    first = import_stream(client, solution_id, original).json()["stream"]
    meter_key = next(n["meterKey"] for n in first["nodes"] if n["type"] == "transforms/meter")

    claimed = copy.deepcopy(original)
    for node in claimed["nodes"]:
        if node["type"] == "transforms/meter":
            node["meterKey"] = "00000000-0000-0000-0000-000000000000"  # ignored
    overwritten = import_stream(client, solution_id, claimed).json()["stream"]
    again = next(n["meterKey"] for n in overwritten["nodes"] if n["type"] == "transforms/meter")
    assert again == meter_key

    copied = import_stream(client, solution_id, original, onNameConflict="create-new")
    other = next(
        n["meterKey"] for n in copied.json()["stream"]["nodes"] if n["type"] == "transforms/meter"
    )
    assert other != meter_key


def node(node_id, node_type="writers/noop", **params):
    return {"id": node_id, "type": node_type, "schemaVersion": 1, "name": node_id, "params": params}


def config(nodes, edges=(), name="Checked"):
    return {"name": name, "nodes": list(nodes), "edges": list(edges)}


@pytest.mark.parametrize(
    ("stream_config", "where", "words"),
    [
        (config([node("a"), node("a")]), "streamConfig.nodes[1]", "another node has this id"),
        (config([node("a", "transforms/magic")]), "streamConfig.nodes[0]", "unknown function"),
        (
            config([node("a")], [{"from": "a", "to": "ghost", "config": {}}]),
            "streamConfig.edges[0]",
            "no node 'ghost'",
        ),
        (
            config(
                [node("a", "transforms/script", transform="await push(payload);"), node("b")],
                [
                    {"from": "a", "to": "b", "config": {}},
                    {"from": "b", "to": "a", "config": {}},
                ],
            ),
            "streamConfig.edges",
            "cycle",
        ),
        (config([node(str(i)) for i in range(201)]), "streamConfig.nodes", "At most 200"),
        (
            config(
                [
                    node(
                        "r",
                        "readers/online_collection",
                        collectorId="8a76066d-ff29-417c-a18e-abde22e44310",
                    )
                ]
            ),
            "streamConfig.nodes[0]",
            "no such collector",
        ),
        ("not a stream", "streamConfig", "JSON object"),
        (config([]) | {"name": ""}, "streamConfig.name", "1 to 200"),
    ],
)
def test_invalid_configurations_name_the_node_or_edge(
    client, solution_id, stream_config, where, words
):
    body = assert_error_body(import_stream(client, solution_id, stream_config), 400)
    assert any(d["field"] == where and words in d["message"] for d in body["details"]), body


def test_a_collector_of_another_operator_is_no_such_collector(client, solution_id, acme, globex):
    theirs = CollectorFactory(operator=globex.operator)
    mine = CollectorFactory(operator=acme.operator)
    refused = import_stream(
        client,
        solution_id,
        config([node("r", "readers/online_collection", collectorId=str(theirs.pk))]),
    )
    assert_error_body(refused, 400)
    accepted = import_stream(
        client,
        solution_id,
        config([node("r", "readers/online_collection", collectorId=str(mine.pk))], name="Mine"),
    )
    assert accepted.status_code == 201, accepted.content


def test_an_import_over_two_megabytes_is_413(client, solution_id):
    big = config([node("a")]) | {"description": "x" * (2 * 1024 * 1024)}
    assert_error_body(import_stream(client, solution_id, big), 413)


def test_the_cursor_pages_through_every_stream_once_despite_inserts(client, solution_id):
    base = fixture("provisioning-meter-types.json")
    for index in range(250):
        import_stream(client, solution_id, base | {"name": f"stream {index:03d}"})
    seen, cursor, page_number = [], None, 0
    while True:
        params = {"limit": 100, "fields": "name"} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"{BASE}/streams", params).json()
        seen += [s["name"] for s in page["streams"]]
        page_number += 1
        # A stream created between pages sorts after every existing one.
        import_stream(client, solution_id, base | {"name": f"late {page_number}"})
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen))
    assert {f"stream {i:03d}" for i in range(250)} <= set(seen)
    assert_error_body(client.get(f"{BASE}/streams", {"cursor": "not-a-cursor"}), 400)


def test_another_operator_sees_none_of_it(client, solution_id, globex, api_client):
    stream = import_stream(client, solution_id, fixture("purge-meters.json")).json()["stream"]
    cursor_page = client.get(f"{BASE}/streams", {"limit": 1}).json()
    other = api_client(globex.token)
    for path in ("", "/export", "/versions"):
        assert_error_body(other.get(f"{BASE}/streams/{stream['id']}{path}"), 404)
    assert other.get(f"{BASE}/streams").json() == {"streams": [], "nextCursor": None}
    assert (
        other.get(f"{BASE}/streams", {"cursor": cursor_page["nextCursor"] or ""}).json()["streams"]
        == []
    )
    assert_error_body(import_stream(other, solution_id, fixture("purge-meters.json")), 404)
    theirs = other.get(f"{BASE}/solutions").json()["solutions"]
    assert [s["id"] for s in theirs] != [solution_id]


def test_the_catalogue_describes_every_type_the_fixtures_use(client):
    functions = {f["type"]: f for f in client.get(f"{BASE}/functions").json()["functions"]}
    used = {n["type"] for name in FIXTURE_FILES for n in fixture(name)["nodes"]}
    assert used <= set(functions)
    assert "readers/online_collection" in functions
    for entry in functions.values():
        assert entry["description"] and isinstance(entry["paramsSchema"], dict)


def test_resource_refs_find_streams_by_what_they_use(client, solution_id, acme, globex, api_client):
    collector = CollectorFactory(operator=acme.operator)
    reader = config(
        [node("r", "readers/online_collection", collectorId=str(collector.pk))], name="Reads"
    )
    reads = import_stream(client, solution_id, reader).json()["stream"]
    metered = import_stream(
        client, solution_id, fixture("printing-as-a-service-with-metering.json")
    ).json()["stream"]
    aggregated = import_stream(
        client, solution_id, fixture("cultflicks-video-streaming.json")
    ).json()["stream"]
    import_stream(client, solution_id, fixture("purge-meters.json"))
    meter_key = next(n["meterKey"] for n in metered["nodes"] if "meterKey" in n)

    def names(*refs) -> set[str]:
        response = client.get(f"{BASE}/streams", {"resourceRefs": list(refs), "fields": "name"})
        assert response.status_code == 200, response.content
        return {s["name"] for s in response.json()["streams"]}

    assert names(f"onlineCollector:{collector.pk}") == {reads["name"]}
    assert names("onlineCollector:*") == {reads["name"]}
    assert names(f"meterKey:{meter_key}") == {metered["name"]}
    assert names("meterKey:*", "dataAggregationStore:*") == {metered["name"], aggregated["name"]}
    assert names("scriptAggregationStore:*") == set()
    for bad in ("meterKey", "color:*", "meterKey:nope", ":*"):
        assert_error_body(client.get(f"{BASE}/streams", {"resourceRefs": bad}), 400)
    # Another operator's references find nothing of acme's.
    other = api_client(globex.token)
    assert (
        other.get(f"{BASE}/streams", {"resourceRefs": f"meterKey:{meter_key}"}).json()["streams"]
        == []
    )

    versions = client.get(
        f"{BASE}/streams/{metered['id']}/versions", {"resourceRefs": f"meterKey:{meter_key}"}
    )
    assert versions.json() == {"total": 0, "versions": []}  # no tagged version yet


def test_patch_changes_settings_and_refuses_to_enable_what_cannot_run(client, solution_id):
    # ALL_FILES flushes at the end of a batch execution, which a realtime stream never has.
    config = fixture("summarize-monthly-usage-data.json")
    stream = import_stream(client, solution_id, config).json()["stream"]
    url = f"{BASE}/streams/{stream['id']}"
    refused = assert_error_body(client.patch(url, {"enabled": True}), 409)
    assert "cannot run in this stream" in refused["message"]
    assert "ALL_FILES" in refused["message"]
    assert client.get(url).json()["enabled"] is False

    changed = client.patch(url, {"processingType": "batch", "schedule": "0 * * * *"})
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["processingType"], body["schedule"], body["cas"]) == ("batch", "0 * * * *", 2)
    for bad, field in [
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"enabled": "yes"}, "enabled"),
        ({"processingType": "sometimes"}, "processingType"),
        ({"cas": 9}, "cas"),
    ]:
        error = assert_error_body(client.patch(url, bad), 400)
        assert error["details"][0]["field"] == field
    assert_error_body(client.patch(url, {}), 400)
    assert client.patch(url, {"enabled": True}).json()["enabled"] is True
    # Enabled, it cannot become realtime either.
    assert_error_body(client.patch(url, {"processingType": "realtime"}), 409)
    realtime = client.patch(url, {"processingType": "realtime", "enabled": False}).json()
    assert realtime["schedule"] is None  # a realtime stream has no schedule
    assert_error_body(client.patch(url, {"schedule": "0 0 * * *"}), 409)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_each_reference_export_reimports_with_each_conflict_mode_and_a_tag(
    client, solution_id, name
):
    original = fixture(name)
    first = import_stream(client, solution_id, original).json()["stream"]
    modes = {
        mode: import_stream(client, solution_id, original, onNameConflict=mode).json()
        for mode in ("skip", "create-new", "overwrite")
    }
    assert modes["skip"]["stream"]["id"] == first["id"]
    assert modes["create-new"]["stream"]["name"] == f"{original['name']} (Copy)"
    assert modes["overwrite"]["importAction"] == "overwritten"
    assert modes["overwrite"]["stream"]["cas"] == 2

    tagged = import_stream(client, solution_id, {**original, "tag": "v1"}).json()
    assert (tagged["tag"], tagged["stream"]["cas"]) == ("v1", 3)
    exported = client.get(f"{BASE}/streams/{first['id']}/export", {"tag": "v1"}).json()
    assert without_generated(exported) == {**original, "tag": "v1"}
    copy_export = client.get(f"{BASE}/streams/{modes['create-new']['stream']['id']}/export")
    assert without_generated(copy_export.json()) == {
        **original,
        "name": f"{original['name']} (Copy)",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"streamConfig": {"name": "x", "nodes": []}}, "solutionId"),
        ({"solutionId": "nope", "streamConfig": {"name": "x", "nodes": []}}, "solutionId"),
        ({"solutionId": "{solution}"}, "streamConfig"),
        (
            {"solutionId": "{solution}", "streamConfig": {}, "onNameConflict": "merge"},
            "onNameConflict",
        ),
        (
            {"solutionId": "{solution}", "streamConfig": {}, "allowNodeDeletion": "yes"},
            "allowNodeDeletion",
        ),
        ({"solutionId": "{solution}", "streamConfig": {}, "color": "blue"}, "color"),
    ],
)
def test_bad_import_requests_are_400_naming_the_field(client, solution_id, body, field):
    body = {
        key: (value.format(solution=solution_id) if isinstance(value, str) else value)
        for key, value in body.items()
    }
    error = assert_error_body(client.post(f"{BASE}/streams/import", body), 400)
    assert field in {detail["field"] for detail in error["details"]}, error


def test_bad_list_queries_are_400(client, solution_id):
    for params, field in [({"solutionId": "nope"}, "solutionId"), ({"limit": "101"}, "limit")]:
        error = assert_error_body(client.get(f"{BASE}/streams", params), 400)
        assert error["details"][0]["field"] == field
    assert_error_body(client.get(f"{BASE}/streams/not-a-uuid"), 404)


def test_listing_takes_the_same_queries_for_any_number_of_streams(client, solution_id, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.TALLY["TOKEN_CACHE_SECONDS"] = 60
    base = fixture("printing-as-a-service-with-metering.json")

    def list_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"{BASE}/streams")
        assert response.status_code == 200
        return len(queries)

    import_stream(client, solution_id, base | {"name": "one"})
    one = list_queries()
    assert one >= 3  # the streams, their latest versions, their keys
    for index in range(12):
        import_stream(client, solution_id, base | {"name": f"more {index}"})
    assert list_queries() == one
    assert len(client.get(f"{BASE}/streams").json()["streams"]) == 13
