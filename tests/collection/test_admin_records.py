"""The collection admin: records, ingestions and collectors stay cheap to list as the
tables grow (no query per row, no COUNT(*) over a big table), failed records are
re-queued from the list, and every page says what it shows in words a person reads."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from collection.models import Ingestion, Record
from collection.services import claim_finish, records_claim
from common.admin import LargeTablePaginator
from tests.collection.conftest import data_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(staff_user) -> Client:
    browser = Client()
    browser.force_login(staff_user)
    return browser


def send(client, collector, first: int, count: int) -> None:
    """`count` usage events through the ingestion API, one request."""
    body = {
        "data": [
            {"id": f"job-{n}", "type": "print", "customerId": "carol@example.com", "pages": n}
            for n in range(first, first + count)
        ]
    }
    response = client.post(data_url(collector), body)
    assert response.status_code == 202, response.content


def fail_all(collector, reason: str = "No meter for user carol@example.com") -> list[int]:
    """What a stream does with records it cannot place: FAILED, with the reason."""
    claim = records_claim(collector_id=str(collector.pk))
    failures = {record.id: reason for record in claim.records}
    claim_finish(claim=claim, failures=failures)
    return list(failures)


def queries_for(staff, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(url)
    assert response.status_code == 200, response.content[:2000]
    return len(queries)


@pytest.mark.parametrize("url", ["/admin/collection/record/", "/admin/collection/ingestion/"])
def test_record_and_ingestion_lists_run_the_same_queries_for_3_or_30_rows(
    staff, client, collector, url
):
    send(client, collector, 0, 3)
    send(client, collector, 3, 1)
    few = queries_for(staff, url)
    for start in range(10, 40, 3):
        send(client, collector, start, 3)
    assert Ingestion.objects.count() == 12
    many = queries_for(staff, url)

    assert many == few


def test_the_record_list_shows_status_and_reason_and_trims_long_ids(staff, client, collector):
    send(client, collector, 0, 2)
    fail_all(collector)

    page = staff.get("/admin/collection/record/").content.decode()

    assert "FAILED" in page
    assert "No meter for user carol@example.com" in page
    assert f"/admin/collection/collector/{collector.pk}/change/" in page  # linked


def test_staff_requeue_failed_records_from_the_list(staff, client, collector):
    send(client, collector, 0, 3)
    failed = fail_all(collector)
    send(client, collector, 3, 1)  # not failed: left alone by the action
    untouched = Record.objects.exclude(pk__in=failed).get()

    response = staff.post(
        "/admin/collection/record/",
        {"action": "requeue_failed", "_selected_action": [*failed, untouched.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "3 failed record(s) queued again." in response.content.decode()
    statuses = dict(Record.objects.values_list("pk", "status"))
    assert {statuses[pk] for pk in failed} == {Record.Status.UNPROCESSED}
    assert Record.objects.get(pk=untouched.pk).status == untouched.status
    assert not Record.objects.filter(failure_reason__isnull=False).exists()


def test_a_big_record_table_is_counted_by_estimate_not_by_count_star(
    staff, client, collector, monkeypatch
):
    """Above the paginator's limit the list asks the planner instead of counting every
    row; every COUNT it runs stops at the limit."""
    monkeypatch.setattr(LargeTablePaginator, "exact_limit", 5)
    send(client, collector, 0, 40)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE collection_record")

    with CaptureQueriesContext(connection) as queries:
        response = staff.get("/admin/collection/record/")

    assert response.status_code == 200
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    record_counts = [sql for sql in counts if "collection_record" in sql]
    assert record_counts, counts
    assert all("LIMIT 6" in sql for sql in record_counts), record_counts
    assert any(q["sql"].startswith("EXPLAIN") for q in queries)
    shown = response.content.decode()
    assert re.search(r"about\s+\d+\s+records", shown), "the count says it is an estimate"
    assert response.context["cl"].paginator.is_estimate


def test_a_small_record_table_is_counted_exactly(staff, client, collector):
    send(client, collector, 0, 4)

    response = staff.get("/admin/collection/record/")

    assert response.context["cl"].result_count == 4
    assert not response.context["cl"].paginator.is_estimate
    assert "about" not in response.content.decode().split('class="py-4 result-count"')[1][:200]


def test_the_collector_page_says_where_to_send_data_and_counts_records(staff, client, collector):
    send(client, collector, 0, 3)
    fail_all(collector)
    send(client, collector, 3, 2)

    page = staff.get(f"/admin/collection/collector/{collector.pk}/change/").content.decode()

    assert f"POST /online-collection/v1/collectors/{collector.pk}/data" in page
    assert "UNPROCESSED: 2" in page and "FAILED: 3" in page
    failed_link = f"?collector__id__exact={collector.pk}&amp;status__exact=4"
    assert failed_link in page
    listed = staff.get(
        f"/admin/collection/record/?collector__id__exact={collector.pk}&status__exact=4"
    )
    assert listed.context["cl"].result_count == 3


def test_records_and_ingestions_read_as_a_person_would_say_them(client, collector):
    send(client, collector, 7, 1)
    record = Record.objects.get()
    ingestion = Ingestion.objects.get()

    assert str(record) == "job-7 · print"
    assert str(ingestion) == f"{ingestion.received_at:%Y-%m-%d %H:%M:%S} · 1 records"
