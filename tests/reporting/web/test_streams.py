"""The streams pages (`/dashboard/streams/…`): the list, the graph drawn from the
export format (node groups and annotations included), per-node counters and last
errors, versions and executions; import through the API's service with its problems on
the page, and export equal to the API's."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from streams import services
from streams.models import NodeError, Stream
from streams.runtime.runner import node_counts
from tenants.models import OperatorMembership
from tests.conftest import ApiClient
from tests.reporting.web.scene import member, operator_scene
from tests.streams.runtime.helpers import (
    FIXTURES,
    PRINTING_TYPE,
    STREAMS,
    create_meter,
    create_meter_type,
    fixture,
    import_stream,
    ingest,
    meter_key,
    process_all,
    set_stream,
    simple_stream,
)

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER
PRINTING = "printing-as-a-service-with-metering.json"
CULTFLICKS = "cultflicks-video-streaming.json"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


def title(page: str) -> str:
    return " ".join(re.search(r"<title>(.*?)</title>", page, re.S).group(1).split())


def section(page: str, element_id: str, end: str) -> str:
    return between(page, f'id="{element_id}"', end)


def between(text: str, start: str, end: str) -> str:
    """The text after the first `start`, up to the next `end`."""
    return text.split(start, 1)[1].split(end, 1)[0]


def api(scene) -> ApiClient:
    return ApiClient(scene.tenant.token)


def counter_stream(name: str = "Counting", count: int = 3) -> dict:
    """A batch-ready stream: a counter reader into a log writer."""
    return {
        "name": name,
        "nodes": [
            {"id": "count", "name": "Count", "type": "readers/counter", "params": {"max": count}},
            {"id": "log", "name": "Log", "type": "writers/log", "params": {}},
        ],
        "edges": [{"id": "e", "from": "count", "to": "log"}],
    }


def upload(name: str, content: bytes, **fields) -> dict:
    return {
        "file": SimpleUploadedFile(name, content, "application/json"),
        "on_name_conflict": "overwrite",
        **fields,
    }


def node_row(page: str, node_id: str) -> str:
    return page.split(f'data-node-id="{node_id}"', 2)[2].split("</tr>", 1)[0]


def cells(row: str) -> dict[str, str]:
    """A node row's counts by column."""
    return dict(re.findall(r'data-label="(In|Out|Failed)"[^>]*>(?:<span[^>]*>)?([\d,]+)', row))


@pytest.fixture
def acme():
    return operator_scene("Acme")


@pytest.fixture
def bob(acme, browser_as):
    return browser_as(member("bob", (acme.operator, ADMIN)))


def test_an_anonymous_visitor_is_sent_to_log_in(acme):
    stream = import_stream(api(acme), counter_stream())
    for path in (
        "/dashboard/streams/",
        "/dashboard/streams/import/",
        f"/dashboard/streams/{stream['id']}/",
        f"/dashboard/streams/{stream['id']}/export/",
    ):
        response = Client().get(path)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={path}"
    response = Client().post("/dashboard/streams/import/", upload("a.json", b"{}"))
    assert response["Location"].startswith("/login/")
    assert Stream.objects.count() == 1


def test_the_list_shows_the_operators_streams_and_what_they_did(acme, bob):
    printing = import_stream(api(acme), fixture(PRINTING))
    set_stream(api(acme), printing["id"], processingType="batch")
    realtime = import_stream(api(acme), simple_stream(str(acme.collector.pk), name="Usage"))
    set_stream(api(acme), realtime["id"], enabled=True)
    ingest(api(acme), str(acme.collector.pk), [{"id": "a", "printerId": "p-1", "sheets": 1}])
    process_all(str(acme.collector.pk))  # no meter: the record fails at the meter node
    other = operator_scene("Globex")
    import_stream(api(other), counter_stream("Globex counting"))

    response = bob.get("/dashboard/streams/")

    page = response.content.decode()
    assert response.status_code == 200
    assert title(page) == "Streams · Acme · Tally"
    assert "Globex counting" not in page
    printing_row = between(page, f'data-stream="{printing["id"]}"', "</tr>")
    assert "Printing As A Service with Metering" in printing_row and "Disabled" in printing_row
    assert re.search(r'data-label="Nodes"[^>]*>23<', printing_row)
    assert "never run" in printing_row
    usage_row = between(page, f'data-stream="{realtime["id"]}"', "</tr>")
    assert "Enabled" in usage_row and "Realtime" in usage_row
    assert re.search(r'data-label="Records failed".*?>1<', usage_row, re.S)
    assert 'id="import-stream"' in page  # an admin may import
    # A page that does not exist shows the nearest one.
    for number in ("abc", "0", "99"):
        assert (
            "Printing As A Service"
            in bob.get(f"/dashboard/streams/?page={number}").content.decode()
        )


