"""The collectors pages in a real browser: an operator's admin opens a collector, reads
why a record failed and at which node, re-queues it and sees it leave the failed list;
the page's curl example sends a record for real; the pages fit a phone."""

from __future__ import annotations

import subprocess

import pytest

from collection.models import Record
from tenants.models import OperatorMembership
from tests.conftest import ApiClient
from tests.e2e.dashboard import DESKTOP, assert_fits, assert_no_horizontal_scroll, dashboard_login
from tests.reporting.web.scene import PASSWORD, member, operator_scene
from tests.streams.runtime.helpers import (
    import_stream,
    ingest,
    process_all,
    set_stream,
    simple_stream,
)

ADMIN = OperatorMembership.Role.ADMIN


def failing_records(scene, printers: list[str]) -> None:
    """An enabled stream reads the scene's collector; no meters exist, so every record
    sent (one per printer) fails at its meter node, as a worker would find."""
    client = ApiClient(scene.tenant.token)
    stream = import_stream(client, simple_stream(str(scene.collector.pk), name="Printing"))
    set_stream(client, stream["id"], enabled=True)
    jobs = [
        {"id": f"job-{n}", "printerId": printer, "sheets": 2} for n, printer in enumerate(printers)
    ]
    ingest(client, str(scene.collector.pk), jobs)
    assert process_all(str(scene.collector.pk)) == len(jobs)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_an_operator_user_requeues_a_failed_record(live_server, page):
    acme = operator_scene("Acme")
    failing_records(acme, ["printer-7", "printer-8"])
    member("bob", (acme.operator, ADMIN))
    page.set_viewport_size(DESKTOP)
    dashboard_login(page, live_server.url, "bob", PASSWORD)

    # 1. From the navigation to the collector's page.
    page.click("#nav-entries a:has-text('Collectors')")
    assert page.title().strip() == "Collectors · Acme · Tally"
    page.click("#collector-list a:has-text('Acme records')")
    assert page.title().strip() == "Acme records · Acme · Tally"
    assert page.inner_text("#count-failed .tally-figure") == "2"

    # 2. The failed record says at which node it failed, and why.
    failed = page.locator("#failed-list li", has_text="job-1")
    assert failed.locator(".failed-node").inner_text() == "Meter"
    assert "(meter)" in failed.inner_text()
    assert (
        failed.locator(".failed-reason")
        .inner_text()
        .startswith("No meter for user printer-8 in category Printing")
    )
    assert_no_horizontal_scroll(page)

    # 3. Re-queue it: it leaves the failed list; the other stays.
    with page.expect_navigation():
        failed.locator("button", has_text="Re-queue").click()
    assert "1 record queued again" in page.inner_text("main")
    assert page.locator("#failed-list li", has_text="job-1").count() == 0
    assert page.locator("#failed-list li", has_text="job-0").count() == 1
    assert page.inner_text("#count-failed .tally-figure") == "1"
    assert page.inner_text("#count-unprocessed .tally-figure") == "1"
    requeued = Record.objects.get(collector=acme.collector, record_id="job-1")
    assert requeued.status == Record.Status.UNPROCESSED


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_the_curl_example_sends_a_record(live_server, page):
    acme = operator_scene("Acme")
    member("bob", (acme.operator, ADMIN))
    dashboard_login(page, live_server.url, "bob", PASSWORD)
    page.goto(f"{live_server.url}/dashboard/collectors/{acme.collector.pk}/")

    example = page.inner_text("#curl-example")
    assert f"{live_server.url}/online-collection/v1/collectors/{acme.collector.pk}/data" in example
    script = example.replace("YOUR_CLIENT_ID", acme.tenant.client_id).replace(
        "YOUR_CLIENT_SECRET", acme.tenant.client_secret
    )
    sent = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    assert '"accepted":1' in sent.stdout.replace(" ", ""), sent
    assert Record.objects.filter(collector=acme.collector, record_id="event-0001").exists()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_the_collectors_pages_fit_a_phone(live_server, page):
    scene = operator_scene("A company with a rather long operator name that must not overflow")
    failing_records(scene, ["a-printer-with-a-very-long-identifier-that-goes-on-and-on" * 2])
    member("wide", (scene.operator, ADMIN))
    dashboard_login(page, live_server.url, "wide", PASSWORD)

    for path in ("/dashboard/collectors/", f"/dashboard/collectors/{scene.collector.pk}/"):
        assert_fits(page, f"{live_server.url}{path}")
        assert page.title().strip()
