"""A staff member imports a stream export in a real browser and sees it drawn."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.models import Stream
from streams.services import solution_default
from tenants.services import operator_create

FIXTURE = (
    Path(__file__).resolve().parents[3]
    / "shared/fixtures/usage-engine-streams/cultflicks-video-streaming.json"
)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_staff_import_a_stream_and_see_its_diagram(live_server, staff_page, tmp_path):

    solution = solution_default(operator=operator_create(name="CultFlicks"))

    page = staff_page(viewport={"width": 1500, "height": 1100})
    page.goto(f"{live_server.url}/admin/streams/stream/")
    page.click("text=Import a stream")
    page.select_option("#id_solution", str(solution.pk))
    page.set_input_files("#id_file", str(FIXTURE))
    page.click("input[type=submit]")
    page.wait_for_url("**/change/")
    diagram = page.locator("svg.stream-diagram")
    assert diagram.is_visible()
    assert diagram.locator("g.node").count() == 19
    assert diagram.locator("line.edge").count() == 18
    page.screenshot(path=str(tmp_path / "stream.png"), full_page=True)
    diagram.screenshot(path=str(tmp_path / "diagram.png"))

    assert (tmp_path / "stream.png").stat().st_size > 0
    assert Stream.objects.get().created_by["type"] == "user"