def test_an_operator_without_streams_is_told_how_to_get_one(acme, browser_as):
    vera = browser_as(member("vera", (acme.operator, VIEWER)))

    page = vera.get("/dashboard/streams/").content.decode()

    assert 'id="streams-empty"' in page
    assert "An admin of Acme can import one" in page
    assert 'id="import-stream"' not in page


def test_the_list_costs_the_same_queries_for_one_stream_as_for_many(acme, bob):
    import_stream(api(acme), counter_stream("First"))
    bob.get("/dashboard/streams/")
    with CaptureQueriesContext(connection) as one:
        bob.get("/dashboard/streams/")

    for index in range(3):
        stream = import_stream(api(acme), counter_stream(f"Batch {index}"))
        set_stream(api(acme), stream["id"], processingType="batch")
        execution = api(acme).post(f"{STREAMS}/{stream['id']}/executions").json()
        services.execution_run(execution_id=execution["id"])
    import_stream(api(acme), fixture(PRINTING))
    with CaptureQueriesContext(connection) as many:
        page = bob.get("/dashboard/streams/").content.decode()

    assert page.count("data-stream=") == 5
    assert page.count("Succeeded") == 3
    assert len(many) == len(one), [query["sql"] for query in many]


def test_the_graph_is_drawn_from_the_export_with_its_groups_and_annotations(acme, bob):
    original = fixture(PRINTING)
    stream = import_stream(api(acme), original)

    page = bob.get(f"/dashboard/streams/{stream['id']}/").content.decode()

    svg = section(page, "stream-diagram", "</svg>")
    drawn = re.findall(r'class="diagram-node kind-(\w+)[^"]*" data-node-id="([^"]+)"', svg)
    assert {node_id for _, node_id in drawn} == {node["id"] for node in original["nodes"]}
    kinds = {node_id: kind for kind, node_id in drawn}
    assert kinds["5c32a5b0-02b5-11e9-9f17-81651dddad53"] == "reader"  # Count
    assert svg.count('class="diagram-edge"') == len(original["edges"])
    assert svg.count('class="diagram-group ') == len(original["nodeGroups"])
    # Groups are numbered as they are read, left to right; the list gives them in full.
    listed = re.findall(
        r'data-group="(\d+)">\s*<span class="font-medium text-important">\d+ · ([^<]+)</span>'
        r".*?<p[^>]*>([^<]+)</p>",
        section(page, "group-list", "</ol>"),
        re.S,
    )
    assert sorted((name, text) for _, name, text in listed) == sorted(
        (group["name"], group["annotation"]["text"]) for group in original["nodeGroups"]
    )
    assert [int(number) for number, _, _ in listed] == list(range(1, 12))
    assert listed[0][1] == "Generate sample data"  # the leftmost: the counter's
    for number, name, _ in listed:
        assert re.search(rf">{number} · {re.escape(name[:8])}[^<]*</text>", svg)
    # The meter's and the splits' outputs name their edges.
    labels = re.findall(r'class="diagram-edge-label"[^>]*>([^<]+)<', svg)
    assert {"threshold", "reset", "EMAIL", "DEACTIVATE", "Low Ink"} <= set(labels)
    # The stream's own annotation, paragraph by paragraph.
    note = section(page, "stream-annotation", "</aside>")
    assert "tally-note-blue" in page.split('id="stream-annotation"', 1)[0][-200:]
    assert note.count("<p>") == 3
    assert "fictional provider AlphaPrint" in note


