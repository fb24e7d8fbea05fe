"""The collectors pages (`/dashboard/collectors/…`): counts from the rollups, where and
how to send records, failed records with the node and reason a stream stored, and
re-queueing them, only for the operator's admins."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from collection.models import Record
from collection.services import collector_delete
from reporting.web.collectors import FAILED_PAGE_SIZE
from streams.runtime.engine import Failure
from tenants.models import OperatorMembership
from tests.conftest import ApiClient
from tests.reporting.web.scene import events_add, member, operator_scene
from tests.streams.runtime.helpers import (
    import_stream,
    ingest,
    process_all,
    set_stream,
    simple_stream,
)

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER
COLLECTORS = "/online-collection/v1/collectors"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


def title(page: str) -> str:
    return " ".join(re.search(r"<title>(.*?)</title>", page, re.S).group(1).split())


def page_of(collector) -> str:
    return f"/dashboard/collectors/{collector.pk}/"


def requeue_path(collector) -> str:
    return f"/dashboard/collectors/{collector.pk}/requeue/"


def failed_list(page: str) -> str:
    """The failed records' list of a collector's page ("" when it shows none)."""
    if 'id="failed-list"' not in page:
        return ""
    return page.split('id="failed-list"', 1)[1].split("</ul>", 1)[0]


def stats(scene) -> dict:
    response = ApiClient(scene.tenant.token).get(f"{COLLECTORS}/{scene.collector.pk}/stats")
    assert response.status_code == 200
    return response.json()["counts"]


def failing_stream(scene, printers: list[str]) -> dict:
    """The scene's collector read by an enabled stream (collector → map → meter) with no
    meters: each record sent (one per printer) fails at the meter node."""
    client = ApiClient(scene.tenant.token)
    stream = import_stream(client, simple_stream(str(scene.collector.pk), name="Printing"))
    set_stream(client, stream["id"], enabled=True)
    records = [
        {"id": f"job-{index}", "type": "print", "printerId": printer, "sheets": 2}
        for index, printer in enumerate(printers)
    ]
    ingest(client, str(scene.collector.pk), records)
    assert process_all(str(scene.collector.pk)) == len(records)
    return stream


def test_an_anonymous_visitor_is_sent_to_log_in():
    scene = operator_scene("Acme")
    for path in ("/dashboard/collectors/", page_of(scene.collector)):
        response = Client().get(path)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={path}"
    response = Client().post(requeue_path(scene.collector), {"all": "1"})
    assert response["Location"].startswith("/login/")


def test_the_list_shows_each_collector_with_its_records_by_status(
    acme_scene, globex_scene, browser_as
):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    response = bob.get("/dashboard/collectors/")

    assert response.status_code == 200
    page = response.content.decode()
    assert title(page) == "Collectors · Acme · Tally"
    row = page.split(f'data-collector="{acme_scene.collector.pk}"', 1)[1].split("</tr>", 1)[0]
    assert "Acme records" in row and "Active" in row
    counts = re.findall(r'data-label="([\w ]+)" class="tally-cell tally-number">\s*(\d*)', row)
    assert dict(counts) == {"Processed": "5", "Waiting": "0", "In progress": "0", "Failed": ""}
    assert ">1</a>" in row.split('data-label="Failed"', 1)[1]  # links to the failed records
    assert stats(acme_scene) == {"UNPROCESSED": 0, "IN_PROGRESS": 0, "PROCESSED": 5, "FAILED": 1}
    assert "Globex records" not in page


def test_an_operator_without_collectors_is_told_how_to_make_one(browser_as):
    scene = operator_scene("Initech")
    collector_delete(collector=scene.collector)
    bob = browser_as(member("bob", (scene.operator, ADMIN)))

    page = bob.get("/dashboard/collectors/").content.decode()

    assert 'id="collectors-empty"' in page
    assert "POST /online-collection/v1/collectors" in page


def test_the_list_costs_the_same_queries_for_one_collector_as_for_five(browser_as):
    scene = operator_scene("Acme")
    bob = browser_as(member("bob", (scene.operator, ADMIN)))
    bob.get("/dashboard/collectors/")
    with CaptureQueriesContext(connection) as one:
        bob.get("/dashboard/collectors/")

    client = ApiClient(scene.tenant.token)
    for index in range(4):
        assert client.post(COLLECTORS, {"name": f"More {index}"}).status_code == 201
    events_add(scene, [timezone.now()] * 3, failing=2)
    with CaptureQueriesContext(connection) as five:
        page = bob.get("/dashboard/collectors/").content.decode()

    assert page.count("data-collector=") == 5
    assert len(five) == len(one), [query["sql"] for query in five]


def test_a_collector_page_says_where_and_how_to_send_records(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    collector = acme_scene.collector

    page = bob.get(page_of(collector)).content.decode()

    url = f"http://testserver/online-collection/v1/collectors/{collector.pk}/data"
    assert f'id="ingestion-url" aria-labelledby="ingestion-url-label">{url}<' in page
    example = re.search(r'id="curl-example"[^>]*>(.*?)</pre>', page, re.S).group(1)
    example = example.replace("&quot;", '"').replace("&#x27;", "'").replace("&amp;", "&")
    assert "curl -s http://testserver/oauth/token" in example
    assert f"curl -s {url}" in example
    assert '"audience": "http://localhost:8000"' in example
    # Placeholders only: no credential of the operator is on the page.
    assert "YOUR_CLIENT_ID" in example and "YOUR_CLIENT_SECRET" in example
    assert acme_scene.tenant.client_secret not in page
    assert acme_scene.tenant.client_id not in page

    # The example works as written, once the placeholders are filled in.
    credentials, records = re.findall(r"-d '([^']*)'", example)
    credentials = credentials.replace("YOUR_CLIENT_ID", acme_scene.tenant.client_id).replace(
        "YOUR_CLIENT_SECRET", acme_scene.tenant.client_secret
    )
    token = Client().post("/oauth/token", credentials, content_type="application/json")
    assert token.status_code == 200, token.content
    sent = ApiClient(token.json()["access_token"]).post(url.removeprefix("http://testserver"))
    assert sent.status_code == 400  # no body: the API says what is missing
    sent = ApiClient(token.json()["access_token"]).post(
        url.removeprefix("http://testserver"), json.loads(records)
    )
    assert sent.status_code == 202, sent.content
    assert sent.json()["accepted"] == 1


def test_the_counts_by_status_are_the_apis(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    page = bob.get(page_of(acme_scene.collector)).content.decode()

    shown = {
        status: re.search(
            rf'id="count-{status.lower()}".*?tally-figure[^>]*>([^<]*)<', page, re.S
        ).group(1)
        for status in ("PROCESSED", "UNPROCESSED", "IN_PROGRESS", "FAILED")
    }
    assert shown == {key: str(value) for key, value in stats(acme_scene).items()}
    assert "No record is waiting to be processed." in page


def test_a_failed_record_shows_the_node_and_the_reason_of_its_failure(browser_as):
    scene = operator_scene("Acme")
    stream = failing_stream(scene, ["printer-7"])
    bob = browser_as(member("bob", (scene.operator, ADMIN)))

    page = bob.get(page_of(scene.collector)).content.decode()

    failed = failed_list(page)
    assert "job-0" in failed
    assert '<span class="font-medium text-important failed-node">Meter</span>' in failed
    assert "(meter)" in failed
    assert "No meter for user printer-7 in category Printing" in failed
    assert f'href="/dashboard/streams/{stream["id"]}/"' in failed  # the node's stream
    assert '"printerId": "printer-7"' in failed.replace("&quot;", '"')
    # The stream reading the collector is listed too.
    assert "Printing" in page.split('id="reader-list"', 1)[1].split("</ul>", 1)[0]


def test_a_failure_without_a_node_shows_its_reason_alone(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    failed = failed_list(bob.get(page_of(acme_scene.collector)).content.decode())

    assert "No meter for this customer" in failed
    assert "not recorded" in failed


def test_a_failure_is_read_back_as_the_runtime_described_it():
    described = Failure(uuid.uuid4(), "split-1", "Route (EU)", "bad: value").describe()
    assert Failure.read(described) == ("split-1", "Route (EU)", "bad: value")
    assert Failure.read("Meter (meter): No meter for user 7") == (
        "meter",
        "Meter",
        "No meter for user 7",
    )
    assert Failure.read("Route (EU) (split-1): bad: value") == (
        "split-1",
        "Route (EU)",
        "bad: value",
    )
    assert Failure.read("ValueError: no") == ("", "", "ValueError: no")
    assert Failure.read(None) == ("", "", "")


def test_failed_records_come_a_page_at_a_time_for_the_same_queries(browser_as):
    scene = operator_scene("Acme")
    bob = browser_as(member("bob", (scene.operator, ADMIN)))
    events_add(scene, [timezone.now()], failing=1)
    bob.get(page_of(scene.collector))
    with CaptureQueriesContext(connection) as one:
        bob.get(page_of(scene.collector))

    events_add(scene, [timezone.now()] * (FAILED_PAGE_SIZE + 4), failing=FAILED_PAGE_SIZE + 4)
    with CaptureQueriesContext(connection) as many:
        first = bob.get(page_of(scene.collector)).content.decode()
    second = bob.get(f"{page_of(scene.collector)}?page=2").content.decode()

    assert failed_list(first).count("data-record=") == FAILED_PAGE_SIZE
    assert failed_list(second).count("data-record=") == 5
    assert "records 26\N{EN DASH}30 of 30" in second
    assert len(many) == len(one), [query["sql"] for query in many]
    # Nonsense or a page past the end shows the nearest page, never an error.
    for page in ("abc", "0", "-3", "99", "1" * 40):
        response = bob.get(f"{page_of(scene.collector)}?page={page}")
        assert response.status_code == 200, page
        assert failed_list(response.content.decode()).count("data-record=") > 0


def test_an_admin_requeues_a_failed_record_and_it_leaves_the_failed_list(browser_as):
    scene = operator_scene("Acme")
    failing_stream(scene, ["printer-1", "printer-2"])
    bob = browser_as(member("bob", (scene.operator, ADMIN)))
    chosen = Record.objects.get(collector=scene.collector, record_id="job-1")

    response = bob.post(requeue_path(scene.collector), {"record": str(chosen.pk), "page": "1"})

    assert response.status_code == 302
    assert response["Location"] == f"{page_of(scene.collector)}?page=1"
    page = bob.get(response["Location"]).content.decode()
    assert "1 record queued again" in page
    failed = failed_list(page)
    assert "job-1" not in failed and "job-0" in failed
    assert stats(scene)["FAILED"] == 1 and stats(scene)["UNPROCESSED"] == 1
    chosen.refresh_from_db()
    assert chosen.status == Record.Status.UNPROCESSED and chosen.failure_reason is None


def test_an_admin_requeues_every_failed_record_at_once(browser_as):
    scene = operator_scene("Acme")
    failing_stream(scene, ["printer-1", "printer-2", "printer-3"])
    bob = browser_as(member("bob", (scene.operator, ADMIN)))

    page = bob.post(requeue_path(scene.collector), {"all": "1"}, follow=True).content.decode()

    assert "3 failed records queued again" in page
    assert 'id="failed-empty"' in page
    assert stats(scene) == {"UNPROCESSED": 3, "IN_PROGRESS": 0, "PROCESSED": 0, "FAILED": 0}
    # Nothing left: said so, nothing changes.
    page = bob.post(requeue_path(scene.collector), {"all": "1"}, follow=True).content.decode()
    assert "nothing to re-queue" in page


def test_a_viewer_sees_the_failures_but_cannot_requeue_them(browser_as):
    scene = operator_scene("Acme")
    failing_stream(scene, ["printer-1"])
    vera = browser_as(member("vera", (scene.operator, VIEWER)))
    record = Record.objects.get(collector=scene.collector)

    page = vera.get(page_of(scene.collector)).content.decode()
    assert "job-0" in failed_list(page)
    assert "Re-queue" not in page  # no buttons offered

    for body in ({"record": str(record.pk)}, {"all": "1"}):
        response = vera.post(requeue_path(scene.collector), body)
        assert response.status_code == 403
        assert "read-only access to Acme" in response.content.decode()
    record.refresh_from_db()
    assert record.status == Record.Status.FAILED
    assert stats(scene)["FAILED"] == 1


def test_another_operators_collector_and_records_are_out_of_reach(
    acme_scene, globex_scene, browser_as
):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    theirs = globex_scene.collector
    their_failed = Record.objects.filter(collector=theirs, status=Record.Status.FAILED)

    for path in (page_of(theirs), f"/dashboard/collectors/{uuid.uuid4()}/"):
        response = bob.get(path)
        assert response.status_code == 404
        assert "Globex records" not in response.content.decode()
    assert bob.post(requeue_path(theirs), {"all": "1"}).status_code == 404
    # Their record's id sent to our own collector changes nothing either.
    bob.post(requeue_path(acme_scene.collector), {"record": str(their_failed[0].pk)})
    assert their_failed.count() == 2
    assert stats(globex_scene)["FAILED"] == 2


def test_a_deleted_collector_has_no_page(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    collector_delete(collector=acme_scene.collector)

    assert bob.get(page_of(acme_scene.collector)).status_code == 404
    assert "Acme records" not in bob.get("/dashboard/collectors/").content.decode()


def test_requeueing_needs_the_pages_csrf_token(acme_scene):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(member("bob", (acme_scene.operator, ADMIN)))
    record = Record.objects.get(collector=acme_scene.collector, status=Record.Status.FAILED)

    refused = browser.post(requeue_path(acme_scene.collector), {"record": str(record.pk)})
    assert refused.status_code == 403
    record.refresh_from_db()
    assert record.status == Record.Status.FAILED

    page = browser.get(page_of(acme_scene.collector)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    accepted = browser.post(
        requeue_path(acme_scene.collector),
        {"record": str(record.pk), "csrfmiddlewaretoken": token},
    )
    assert accepted.status_code == 302
    record.refresh_from_db()
    assert record.status == Record.Status.UNPROCESSED


@pytest.mark.parametrize(
    "body",
    [{}, {"record": "abc"}, {"record": "-1"}, {"record": "9" * 30}, {"record": "١٢"}],
)
def test_a_requeue_without_a_valid_record_says_so(acme_scene, browser_as, body):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    response = bob.post(requeue_path(acme_scene.collector), body, follow=True)

    assert response.status_code == 200
    assert "Choose a failed record to re-queue" in response.content.decode()
    assert stats(acme_scene)["FAILED"] == 1


def test_requeueing_a_record_no_longer_failed_changes_nothing(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))
    processed = Record.objects.filter(
        collector=acme_scene.collector, status=Record.Status.PROCESSED
    ).first()

    page = bob.post(
        requeue_path(acme_scene.collector), {"record": str(processed.pk)}, follow=True
    ).content.decode()

    assert "no longer failed" in page
    processed.refresh_from_db()
    assert processed.status == Record.Status.PROCESSED


def test_requeue_answers_posts_only(acme_scene, browser_as):
    bob = browser_as(member("bob", (acme_scene.operator, ADMIN)))

    assert bob.get(requeue_path(acme_scene.collector)).status_code == 405
