"""Duplicates are stored once: record ids per collector, and whole requests by key."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, connections
from django.utils import timezone

from collection.models import IdempotencyKey, Ingestion, Record, RecordKey
from collection.services import record_key_hash, record_keys_sweep
from tests.collection.conftest import data_url, make_collector
from tests.conftest import ApiClient, assert_error_body


def batch(start: int, count: int, prefix: str = "id") -> dict:
    return {"data": [{"id": f"{prefix}-{i}", "value": i} for i in range(start, start + count)]}


def count(collector) -> int:
    return Record.objects.filter(collector_id=collector.pk).count()


@pytest.mark.django_db
def test_the_same_thousand_ids_sent_twice_are_stored_once(client, collector):
    first = client.post(data_url(collector), batch(0, 1000)).json()
    second = client.post(data_url(collector), batch(0, 1000)).json()
    assert (first["accepted"], first["duplicates"]) == (1000, 0)
    assert (second["accepted"], second["duplicates"]) == (0, 1000)
    assert count(collector) == 1000


@pytest.mark.django_db
def test_overlapping_batches_store_only_the_new_ids(client, collector):
    client.post(data_url(collector), batch(0, 10))
    body = client.post(data_url(collector), batch(5, 10)).json()
    assert (body["accepted"], body["duplicates"]) == (5, 5)
    assert count(collector) == 15


@pytest.mark.django_db
def test_an_id_repeated_in_one_batch_is_stored_once(client, collector):
    body = client.post(data_url(collector), {"data": [{"id": "a"}, {"id": "a"}]}).json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)


@pytest.mark.django_db
def test_ids_are_deduplicated_per_collector(acme, client, collector):
    other = make_collector(acme, name="Other")
    client.post(data_url(collector), batch(0, 5))
    assert client.post(data_url(other), batch(0, 5)).json()["accepted"] == 5


@pytest.mark.django_db
def test_an_id_older_than_the_window_is_new_again(client, collector):
    client.post(data_url(collector), batch(0, 3))
    RecordKey.objects.update(seen_at=timezone.now() - timedelta(days=33))
    assert record_keys_sweep() == 3
    assert client.post(data_url(collector), batch(0, 3)).json()["accepted"] == 3


@pytest.mark.django_db
def test_the_sweep_keeps_ids_inside_the_window(client, collector):
    client.post(data_url(collector), batch(0, 3))
    RecordKey.objects.update(seen_at=timezone.now() - timedelta(days=31))
    assert record_keys_sweep() == 0
    assert client.post(data_url(collector), batch(0, 3)).json()["duplicates"] == 3


@pytest.mark.django_db(transaction=True)
def test_eight_threads_sending_the_same_ids_store_them_once(acme):
    collector = make_collector(acme)
    payload = batch(0, 1000)
    results: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def send() -> None:
        try:
            client = ApiClient(acme.token)
            start.wait()
            response = client.post(data_url(collector), payload)
            assert response.status_code == 202, response.content
            results.append(response.json())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sum(result["accepted"] for result in results) == 1000
    assert sum(result["duplicates"] for result in results) == 7000
    assert count(collector) == 1000
    assert (
        Record.objects.filter(collector_id=collector.pk).values("record_id").distinct().count()
        == 1000
    )


# Idempotency-Key


@pytest.mark.django_db
def test_a_replayed_key_answers_the_first_answer(client, collector):
    first = client.post(data_url(collector), batch(0, 3), HTTP_IDEMPOTENCY_KEY="k1")
    again = client.post(data_url(collector), batch(0, 3), HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.json()["accepted"] == 3
    assert Ingestion.objects.count() == 1


@pytest.mark.django_db
def test_a_key_with_another_body_is_422(client, collector):
    client.post(data_url(collector), batch(0, 3), HTTP_IDEMPOTENCY_KEY="k1")
    response = client.post(data_url(collector), batch(0, 4), HTTP_IDEMPOTENCY_KEY="k1")
    error = assert_error_body(response, 422)
    assert "another body" in error["message"]
    assert count(collector) == 3


@pytest.mark.django_db
def test_a_key_still_in_flight_is_409(client, collector):
    from collection.services import body_digest

    raw = json.dumps(batch(0, 3)).encode()
    IdempotencyKey.objects.create(
        collector=collector, key="k1", body_digest=body_digest(raw, "application/json")
    )
    response = client.post(
        data_url(collector), raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    error = assert_error_body(response, 409)
    assert "in progress" in error["message"]
    assert count(collector) == 0


@pytest.mark.django_db
def test_a_key_left_in_flight_by_a_dead_request_is_taken_over(client, collector):
    from collection.services import body_digest

    raw = json.dumps(batch(0, 3)).encode()
    IdempotencyKey.objects.create(
        collector=collector,
        key="k1",
        body_digest=body_digest(raw, "application/json"),
        created_at=timezone.now() - timedelta(minutes=5),
    )
    response = client.post(
        data_url(collector), raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    assert response.status_code == 202
    assert IdempotencyKey.objects.get().response == response.json()


@pytest.mark.django_db
def test_keys_are_per_collector(acme, client, collector):
    other = make_collector(acme, name="Other")
    client.post(data_url(collector), batch(0, 3), HTTP_IDEMPOTENCY_KEY="k1")
    response = client.post(data_url(other), batch(0, 4), HTTP_IDEMPOTENCY_KEY="k1")
    assert response.status_code == 202 and response.json()["accepted"] == 4


@pytest.mark.django_db
def test_a_too_long_key_is_400(client, collector):
    response = client.post(data_url(collector), batch(0, 1), HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert assert_error_body(response, 400)["details"][0]["field"] == "Idempotency-Key"


# Nothing is lost, nothing is partial


@pytest.mark.django_db
def test_a_failing_database_answers_503_and_stores_nothing(client, collector, settings):
    """Another transaction holds the key of record 500 (uncommitted): the batch inserts
    keys up to it, waits, and hits the statement timeout. The request answers 503; none
    of the 499 records before it stay. When the lock is gone, the same batch succeeds."""
    settings.TALLY["COLLECTION"]["INGEST_STATEMENT_TIMEOUT_MS"] = 300
    payload = batch(0, 1000)
    blocker = psycopg.connect(_libpq_dsn())
    try:
        blocker.execute(
            "INSERT INTO collection_recordkey (key_hash, seen_at) VALUES (%s, now())",
            [record_key_hash(collector.pk, "id-500")],
        )
        response = client.post(data_url(collector), payload, HTTP_IDEMPOTENCY_KEY="retry-me")
        error = assert_error_body(response, 503)
        assert "nothing was stored" in error["message"]
        assert count(collector) == 0
        assert not RecordKey.objects.exists()
        assert not Ingestion.objects.exists()
        assert not IdempotencyKey.objects.exists()
    finally:
        blocker.rollback()
        blocker.close()
    retried = client.post(data_url(collector), payload, HTTP_IDEMPOTENCY_KEY="retry-me")
    assert retried.status_code == 202
    assert retried.json()["accepted"] == 1000
    assert count(collector) == 1000


def _libpq_dsn() -> str:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    return psycopg.conninfo.make_conninfo(
        **{k: v for k, v in params.items() if isinstance(v, str | int)}
    )