def test_nodes_without_places_are_laid_out_without_overlapping(acme, bob):
    stream = import_stream(api(acme), simple_stream(str(acme.collector.pk)))

    page = bob.get(f"/dashboard/streams/{stream['id']}/").content.decode()

    boxes = [
        (int(x), int(y))
        for x, y in re.findall(
            r'class="diagram-node [^"]*"[^>]*>\s*<title>.*?</title>\s*'
            r'<rect x="(-?\d+)" y="(-?\d+)"',
            section(page, "stream-diagram", "</svg>"),
            re.S,
        )
    ]
    assert len(boxes) == 5
    for index, (x, y) in enumerate(boxes):
        for other_x, other_y in boxes[index + 1 :]:
            assert abs(x - other_x) >= 132 or abs(y - other_y) >= 64, boxes
    # Collector → map → meter run left to right.
    assert boxes[0][0] < boxes[1][0] < boxes[2][0]


def test_each_node_shows_its_counts_and_last_error(acme, bob):
    stream = import_stream(api(acme), simple_stream(str(acme.collector.pk)))
    set_stream(api(acme), stream["id"], enabled=True)
    # A meter for printer p-0 only: its record is applied, the two others fail.
    meter_type = create_meter_type(api(acme), PRINTING_TYPE)
    key = meter_key(api(acme), stream["id"])
    create_meter(api(acme), {"userId": "p-0", "meterKey": key, "meterTypeId": meter_type["id"]})
    records = [{"id": f"r{n}", "printerId": f"p-{n}", "sheets": 1} for n in range(3)]
    ingest(api(acme), str(acme.collector.pk), records)
    process_all(str(acme.collector.pk))

    page = bob.get(f"/dashboard/streams/{stream['id']}/").content.decode()

    # The runtime's counts: failed records count where they failed, and nowhere else
    # (nothing they caused is kept).
    counts = node_counts(stream["id"])
    assert counts["meter"] == {"in": 3, "out": 0, "failed": 2}
    for node_id in ("source", "normalize", "meter"):
        shown = cells(node_row(page, node_id))
        assert shown == {kind.capitalize(): str(n) for kind, n in counts[node_id].items()}
    assert cells(node_row(page, "normalize")) == {"In": "1", "Out": "1", "Failed": "0"}
    meter = node_row(page, "meter")
    error = NodeError.objects.get(stream_id=stream["id"], node_id="meter")
    assert error.reason in meter and error.reason.startswith("No meter for user p-")
    assert f"{error.at:%-d %b %Y, %H:%M:%S} UTC" in meter
    assert "none" in node_row(page, "normalize")
    reads = section(page, "stream-collectors", "</dd>")
    assert f'href="/dashboard/collectors/{acme.collector.pk}/"' in reads and "Acme records" in reads
    # On the graph: the meter node is marked, with a badge counting its failures.
    svg = section(page, "stream-diagram", "</svg>")
    assert 'kind-transform has-failures" data-node-id="meter"' in svg
    assert 'class="diagram-badge-text">2<' in svg
    assert "3 in · 0 out" in svg and "1 in · 1 out" in svg


def test_the_stream_page_costs_the_same_queries_however_much_it_shows(acme, bob):
    small = import_stream(api(acme), counter_stream("Small"))
    bob.get(f"/dashboard/streams/{small['id']}/")
    with CaptureQueriesContext(connection) as few:
        bob.get(f"/dashboard/streams/{small['id']}/")

    config = fixture(PRINTING)
    big = import_stream(api(acme), {**config, "tag": "v1"})
    import_stream(api(acme), {**config, "tag": "v2"})
    set_stream(api(acme), big["id"], processingType="batch")
    for _ in range(3):
        execution = api(acme).post(f"{STREAMS}/{big['id']}/executions").json()
        services.execution_run(execution_id=execution["id"])
    with CaptureQueriesContext(connection) as many:
        page = bob.get(f"/dashboard/streams/{big['id']}/").content.decode()

    assert page.count('data-execution="') == 3
    assert page.count("data-version=") == 3
    assert len(many) == len(few), [query["sql"] for query in many]


