"""Gateway accounting, record partitions and the admin pages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.utils import timezone

from collection.models import Record
from collection.services import CONNECTOR, record_partitions_ensure, records_claim
from tenants.models import UsageCounter
from tenants.selectors import usage_counts
from tenants.services import GATEWAY_REQUEST, usage_counter_add, usage_counters_fold
from tests.collection.conftest import data_url
from tests.factories import OperatorFactory

pytestmark = pytest.mark.django_db


# Gateway accounting


def test_every_ingestion_request_counts_one_gateway_request(client, collector, acme):
    client.post(data_url(collector), {"data": [{"id": "a"}, {"id": "b"}]})
    client.post(data_url(collector), {"data": [{"id": "a"}]})  # all duplicates
    client.post(data_url(collector), "{bad", content_type="application/json")  # 400
    usage_counters_fold()
    counter = UsageCounter.objects.get(operator=acme.operator, kind=GATEWAY_REQUEST)
    assert (counter.kind, counter.key, counter.connection) == (
        GATEWAY_REQUEST,
        CONNECTOR,
        str(collector.pk),
    )
    assert counter.count == 3
    assert counter.hour == timezone.now().replace(minute=0, second=0, microsecond=0)


def test_requests_for_unknown_collectors_are_not_counted(client):
    client.post("/online-collection/v1/collectors/8a76066d-ff29-417c-a18e-abde22e44310/data")
    assert not UsageCounter.objects.exists()


def test_usage_counters_add_up_per_hour():
    operator = OperatorFactory()
    at = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    for _ in range(3):
        usage_counter_add(operator_id=operator.pk, kind="api_call", at=at)
    usage_counter_add(operator_id=operator.pk, kind="api_call", count=5, at=at.replace(hour=11))
    expected = {(at.replace(minute=0), "", ""): 3, (at.replace(hour=11, minute=0), "", ""): 5}
    assert usage_counts(operator_id=operator.pk, kind="api_call") == expected
    assert usage_counters_fold() == 4
    assert usage_counts(operator_id=operator.pk, kind="api_call") == expected
    usage_counter_add(operator_id=operator.pk, kind="api_call", at=at)
    usage_counters_fold()
    rows = UsageCounter.objects.order_by("hour").values_list("hour", "count")
    assert [(hour.hour, count) for hour, count in rows] == [(10, 4), (11, 5)]


# The record store


def partitions() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'collection_record'::regclass"
        )
        return {row[0] for row in cursor.fetchall()}


def test_partitions_exist_for_this_month_and_the_next_two():
    now = timezone.now()
    record_partitions_ensure(now=now)
    assert f"collection_record_p{now:%Y_%m}" in partitions()
    assert "collection_record_default" in partitions()
    assert record_partitions_ensure(now=now) == 0


def test_rows_in_the_default_partition_move_to_their_new_month(client, collector):
    """A record received in a month without a partition lands in the default partition;
    creating that month's partition later moves it there."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO collection_record (received_at, event_time, operator_id, collector_id,
                ingestion_id, record_id)
            VALUES ('2031-05-02T00:00:00Z', '2031-05-02T00:00:00Z', %s, %s, gen_random_uuid(),
                'future')
            """,
            [collector.operator_id, collector.pk],
        )
        cursor.execute("SELECT count(*) FROM collection_record_default")
        assert cursor.fetchone()[0] == 1
    record_partitions_ensure(now=datetime(2031, 5, 1, tzinfo=UTC), months_ahead=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM collection_record_default")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM collection_record_p2031_05")
        assert cursor.fetchone()[0] == 1


def test_the_queue_and_reporting_indexes_are_used(client, collector):
    client.post(data_url(collector), {"data": [{"id": f"r{i}", "type": "t"} for i in range(50)]})
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM collection_record WHERE collector_id = %s AND status = 1 "
            "ORDER BY received_at LIMIT 10",
            [collector.pk],
        )
        assert "collection_record_p" in "".join(r[0] for r in cursor.fetchall())
        cursor.execute(
            "EXPLAIN SELECT count(*) FROM collection_record WHERE operator_id = %s AND type = 't' "
            "AND event_time > now() - interval '1 day'",
            [collector.operator_id],
        )
        plan = "".join(r[0] for r in cursor.fetchall())
        assert "report_idx" in plan or "operator_id_type_event_time" in plan


# Admin


@pytest.fixture
def staff(client, staff_user):
    from django.test import Client

    browser = Client()
    browser.force_login(staff_user)
    return browser


def test_collector_admin_shows_counts_and_last_ingestion(staff, client, collector):
    client.post(data_url(collector), {"data": [{"id": "a"}, {"id": "b"}]})
    page = staff.get("/admin/collection/collector/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Main collector" in text and "last ingestion" in text.lower()


def test_ingestion_admin_lists_sizes(staff, client, collector):
    client.post(data_url(collector), {"data": [{"id": "a"}, {"id": "a"}]})
    page = staff.get("/admin/collection/ingestion/")
    assert page.status_code == 200
    assert "Duplicates" in page.content.decode()


def test_record_admin_searches_and_shows_the_payload(staff, client, collector):
    client.post(
        data_url(collector),
        {"data": [{"id": "needle", "customerId": "cust-9", "secretish": "payload-value"}]},
    )
    client.post(data_url(collector), {"data": [{"id": "hay"}]})
    found = staff.get("/admin/collection/record/", {"q": "needle"}).content.decode()
    assert "needle" in found and ">hay<" not in found
    record = Record.objects.get(record_id="needle")
    detail = staff.get(f"/admin/collection/record/{record.pk}/change/").content.decode()
    assert "payload-value" in detail
    assert staff.get("/admin/collection/record/", {"status__exact": 4}).status_code == 200


def test_record_admin_requeues_failed_records(staff, client, collector):
    client.post(data_url(collector), {"data": [{"id": "f1"}, {"id": "f2"}]})
    claim = records_claim(collector_id=str(collector.pk))
    from collection.services import claim_finish

    claim_finish(claim=claim, failures={r.id: "nope" for r in claim.records})
    ids = list(Record.objects.filter(collector_id=collector.pk).values_list("pk", flat=True))
    response = staff.post(
        "/admin/collection/record/",
        {"action": "requeue_failed", "_selected_action": [str(i) for i in ids]},
    )
    assert response.status_code == 302
    assert set(
        Record.objects.filter(collector_id=collector.pk).values_list("status", flat=True)
    ) == {Record.Status.UNPROCESSED}
