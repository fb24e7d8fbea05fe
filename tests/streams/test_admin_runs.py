"""Streams in the admin: running a batch stream from the list, and the pages that show
what it did (executions, versions, node errors), named as a person would say them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from streams import services
from streams.models import Stream, StreamExecution, StreamVersion
from tests.factories import CollectorFactory

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[3] / "shared/fixtures/usage-engine-streams"
ACTOR = {"type": "user", "id": "t", "name": "t"}


@pytest.fixture
def staff(staff_user) -> Client:
    browser = Client()
    browser.force_login(staff_user)
    return browser


def imported(operator, processing_type: str) -> Stream:
    config = json.loads((FIXTURES / "printing-as-a-service-with-metering.json").read_text())
    config["name"] = f"Printing ({processing_type})"
    result = services.stream_import(
        operator=operator,
        solution=services.solution_default(operator=operator),
        config=config,
        actor=ACTOR,
    )
    return services.stream_update(
        stream=result.stream, actor=ACTOR, processing_type=processing_type
    )


def test_staff_run_a_batch_stream_from_the_list(staff, acme):
    batch = imported(acme.operator, "batch")
    realtime = imported(acme.operator, "realtime")

    response = staff.post(
        "/admin/streams/stream/",
        {"action": "execute_now", "_selected_action": [str(batch.pk), str(realtime.pk)]},
        follow=True,
    )

    page = response.content.decode()
    assert "Printing (batch): execution queued." in page
    assert "Printing (realtime): Only batch streams are executed on demand" in page
    (execution,) = StreamExecution.objects.all()
    assert (execution.stream, execution.status, execution.trigger) == (
        batch,
        StreamExecution.Status.QUEUED,
        StreamExecution.Trigger.ADMIN,
    )
    assert str(execution).startswith("Printing (batch) · QUEUED · ")
    listed = staff.get("/admin/streams/streamexecution/").content.decode()
    assert f"/admin/streams/stream/{batch.pk}/change/" in listed


def test_an_execution_page_tables_what_each_node_did(staff, acme):
    batch = imported(acme.operator, "batch")
    execution = services.execution_create(stream=batch, trigger=StreamExecution.Trigger.ADMIN)
    services.execution_run(execution_id=execution.pk)

    page = staff.get(f"/admin/streams/streamexecution/{execution.pk}/change/").content.decode()

    assert "SUCCEEDED" in page
    assert "<th>node</th><th>in</th><th>out</th><th>failed</th>" in page
    assert "No meter for user" in page  # the first errors, with their reason


def test_versions_and_node_errors_have_pages_of_their_own(staff, acme):
    batch = imported(acme.operator, "batch")
    execution = services.execution_create(stream=batch, trigger=StreamExecution.Trigger.ADMIN)
    services.execution_run(execution_id=execution.pk)
    latest = StreamVersion.objects.get(stream=batch, is_latest=True)

    versions = staff.get("/admin/streams/streamversion/").content.decode()
    version = staff.get(f"/admin/streams/streamversion/{latest.pk}/change/").content.decode()
    errors = staff.get("/admin/streams/nodeerror/").content.decode()

    assert str(latest) == "Printing (batch) · latest"
    assert "Printing (batch)" in versions
    assert 'class="stream-diagram' in version
    assert "No meter for user" in errors


def test_a_stream_page_links_the_collectors_it_reads(staff, acme):
    collector = CollectorFactory(operator=acme.operator, name="Printers")
    config = {
        "name": "Reads printers",
        "nodes": [
            {
                "id": "source",
                "name": "Printers",
                "type": "readers/online_collection",
                "params": {"collectorId": str(collector.pk)},
            },
            {"id": "out", "name": "Out", "type": "writers/noop", "params": {}},
        ],
        "edges": [{"id": "e1", "from": "source", "to": "out"}],
    }
    stream = services.stream_import(
        operator=acme.operator,
        solution=services.solution_default(operator=acme.operator),
        config=config,
        actor=ACTOR,
    ).stream

    page = staff.get(f"/admin/streams/stream/{stream.pk}/change/").content.decode()

    assert f'href="/admin/collection/collector/{collector.pk}/change/">Printers<' in page