def test_versions_are_listed_with_the_current_one_marked(acme, bob):
    config = fixture(CULTFLICKS)
    stream = import_stream(api(acme), {**config, "tag": "v1"})
    changed = {
        **config,
        "tag": "v2",
        "nodes": [{**config["nodes"][0], "name": "Renamed"}, *config["nodes"][1:]],
    }
    import_stream(api(acme), changed)
    path = f"/dashboard/streams/{stream['id']}/"

    page = bob.get(path).content.decode()

    versions = section(page, "version-list", "</ul>")
    current = between(versions, 'data-version="current"', "</li>")
    assert "v2" in current and "Current" in current and "19 nodes" in current
    assert 'data-version="v1"' in versions and 'data-version="v2"' in versions
    assert "Renamed" in section(page, "stream-diagram", "</svg>")

    older = bob.get(f"{path}?tag=v1").content.decode()
    assert 'id="viewing-version"' in older
    assert "Renamed" not in section(older, "stream-diagram", "</svg>")
    assert bob.get(f"{path}?tag=v9").status_code == 404
    assert bob.get(f"{path}?tag=v%00").status_code == 404
    assert bob.get(f"/dashboard/streams/{stream['id']}/export/?tag=v%00").status_code == 404


def test_executions_are_listed_with_their_status(acme, bob):
    stream = import_stream(api(acme), counter_stream(count=4))
    set_stream(api(acme), stream["id"], processingType="batch")
    path = f"/dashboard/streams/{stream['id']}/"
    assert 'id="executions-empty"' in bob.get(path).content.decode()

    done = api(acme).post(f"{STREAMS}/{stream['id']}/executions").json()
    services.execution_run(execution_id=done["id"])
    queued = api(acme).post(f"{STREAMS}/{stream['id']}/executions").json()

    executions = section(bob.get(path).content.decode(), "execution-list", "</ul>")
    assert executions.index(queued["id"]) < executions.index(done["id"])  # newest first
    assert "Queued" in between(executions, f'data-execution="{queued["id"]}"', "</li>")
    finished = between(executions, f'data-execution="{done["id"]}"', "</li>")
    assert "Succeeded" in finished and "4 read" in finished


def test_the_export_is_the_apis_export(acme, browser_as):
    config = fixture(PRINTING)
    stream = import_stream(api(acme), {**config, "tag": "v1"})
    vera = browser_as(member("vera", (acme.operator, VIEWER)))  # viewers may export

    for query in ("", "?tag=v1"):
        download = vera.get(f"/dashboard/streams/{stream['id']}/export/{query}")
        assert download.status_code == 200
        assert download["Content-Type"] == "application/json"
        assert download["Content-Disposition"].startswith("attachment;")
        from_api = api(acme).get(f"{STREAMS}/{stream['id']}/export{query}")
        assert download.content == from_api.content
    exported = json.loads(download.content)
    assert exported["tag"] == "v1"
    meters = [node for node in exported["nodes"] if node["type"] == "transforms/meter"]
    assert meters[0]["meterKey"]  # the generated keys, as the API shows them
    assert vera.get(f"/dashboard/streams/{stream['id']}/export/?tag=v9").status_code == 404


def test_another_operators_stream_is_a_404(acme, bob):
    other = operator_scene("Globex")
    theirs = import_stream(api(other), counter_stream("Globex counting"))

    for path in (
        f"/dashboard/streams/{theirs['id']}/",
        f"/dashboard/streams/{theirs['id']}/export/",
        f"/dashboard/streams/{uuid.uuid4()}/",
    ):
        response = bob.get(path)
        assert response.status_code == 404
        assert "Globex counting" not in response.content.decode()


def test_an_admin_imports_an_export_file_and_sees_it(acme, bob):
    content = (FIXTURES / CULTFLICKS).read_bytes()

    response = bob.post("/dashboard/streams/import/", upload(CULTFLICKS, content))

    stream = Stream.objects.get(operator=acme.operator)
    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/streams/{stream.pk}/"
    page = bob.get(response["Location"]).content.decode()
    assert f"Stream “{stream.name}”: imported." in page
    assert section(page, "stream-diagram", "</svg>").count("data-node-id=") == 19
    listed = api(acme).get(STREAMS, {"name": stream.name}).json()["streams"]
    assert [item["id"] for item in listed] == [str(stream.pk)]
    assert listed[0]["createdBy"]["name"] == "bob"
    assert listed[0]["enabled"] is False

    # The same file again, as a copy; then skipped.
    bob.post(
        "/dashboard/streams/import/", upload(CULTFLICKS, content, on_name_conflict="create-new")
    )
    assert Stream.objects.filter(name=f"{stream.name} (Copy)").exists()
    skipped = bob.post(
        "/dashboard/streams/import/",
        upload(CULTFLICKS, content, on_name_conflict="skip"),
        follow=True,
    )
    assert "not imported: a stream of that name exists" in skipped.content.decode()
    assert Stream.objects.count() == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json {", "This is not a stream export: it is not JSON"),
        (b"[1, 2]", "the file must hold one JSON object"),
        (b"", "The submitted file is empty."),
    ],
)
def test_a_file_that_is_not_an_export_is_refused_with_a_message(acme, bob, content, message):
    response = bob.post("/dashboard/streams/import/", upload("x.json", content))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Stream.objects.exists()


