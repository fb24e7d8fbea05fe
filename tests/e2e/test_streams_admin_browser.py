"""A staff member imports a stream export in a real browser and sees it drawn."""

from __future__ import annotations

import threading
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
    page.click("button[name=_import]")
    page.wait_for_url("**/change/")
    diagram = page.locator("svg.stream-diagram")
    assert diagram.is_visible()
    assert diagram.locator("g.node").count() == 19
    assert diagram.locator("line.edge").count() == 18
    page.screenshot(path=str(tmp_path / "stream.png"))
    diagram.screenshot(path=str(tmp_path / "diagram.png"))

    assert (tmp_path / "stream.png").stat().st_size > 0
    assert Stream.objects.get().created_by["type"] == "user"


PRINTING = FIXTURE.with_name("printing-as-a-service-with-metering.json")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_staff_execute_a_batch_stream_and_read_what_it_did(live_server, staff_page, tmp_path):
    """Import the printing example, run it from the list's action, then read the node
    activity, the execution and the failed record's node and reason in the browser."""
    from streams import services
    from streams.models import StreamExecution

    operator = operator_create(name="Printing Co")
    solution = solution_default(operator=operator)
    page = staff_page(viewport={"width": 1500, "height": 1100})
    page.goto(f"{live_server.url}/admin/streams/stream/import/")
    page.select_option("#id_solution", str(solution.pk))
    page.set_input_files("#id_file", str(PRINTING))
    page.click("button[name=_import]")
    page.wait_for_url("**/change/")
    stream = Stream.objects.get()
    services.stream_update(
        stream=stream, actor={"type": "user", "id": "t", "name": "t"}, processing_type="batch"
    )

    page.goto(f"{live_server.url}/admin/streams/stream/")
    page.check(f"input[name=_selected_action][value='{stream.pk}']")
    page.select_option("select[name=action]", "execute_now")
    page.click("button[name=index]")
    page.locator("text=execution queued").wait_for(timeout=10_000)
    (execution,) = StreamExecution.objects.all()
    run_like_a_worker(execution.pk)

    page.goto(f"{live_server.url}/admin/streams/streamexecution/{execution.pk}/change/")
    page.locator("text=SUCCEEDED").first.wait_for(timeout=10_000)
    page.goto(f"{live_server.url}/admin/streams/stream/{stream.pk}/change/")
    activity = page.locator("tr", has_text="Simulate Usage").first
    assert activity.is_visible()
    # No meters are provisioned: the meter node fails every valid record, and says why.
    assert page.locator("text=No meter for user").first.is_visible()
    page.screenshot(path=str(tmp_path / "activity.png"))


def run_like_a_worker(execution_id) -> None:
    """What the worker does, on a thread of its own that also closes the script
    isolates it made: V8 must neither run on the stack Playwright's synchronous API
    switches in and out of, nor outlive the thread that created it."""
    from streams import services
    from streams.runtime import sandbox

    def work() -> None:
        try:
            services.execution_run(execution_id=execution_id)
        finally:
            sandbox.runners.clear()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
