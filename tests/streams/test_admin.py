"""The streams admin: diagrams, node params, import from a file, export as a download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from streams.models import Stream
from streams.services import solution_default

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[3] / "shared/fixtures/usage-engine-streams"


@pytest.fixture
def client():
    """Django's test client: these are admin pages, not the API (whose `client` the
    app's conftest gives)."""
    from django.test import Client

    return Client()


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


def upload(staff, solution, name: str, **options):
    data = {
        "solution": solution.pk,
        "file": SimpleUploadedFile(name, (FIXTURES / name).read_bytes(), "application/json"),
        "on_name_conflict": options.get("on_name_conflict", "overwrite"),
    }
    return staff.post("/admin/streams/stream/import/", data)


def test_staff_import_a_file_see_the_diagram_and_download_the_export(staff, acme):
    solution = solution_default(operator=acme.operator)
    name = "printing-as-a-service-with-metering.json"
    response = upload(staff, solution, name)
    assert response.status_code == 302, response.content.decode()[:2000]
    stream = Stream.objects.get()
    assert stream.created_by == {
        "type": "user",
        "id": str(staff.session["_auth_user_id"]),
        "name": "alice",
    }

    page = staff.get(f"/admin/streams/stream/{stream.pk}/change/").content.decode()
    original = json.loads((FIXTURES / name).read_text())
    assert page.count('class="node"') == len(original["nodes"])
    assert page.count('class="edge"') == len(original["edges"])
    assert page.count('class="node-group"') == len(original["nodeGroups"])
    assert "guidingRules" in page  # the meter node's params, shown read-only
    assert "Import a stream" in staff.get("/admin/streams/stream/").content.decode()

    download = staff.post(
        "/admin/streams/stream/",
        {"action": "download_exports", "_selected_action": [stream.pk]},
    )
    assert download["Content-Disposition"].startswith("attachment;")
    exported = json.loads(download.content)
    for node in exported["nodes"]:
        node.pop("meterKey", None)
    assert exported == original


def test_an_invalid_file_is_a_form_error(staff, acme):
    solution = solution_default(operator=acme.operator)
    bad = SimpleUploadedFile("bad.json", b'{"name": "x", "nodes": [{"id": "a", "type": "nope"}]}')
    response = staff.post(
        "/admin/streams/stream/import/",
        {"solution": solution.pk, "file": bad, "on_name_conflict": "overwrite"},
    )
    assert response.status_code == 200
    assert "unknown function type" in response.content.decode()
    not_json = SimpleUploadedFile("bad.json", b"{")
    response = staff.post(
        "/admin/streams/stream/import/",
        {"solution": solution.pk, "file": not_json, "on_name_conflict": "overwrite"},
    )
    assert "Not a stream export" in response.content.decode()
    assert not Stream.objects.exists()


@pytest.mark.parametrize("model", ["solution", "stream"])
def test_changelists_answer(staff, acme, model):
    solution_default(operator=acme.operator)
    assert staff.get(f"/admin/streams/{model}/").status_code == 200