def test_the_imports_problems_name_the_node_or_edge(acme, bob):
    other = operator_scene("Globex")
    config = {
        "name": "Broken",
        "nodes": [
            {
                "id": "in",
                "name": "Theirs",
                "type": "readers/online_collection",
                "params": {"collectorId": str(other.collector.pk)},
            },
            {"id": "odd", "name": "Odd", "type": "transforms/teleport", "params": {}},
        ],
        "edges": [{"id": "e1", "from": "in", "to": "nowhere"}],
    }

    response = bob.post("/dashboard/streams/import/", upload("b.json", json.dumps(config).encode()))

    assert response.status_code == 400
    problems = section(response.content.decode(), "import-problems", "</ul>")
    assert "streamConfig.nodes[1]" in problems and "unknown function type" in problems
    assert "node in (Theirs): no such collector." in problems
    assert "streamConfig.edges[0]" in problems and "no node &#x27;nowhere&#x27;" in problems
    assert not Stream.objects.exists()
    # The API refuses the same configuration for the same reasons.
    from_api = api(acme).post(
        f"{STREAMS}/import",
        {
            "solutionId": str(services.solution_default(operator=acme.operator).pk),
            "streamConfig": config,
        },
    )
    assert from_api.status_code == 400
    assert {detail["field"] for detail in from_api.json()["details"]} == {
        "streamConfig.nodes[0]",
        "streamConfig.nodes[1]",
        "streamConfig.edges[0]",
    }


def test_an_overwrite_that_drops_nodes_needs_permission(acme, bob):
    config = counter_stream()
    import_stream(api(acme), config)
    fewer = {**config, "nodes": config["nodes"][:1], "edges": []}
    content = json.dumps(fewer).encode()

    refused = bob.post("/dashboard/streams/import/", upload("f.json", content))
    assert refused.status_code == 409
    assert "The import would delete these nodes" in refused.content.decode()

    allowed = bob.post(
        "/dashboard/streams/import/", upload("f.json", content, allow_node_deletion="on")
    )
    assert allowed.status_code == 302
    exported = api(acme).get(f"{STREAMS}/{Stream.objects.get().pk}/export").json()
    assert [node["id"] for node in exported["nodes"]] == ["count"]


def test_a_viewer_may_read_but_not_import(acme, browser_as):
    vera = browser_as(member("vera", (acme.operator, VIEWER)))
    content = (FIXTURES / CULTFLICKS).read_bytes()

    page = vera.get("/dashboard/streams/import/").content.decode()
    assert 'id="import-read-only"' in page and 'id="import-form"' not in page

    response = vera.post("/dashboard/streams/import/", upload(CULTFLICKS, content))
    assert response.status_code == 403
    assert "read-only access to Acme" in response.content.decode()
    assert not Stream.objects.exists()


def test_importing_needs_the_pages_csrf_token(acme):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(member("bob", (acme.operator, ADMIN)))
    content = (FIXTURES / CULTFLICKS).read_bytes()

    refused = browser.post("/dashboard/streams/import/", upload(CULTFLICKS, content))
    assert refused.status_code == 403
    assert not Stream.objects.exists()

    form = browser.get("/dashboard/streams/import/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    accepted = browser.post(
        "/dashboard/streams/import/",
        {**upload(CULTFLICKS, content), "csrfmiddlewaretoken": token},
    )
    assert accepted.status_code == 302
    assert Stream.objects.filter(operator=acme.operator).count() == 1


def test_another_operators_solution_cannot_receive_an_import(acme, bob):
    other = operator_scene("Globex")
    theirs = services.solution_default(operator=other.operator)
    content = json.dumps(counter_stream()).encode()

    response = bob.post("/dashboard/streams/import/", upload("c.json", content, solution=theirs.pk))

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not Stream.objects.exists()
