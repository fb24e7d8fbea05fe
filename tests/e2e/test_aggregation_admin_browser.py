"""A staff member finds a script aggregator's store in the admin and reads a session."""

from __future__ import annotations

import pytest

from streams.models import AggregationSession, AggregationStore
from tests.conftest import ApiClient, make_tenant
from tests.streams.runtime.helpers import (
    create_collector,
    import_stream,
    ingest,
    process_all,
    set_stream,
)

COUNTING = """
session.data.orders = (session.data.orders || 0) + 1;
session.data.total = (session.data.total || 0) + payload.amount;
"""


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
def test_staff_read_a_session_of_a_store(live_server, staff_page, tmp_path):
    tenant = make_tenant("Sessions Co")
    client = ApiClient(tenant.token)
    collector = create_collector(client, "Orders")
    config = {
        "name": "Orders per customer",
        "nodes": [
            {
                "id": "source",
                "name": "Collector",
                "type": "readers/online_collection",
                "params": {"collectorId": collector["id"]},
            },
            {
                "id": "per-customer",
                "name": "Per customer",
                "type": "transforms/script_aggregate",
                "params": {"groupByRules": [{"fields": ["customer"]}], "onTransform": COUNTING},
            },
            {"id": "out", "name": "Out", "type": "writers/noop", "params": {}},
        ],
        "edges": [
            {"id": "e1", "from": "source", "to": "per-customer"},
            {"id": "e2", "from": "per-customer", "to": "out"},
        ],
    }
    stream = import_stream(client, config)
    set_stream(client, stream["id"], enabled=True)
    ingest(
        client,
        collector["id"],
        [
            {"customer": "carol@example.com", "amount": 12.5},
            {"customer": "carol@example.com", "amount": 7.25},
            {"customer": "dave@example.com", "amount": 1},
        ],
    )
    process_all(collector["id"])
    store = AggregationStore.objects.get()

    page = staff_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/admin/streams/aggregationstore/")
    row = page.locator("tr", has_text=str(store.id))
    assert row.is_visible()
    assert row.locator("td.field-session_count").inner_text() == "2"
    row.locator("text=sessions").click()
    page.wait_for_url("**/aggregationsession/**")
    assert page.locator("text=dave@example.com").first.is_visible()
    page.locator("#result_list a", has_text="carol@example.com").click()
    page.wait_for_url("**/change/**")
    body = page.locator("#content").inner_text()
    assert '"orders": 2' in body
    assert '"total": 19.75' in body
    page.screenshot(path=str(tmp_path / "session.png"), full_page=True)
    assert AggregationSession.objects.count() == 2
