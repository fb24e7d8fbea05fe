"""POST /online-collection/v1/collectors/{id}/data: body forms, limits, envelopes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from collection.models import EventRollupDelta, Ingestion, Record
from collection.rules import MAX_BATCH_RECORDS, MAX_BODY_BYTES
from tests.collection.conftest import data_url, make_collector
from tests.conftest import assert_error_body

pytestmark = pytest.mark.django_db


def stored(collector) -> list[Record]:
    return list(Record.objects.filter(collector_id=collector.pk).order_by("id"))


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Body forms


def test_one_object_is_stored_with_its_envelope(client, collector, acme):
    event_time = datetime.now(UTC) - timedelta(hours=1)
    record = {
        "id": "r-1",
        "timestamp": iso(event_time),
        "type": "api_call",
        "customerId": "cust-1",
        "accountId": "acct-1",
        "value": 3,
        "region": "eu",
    }
    response = client.post(data_url(collector), {"data": record})
    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == {"ingestionId", "accepted", "duplicates", "rejected"}
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 0, [])
    [row] = stored(collector)
    assert row.record_id == "r-1"
    assert row.event_time == event_time
    assert (row.type, row.customer_id, row.account_id) == ("api_call", "cust-1", "acct-1")
    assert row.payload == {"value": 3, "region": "eu"}
    assert row.status == Record.Status.UNPROCESSED
    assert str(row.ingestion_id) == body["ingestionId"]
    assert row.operator_id == acme.operator.pk


def test_an_array_is_a_batch(client, collector):
    records = [{"id": f"r{i}", "n": i} for i in range(3)]
    body = client.post(data_url(collector), {"data": records}).json()
    assert body["accepted"] == 3
    assert [row.payload["n"] for row in stored(collector)] == [0, 1, 2]


@pytest.mark.parametrize(
    "data, count",
    [(json.dumps({"id": "s1", "v": 1}), 1), (json.dumps([{"id": "s1"}, {"id": "s2"}]), 2)],
    ids=["object", "array"],
)
def test_a_string_holding_json_is_read(client, collector, data, count):
    assert client.post(data_url(collector), {"data": data}).json()["accepted"] == count


def test_ndjson_is_one_record_a_line(client, collector):
    body = '{"id": "n1", "v": 1}\n\n{"id": "n2", "v": 2}\n'
    response = client.post(data_url(collector), body, content_type="application/x-ndjson")
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 2


def test_records_without_id_or_timestamp_get_them(client, collector):
    before = datetime.now(UTC)
    client.post(data_url(collector), {"data": [{"v": 1}, {"v": 2}]})
    rows = stored(collector)
    assert len({row.record_id for row in rows}) == 2
    assert all(row.event_time >= before - timedelta(seconds=1) for row in rows)
    assert all(row.event_time == row.received_at for row in rows)


def test_numbers_are_stored_exactly(client, collector):
    raw = '{"data": {"id": "x", "price": 0.1234567890123456789, "big": 123456789012345678901234}}'
    client.post(data_url(collector), raw, content_type="application/json")
    [row] = stored(collector)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT payload::text FROM collection_record WHERE id = %s", [row.id])
        text = cursor.fetchone()[0]
    assert "0.1234567890123456789" in text and "123456789012345678901234" in text


# Bad bodies


@pytest.mark.parametrize(
    "raw, field",
    [
        ("{not json", None),
        ("[]", "data"),
        ('{"records": []}', "data"),
        ('{"data": 12}', "data"),
        ('{"data": null}', "data"),
        ('{"data": []}', "data"),
        ('{"data": "not json"}', "data"),
        ('{"data": "12"}', "data"),
        ('{"data": [{"id": "a"}, 3, {"id": "b"}]}', "data[1]"),
        ('{"data": "[{}, \\"x\\"]"}', "data[1]"),
        ('{"data": {}, "extra": 1}', "extra"),
        ("", None),
    ],
    ids=[
        "not-json",
        "array-body",
        "no-data",
        "number",
        "null",
        "empty-batch",
        "string-not-json",
        "string-number",
        "bad-item",
        "bad-item-in-string",
        "unknown-field",
        "empty-body",
    ],
)
def test_bad_bodies_are_400_naming_the_record(client, collector, raw, field):
    response = client.post(data_url(collector), raw, content_type="application/json")
    error = assert_error_body(response, 400)
    if field is not None:
        assert error["details"][0]["field"] == field
    assert not stored(collector)
    assert not Ingestion.objects.exists()


def test_a_bad_ndjson_line_is_400_naming_the_record(client, collector):
    body = '{"id": "a"}\n{"id": \n{"id": "c"}\n'
    response = client.post(data_url(collector), body, content_type="application/x-ndjson")
    error = assert_error_body(response, 400)
    assert error["details"][0]["field"] == "data[1]"
    assert "Line 2" in error["message"]


def test_other_content_types_are_415(client, collector):
    response = client.post(data_url(collector), "id=1", content_type="text/plain")
    assert_error_body(response, 415)


# Limits


def test_ten_thousand_records_are_one_batch(client, collector):
    records = [{"id": f"r{i}", "type": "t", "value": i} for i in range(MAX_BATCH_RECORDS)]
    response = client.post(data_url(collector), {"data": records})
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == MAX_BATCH_RECORDS
    assert Record.objects.filter(collector_id=collector.pk).count() == MAX_BATCH_RECORDS
    ingestion = Ingestion.objects.get()
    assert (ingestion.record_count, ingestion.accepted) == (MAX_BATCH_RECORDS, MAX_BATCH_RECORDS)


@pytest.mark.parametrize("form", ["json", "ndjson"])
def test_more_than_ten_thousand_records_is_413(client, collector, form):
    records = [{"i": i} for i in range(MAX_BATCH_RECORDS + 1)]
    if form == "json":
        response = client.post(data_url(collector), {"data": records})
    else:
        body = "\n".join(json.dumps(r) for r in records)
        response = client.post(data_url(collector), body, content_type="application/x-ndjson")
    error = assert_error_body(response, 413)
    assert "10000" in error["message"]
    assert not stored(collector)


def test_a_body_over_five_mib_is_413_before_parsing(client, collector):
    raw = '{"data": "' + "x" * MAX_BODY_BYTES + '"}'
    assert_error_body(client.post(data_url(collector), raw, content_type="application/json"), 413)


def test_a_body_just_under_five_mib_is_accepted(client, collector):
    filler = "x" * (MAX_BODY_BYTES - 100)
    raw = json.dumps({"data": {"id": "big", "blob": filler}})
    assert len(raw) <= MAX_BODY_BYTES
    response = client.post(data_url(collector), raw, content_type="application/json")
    assert response.status_code == 202, response.content


# Timestamps and envelope checks: partial acceptance


def test_bad_records_are_rejected_with_index_and_reason_and_the_rest_stored(client, collector):
    now = datetime.now(UTC)
    records = [
        {"id": "ok-iso", "timestamp": iso(now - timedelta(days=1))},
        {"id": "too-old", "timestamp": iso(now - timedelta(days=36))},
        {"id": "ok-ms", "timestamp": int((now - timedelta(days=34)).timestamp() * 1000)},
        {"id": "future", "timestamp": iso(now + timedelta(minutes=6))},
        {"id": "garbage", "timestamp": "yesterday"},
        {"id": "bool", "timestamp": True},
        {"id": "near-future", "timestamp": iso(now + timedelta(minutes=4))},
        {"id": 42},
        {"id": "typed", "type": ["x"]},
        {"id": ""},
        {"id": "long-customer", "customerId": "c" * 201},
        {"id": "nul", "note": "a\u0000b"},
    ]
    response = client.post(data_url(collector), {"data": records})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 3
    rejected = {item["index"]: item["reason"] for item in body["rejected"]}
    assert set(rejected) == {1, 3, 4, 5, 7, 8, 9, 10, 11}
    assert "35 days" in rejected[1]
    assert "5 minutes" in rejected[3]
    assert "ISO 8601" in rejected[4]
    assert "id must be a string" in rejected[7]
    assert "type must be a string" in rejected[8]
    assert {row.record_id for row in stored(collector)} == {"ok-iso", "ok-ms", "near-future"}
    assert Ingestion.objects.get().rejected == 9


def test_a_timestamp_with_an_offset_is_stored_in_utc(client, collector):
    now = datetime.now(UTC).replace(microsecond=0)
    local = now.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert local.endswith("+02:00")
    client.post(data_url(collector), {"data": {"id": "tz", "timestamp": local}})
    assert stored(collector)[0].event_time == now


# Collector states


def test_a_creating_collector_refuses_data_with_409(acme, client):
    collector = make_collector(acme, name="New", active=False)
    error = assert_error_body(client.post(data_url(collector), {"data": {"id": "r"}}), 409)
    assert "being created" in error["message"]


def test_unknown_collector_is_404(client):
    url = "/online-collection/v1/collectors/8a76066d-ff29-417c-a18e-abde22e44310/data"
    assert_error_body(client.post(url, {"data": {}}), 404)


# Rollups and query counts


def test_rollup_deltas_count_records_by_type_and_hour(client, collector):
    now = datetime.now(UTC)
    records = [{"type": "a"}, {"type": "a"}, {"type": "b"}]
    records.append({"type": "a", "timestamp": iso(now - timedelta(hours=2))})
    client.post(data_url(collector), {"data": records})
    deltas = {
        (d.type, d.hour.hour, d.status): d.count
        for d in EventRollupDelta.objects.filter(collector_id=collector.pk)
    }
    hour = now.replace(minute=0, second=0, microsecond=0)
    earlier = hour - timedelta(hours=2)
    assert deltas == {
        ("a", hour.hour, Record.Status.UNPROCESSED): 2,
        ("b", hour.hour, Record.Status.UNPROCESSED): 1,
        ("a", earlier.hour, Record.Status.UNPROCESSED): 1,
    }


@pytest.mark.parametrize("size", [1, 500])
def test_queries_per_request_do_not_grow_with_the_batch(
    client, collector, size, django_assert_max_num_queries
):
    records = [{"id": f"q{i}", "v": i} for i in range(size)]
    with django_assert_max_num_queries(9):
        assert client.post(data_url(collector), {"data": records}).status_code == 202


@pytest.mark.parametrize("size", [1, 150], ids=["one", "many"])
def test_a_batch_with_every_record_rejected_is_still_an_ingestion(client, collector, size):
    records = [{"id": f"bad-{i}", "timestamp": "never"} for i in range(size)]
    response = client.post(data_url(collector), {"data": records})
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (0, 0, size)
    assert not stored(collector)
    assert Ingestion.objects.get().rejected == size
