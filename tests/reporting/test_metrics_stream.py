"""Usage that comes in through a stream is answered by POST /metrics, for every metric:
records sent over HTTP to a collector, the realtime stream metering them (the work
queue's processor, as a worker runs it), then the metrics asked for over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from collection.services import rollups_fold
from tests.streams.runtime.helpers import (
    PRINTING_TYPE,
    create_collector,
    create_meter,
    create_meter_type,
    import_stream,
    ingest,
    meter_key,
    meter_values,
    process_all,
    set_stream,
    simple_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]


@pytest.fixture
def metered(client):
    """A stream metering printers' sheets, whose records name their billing account;
    accounts priced at 0.25 a sheet from today, monthly."""
    collector = create_collector(client)
    config = simple_stream(collector["id"])
    (normalize,) = [node for node in config["nodes"] if node["id"] == "normalize"]
    normalize["params"]["mappings"].append({"accountId": "accountId"})
    stream = import_stream(client, config)
    set_stream(client, stream["id"], enabled=True)
    meter_type = create_meter_type(client, PRINTING_TYPE)
    key = meter_key(client, stream["id"])
    for printer in ("p1", "p2"):
        create_meter(client, {"userId": printer, "meterKey": key, "meterTypeId": meter_type["id"]})
    today = timezone.now().date()
    plan = client.post(
        "/billing/v1/price-plans",
        {
            "name": "Quarter",
            "rates": [{"meterTypeId": meter_type["id"], "model": "PER_UNIT", "unitPrice": 0.25}],
        },
    ).json()["id"]
    for printer in ("p1", "p2"):
        client.post(
            "/billing/v1/accounts",
            {"accountId": f"acc-{printer}", "customerId": printer, "invoiceCurrency": "USD"},
        )
        response = client.post(
            "/billing/v1/plan-assignments",
            {
                "accountId": f"acc-{printer}",
                "pricePlanId": plan,
                "effectiveFrom": today.isoformat(),
                "cycle": "MONTHLY",
                "anchorDay": 1,
            },
        )
        assert response.status_code == 201, response.content
    records = [
        {"id": "j1", "type": "print", "printerId": "p1", "accountId": "acc-p1", "sheets": 4},
        {"id": "j2", "type": "print", "printerId": "p1", "accountId": "acc-p1", "sheets": 6.5},
        {"id": "j3", "type": "print", "printerId": "p2", "accountId": "acc-p2", "sheets": 3},
        # Not a number: fails in the meter node, counted as a FAILED event only.
        {"id": "j4", "type": "print", "printerId": "p2", "accountId": "acc-p2", "sheets": "x"},
    ]
    ingest(client, collector["id"], records)
    assert process_all(collector["id"]) == 4
    return {"key": key, "today": today, "type": meter_type}


def totals(client, today, *queries) -> dict[str, dict]:
    start = datetime.combine(today, datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
    response = client.post(
        "/metrics",
        {
            "startTime": start.isoformat(),
            "endTime": (start + timedelta(days=3)).isoformat(),
            "metricQueries": list(queries),
        },
    )
    assert response.status_code == 200, response.content
    return {
        result["id"]: {
            item.get("groupedBy", {}).get("fieldValue"): sum(item["metricValues"])
            for item in result["data"]
        }
        for result in response.json()["results"]
    }


@pytest.mark.parametrize("folded", [False, True], ids=["pending-deltas", "folded"])
def test_every_metric_answers_what_the_stream_metered(client, metered, folded):
    if folded:
        rollups_fold()
    found = totals(
        client,
        metered["today"],
        {"id": "events", "name": "EVENTS", "groupBy": "ACCOUNT_ID"},
        {
            "id": "failed",
            "name": "EVENTS",
            "filters": [{"fieldName": "EVENT_STATUS", "fieldValues": ["FAILED"]}],
        },
        {"id": "usage", "name": "USAGE", "groupBy": "CUSTOMER_ID"},
        {"id": "meter", "name": "METER_USAGE", "groupBy": "USAGE_METER_ID"},
        {"id": "revenue", "name": "REVENUE", "groupBy": "ACCOUNT_ID"},
        {"id": "cycle", "name": "USAGE_FOR_CYCLE", "groupBy": "ACCOUNT_ID"},
        {"id": "cycle_revenue", "name": "REVENUE_FOR_CYCLE"},
    )
    assert found == {
        "events": {"acc-p1": 2, "acc-p2": 1},
        "failed": {None: 1},
        "usage": {"p1": 10.5, "p2": 3},
        "meter": {"Pay-Per-Print": 13.5},
        "revenue": {"acc-p1": 2.625, "acc-p2": 0.75},
        "cycle": {"acc-p1": 10.5, "acc-p2": 3},
        "cycle_revenue": {None: 3.375},
    }


def test_usage_metrics_match_the_meters(client, metered):
    found = totals(client, metered["today"], {"id": "u", "name": "USAGE", "groupBy": "CUSTOMER_ID"})
    assert found["u"] == meter_values(client, metered["key"]) == {"p1": 10.5, "p2": 3}
