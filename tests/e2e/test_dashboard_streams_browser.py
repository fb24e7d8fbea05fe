"""The streams pages in a real browser: an operator user opens a stream and sees its
graph drawn, exports it (the download is the API's export), imports an export file (and
reads why a broken one is refused); the pages fit a phone."""

from __future__ import annotations

import json

import pytest

from streams.models import Stream
from tenants.models import OperatorMembership
from tests.conftest import ApiClient
from tests.e2e.dashboard import (
    DESKTOP,
    PHONE,
    assert_fits,
    assert_no_horizontal_scroll,
    dashboard_login,
)
from tests.reporting.web.scene import PASSWORD, member, operator_scene
from tests.streams.runtime.helpers import FIXTURES, STREAMS, fixture, import_stream

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER
PRINTING = "printing-as-a-service-with-metering.json"
CULTFLICKS = "cultflicks-video-streaming.json"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_an_operator_user_opens_a_stream_sees_its_graph_and_exports_it(live_server, page):
    acme = operator_scene("Acme")
    original = fixture(PRINTING)
    stream = import_stream(ApiClient(acme.tenant.token), original)
    member("vera", (acme.operator, VIEWER))  # exporting is reading: viewers may
    page.set_viewport_size(DESKTOP)
    dashboard_login(page, live_server.url, "vera", PASSWORD)

    # 1. From the navigation to the stream's page.
    page.click("#nav-entries a:has-text('Streams')")
    page.click(f"#stream-list a:has-text('{original['name']}')")
    assert page.title().strip() == f"{original['name']} · Acme · Tally"

    # 2. The graph: every node and group drawn, as SVG on the page.
    diagram = page.locator("svg#stream-diagram")
    assert diagram.is_visible()
    assert diagram.locator("g.diagram-node").count() == len(original["nodes"])
    assert diagram.locator("path.diagram-edge").count() == len(original["edges"])
    assert diagram.locator("g.diagram-group").count() == len(original["nodeGroups"])
    drawn_width = diagram.bounding_box()["width"]
    assert 0 < drawn_width <= page.locator("#diagram-frame").bounding_box()["width"] + 1
    assert "fictional provider AlphaPrint" in page.inner_text("#stream-annotation")
    assert_no_horizontal_scroll(page)

    # At full size the graph scrolls inside its frame; the page still does not.
    page.click("#diagram-size")
    assert diagram.bounding_box()["width"] > drawn_width
    assert_no_horizontal_scroll(page)

    # A node links to its row of counts.
    (meter,) = [node["id"] for node in original["nodes"] if node["type"] == "transforms/meter"]
    page.click("#diagram-size")  # fitted again
    page.locator(f"g.diagram-node[data-node-id='{meter}']").click()
    page.wait_for_function("() => location.hash.startsWith('#node-')")
    assert page.locator("tr:target").get_attribute("data-node-id") == meter

    # 3. Export: the download is the API's export, byte for byte.
    with page.expect_download() as started:
        page.click("#export-stream")
    download = started.value
    assert download.suggested_filename == f"{original['name']}.json"
    content = open(download.path(), "rb").read()  # noqa: SIM115
    api_export = ApiClient(acme.tenant.token).get(f"{STREAMS}/{stream['id']}/export")
    assert content == api_export.content
    assert json.loads(content)["nodes"][0]["id"] == original["nodes"][0]["id"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_an_admin_imports_an_export_file(live_server, page, tmp_path):
    acme = operator_scene("Acme")
    member("bob", (acme.operator, ADMIN))
    dashboard_login(page, live_server.url, "bob", PASSWORD)
    page.goto(f"{live_server.url}/dashboard/streams/")
    assert page.locator("#streams-empty").is_visible()

    # A file that is not a stream is refused, saying why.
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"name": "Broken", "nodes": [{"id": "a", "type": "readers/x"}]}))
    page.click("#import-stream")
    page.set_input_files("#id_file", str(broken))
    with page.expect_navigation():
        page.click("#import-submit")
    assert "unknown function type 'readers/x'" in page.inner_text("#import-problems")
    assert not Stream.objects.exists()

    # An export file is imported and drawn.
    page.set_input_files("#id_file", str(FIXTURES / CULTFLICKS))
    with page.expect_navigation():
        page.click("#import-submit")
    stream = Stream.objects.get()
    assert page.url == f"{live_server.url}/dashboard/streams/{stream.pk}/"
    assert "imported" in page.inner_text("main")
    assert page.locator("svg#stream-diagram g.diagram-node").count() == 19


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_the_streams_pages_fit_a_phone(live_server, page):
    scene = operator_scene("A company with a rather long operator name that must not overflow")
    stream = import_stream(ApiClient(scene.tenant.token), fixture(PRINTING))
    member("wide", (scene.operator, ADMIN))
    dashboard_login(page, live_server.url, "wide", PASSWORD)

    for path in (
        "/dashboard/streams/",
        "/dashboard/streams/import/",
        f"/dashboard/streams/{stream['id']}/",
    ):
        assert_fits(page, f"{live_server.url}{path}")
        assert page.title().strip()

    # The graph at full size on a phone scrolls within its frame only.
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/dashboard/streams/{stream['id']}/")
    page.click("#diagram-size")
    assert_no_horizontal_scroll(page)
