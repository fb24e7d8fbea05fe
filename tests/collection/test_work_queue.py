"""The work queue: claims with SKIP LOCKED, processors, timeouts, stats and rollups."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from collection import tasks
from collection.models import Collector, EventRollup, EventRollupDelta, Record
from collection.processing import register_resolver, unregister_resolver
from collection.selectors import collector_status_counts
from collection.services import (
    ClaimLost,
    claim_finish,
    records_claim,
    records_process_batch,
    records_requeue_failed,
    rollups_fold,
)
from tests.collection.conftest import BASE, data_url

pytestmark = pytest.mark.django_db


class CountingProcessor:
    """Counts how often each record id is processed; fails the ids it is told to."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.seen: Counter = Counter()
        self.fail = fail

    def process(self, records: list[Record]) -> dict[int, str]:
        self.seen.update(record.record_id for record in records)
        return {r.id: "bad value" for r in records if r.record_id in self.fail}


@pytest.fixture
def processor(collector):
    processor = CountingProcessor()

    def resolve(candidate: Collector):
        return processor if candidate.pk == collector.pk else None

    register_resolver(resolve)
    yield processor
    unregister_resolver(resolve)


def send(client, collector, count: int, prefix: str = "r") -> None:
    records = [{"id": f"{prefix}{i}", "type": "call"} for i in range(count)]
    assert client.post(data_url(collector), {"data": records}).status_code == 202


def statuses(collector) -> Counter:
    return Counter(
        Record.objects.filter(collector_id=collector.pk).values_list("status", flat=True)
    )


def test_records_without_a_processor_stay_unprocessed(client, collector):
    send(client, collector, 5)
    assert records_process_batch(collector_id=str(collector.pk)) == 0
    assert tasks.records_process(str(collector.pk)) == 0
    assert statuses(collector) == {Record.Status.UNPROCESSED: 5}


def test_a_worker_processes_every_record_once(client, collector, processor, settings):
    settings.TALLY["COLLECTION"]["PROCESS_BATCH_SIZE"] = 4
    send(client, collector, 10)
    processed = 0
    while claimed := records_process_batch(collector_id=str(collector.pk)):
        processed += claimed
    assert processed == 10
    assert set(processor.seen.values()) == {1} and len(processor.seen) == 10
    assert statuses(collector) == {Record.Status.PROCESSED: 10}


def test_failed_records_carry_a_reason_and_can_be_requeued(client, collector, processor):
    processor.fail = {"r1"}
    send(client, collector, 3)
    records_process_batch(collector_id=str(collector.pk))
    failed = Record.objects.get(collector_id=collector.pk, record_id="r1")
    assert (failed.status, failed.failure_reason) == (Record.Status.FAILED, "bad value")
    assert records_requeue_failed(record_ids=[failed.id]) == 1
    processor.fail = set()
    records_process_batch(collector_id=str(collector.pk))
    assert statuses(collector) == {Record.Status.PROCESSED: 3}
    assert processor.seen["r1"] == 2


class PickyProcessor:
    """Writes a row per record through SQL; a record with {"bad": true} makes the
    database itself refuse (division by zero), another raises in Python."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def process(self, records: list[Record]) -> dict[int, str]:
        self.calls.append(len(records))
        with connection.cursor() as cursor:
            for record in records:
                divisor = 0 if record.payload.get("bad") else 1
                cursor.execute("SELECT 1 / %s", [divisor])
                if record.payload.get("broken"):
                    raise RuntimeError("boom")
                EventRollupDelta.objects.create(
                    operator_id=record.operator_id,
                    collector_id=record.collector_id,
                    type="processed-marker",
                    status=Record.Status.PROCESSED,
                    hour=timezone.now().replace(minute=0, second=0, microsecond=0),
                    count=1,
                )
        return {}


@pytest.fixture
def use_processor(collector):
    registered = []

    def use(processor):
        def resolve(candidate):
            return processor if candidate.pk == collector.pk else None

        register_resolver(resolve)
        registered.append(resolve)
        return processor

    yield use
    for resolve in registered:
        unregister_resolver(resolve)


def test_a_record_that_cannot_be_processed_fails_alone(client, collector, use_processor):
    processor = use_processor(PickyProcessor())
    records = [
        {"id": "ok-1"},
        {"id": "bad", "bad": True},
        {"id": "ok-2"},
        {"id": "x", "broken": True},
    ]
    assert client.post(data_url(collector), {"data": records}).status_code == 202

    assert records_process_batch(collector_id=str(collector.pk)) == 4

    outcome = dict(
        Record.objects.filter(collector_id=collector.pk).values_list("record_id", "status")
    )
    assert outcome == {
        "ok-1": Record.Status.PROCESSED,
        "bad": Record.Status.FAILED,
        "ok-2": Record.Status.PROCESSED,
        "x": Record.Status.FAILED,
    }
    reasons = dict(
        Record.objects.filter(status=Record.Status.FAILED).values_list(
            "record_id", "failure_reason"
        )
    )
    assert reasons["bad"].startswith("DataError: division by zero")
    assert reasons["x"] == "RuntimeError: boom"
    # The whole batch first, then one record at a time; only the good records' effects
    # were kept, once each.
    assert processor.calls == [4, 1, 1, 1, 1]
    assert EventRollupDelta.objects.filter(type="processed-marker").count() == 2


class FlakyProcessor:
    """Fails with a transient error the first `failures` times, then processes."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.processed: Counter = Counter()

    def process(self, records: list[Record]) -> dict[int, str]:
        if self.failures:
            self.failures -= 1
            raise self.error
        self.processed.update(record.record_id for record in records)
        return {}


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("server closed the connection unexpectedly"),
        KombuOperationalError("broker unreachable"),
        RedisConnectionError("cache unreachable"),
    ],
    ids=["database", "broker", "cache"],
)
def test_a_transient_error_fails_no_record_and_the_batch_runs_again(
    client, collector, use_processor, error
):
    processor = use_processor(FlakyProcessor(failures=1, error=error))
    send(client, collector, 3)

    assert records_process_batch(collector_id=str(collector.pk)) == 0
    assert statuses(collector) == {Record.Status.UNPROCESSED: 3}  # given back, not FAILED
    counts = collector_status_counts(collector_id=collector.pk)
    assert (counts["UNPROCESSED"], counts["IN_PROGRESS"], counts["FAILED"]) == (3, 0, 0)

    assert records_process_batch(collector_id=str(collector.pk)) == 3
    assert statuses(collector) == {Record.Status.PROCESSED: 3}
    assert set(processor.processed.values()) == {1}
    rollups_fold()
    counts = dict(
        EventRollup.objects.filter(collector_id=collector.pk).values_list("status", "count")
    )
    assert counts.get(Record.Status.PROCESSED) == 3
    assert not counts.get(Record.Status.FAILED)
    assert not counts.get(Record.Status.IN_PROGRESS)


def test_concurrent_claims_take_disjoint_batches(client, collector):
    send(client, collector, 6)
    first = records_claim(collector_id=str(collector.pk), limit=4)
    second = records_claim(collector_id=str(collector.pk), limit=4)
    ids_first = {r.record_id for r in first.records}
    ids_second = {r.record_id for r in second.records}
    assert len(ids_first) == 4 and len(ids_second) == 2 and not ids_first & ids_second


def test_a_batch_whose_worker_died_is_claimed_again_and_processed_once(
    client, collector, processor, settings
):
    """Worker A claims a batch and dies (never finishes). Before the claim timeout nobody
    may take it; after it, worker B claims it again and processes it. If A comes back
    late, its finish is refused and rolled back: every record is processed once."""
    send(client, collector, 5)
    timeout = settings.TALLY["COLLECTION"]["CLAIM_TIMEOUT_SECONDS"]
    start = timezone.now()
    dead = records_claim(collector_id=str(collector.pk), now=start)
    assert len(dead.records) == 5
    assert statuses(collector) == {Record.Status.IN_PROGRESS: 5}

    soon = start + timedelta(seconds=timeout - 1)
    assert records_process_batch(collector_id=str(collector.pk), now=soon) == 0

    later = start + timedelta(seconds=timeout + 1)
    assert records_process_batch(collector_id=str(collector.pk), now=later) == 5
    assert statuses(collector) == {Record.Status.PROCESSED: 5}
    assert set(processor.seen.values()) == {1}

    from django.db import transaction

    with pytest.raises(ClaimLost), transaction.atomic():
        processor.process(dead.records)  # the late worker's effects ...
        claim_finish(claim=dead, failures={})  # ... are rolled back with this error
    assert statuses(collector) == {Record.Status.PROCESSED: 5}


def test_status_counts_follow_the_records(client, collector, processor):
    processor.fail = {"r0"}
    send(client, collector, 4)
    assert collector_status_counts(collector_id=collector.pk) == {
        "UNPROCESSED": 4,
        "IN_PROGRESS": 0,
        "PROCESSED": 0,
        "FAILED": 0,
    }
    records_process_batch(collector_id=str(collector.pk))
    expected = {"UNPROCESSED": 0, "IN_PROGRESS": 0, "PROCESSED": 3, "FAILED": 1}
    assert collector_status_counts(collector_id=collector.pk) == expected
    assert rollups_fold() > 0
    assert not EventRollupDelta.objects.exists()
    assert collector_status_counts(collector_id=collector.pk) == expected
    assert rollups_fold() == 0
    by_status = {
        row.status: row.count
        for row in EventRollup.objects.filter(collector_id=collector.pk)
        if row.count
    }
    assert by_status == {Record.Status.PROCESSED: 3, Record.Status.FAILED: 1}


def test_stats_endpoint_reports_counts_and_the_oldest_unprocessed_age(client, collector):
    empty = client.get(f"{BASE}/{collector.pk}/stats").json()
    assert empty["oldestUnprocessedAt"] is None and empty["oldestUnprocessedAgeSeconds"] is None
    send(client, collector, 3)
    body = client.get(f"{BASE}/{collector.pk}/stats").json()
    assert body["collectorId"] == str(collector.pk)
    assert body["counts"] == {"UNPROCESSED": 3, "IN_PROGRESS": 0, "PROCESSED": 0, "FAILED": 0}
    assert body["oldestUnprocessedAt"].endswith("Z")
    assert body["oldestUnprocessedAgeSeconds"] >= 0


def test_ingestion_signals_the_worker_after_commit(
    client, collector, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        send(client, collector, 1)
    assert len(callbacks) == 1


def test_the_pending_sweep_queues_collectors_with_queued_records(
    client, collector, processor, acme, monkeypatch
):
    from collection import selectors
    from tests.collection.conftest import make_collector

    idle = make_collector(acme, name="Idle")
    creating = make_collector(acme, name="Creating", active=False)
    send(client, collector, 2)
    assert selectors.collectors_with_queued_records() == [collector.pk]
    queued: list[tuple[str, str]] = []
    monkeypatch.setattr(tasks.records_process, "delay", lambda c: queued.append(("process", c)))
    monkeypatch.setattr(
        tasks.collector_provision, "delay", lambda c: queued.append(("provision", c))
    )
    tasks.records_process_pending()
    assert sorted(queued) == [("process", str(collector.pk)), ("provision", str(creating.pk))]
    assert str(idle.pk) not in {c for _, c in queued}


@pytest.mark.django_db(transaction=True)
def test_a_slow_batch_past_the_claim_timeout_is_not_taken_over_while_its_worker_lives(
    client, collector, settings
):
    """While a worker is still processing (a slow stream), another worker's claim after
    the timeout finds nothing: the claimed rows are locked by the live transaction."""
    import threading

    from django.db import connections

    send(client, collector, 3)
    timeout = settings.TALLY["COLLECTION"]["CLAIM_TIMEOUT_SECONDS"]
    stolen: list[int] = []

    class SlowProcessor:
        def process(self, records):
            def other_worker():
                later = timezone.now() + timedelta(seconds=timeout + 60)
                try:
                    claim = records_claim(collector_id=str(collector.pk), now=later)
                    stolen.append(len(claim.records))
                finally:
                    connections.close_all()

            thread = threading.Thread(target=other_worker)
            thread.start()
            thread.join(timeout=30)
            return {}

    def resolve(candidate):
        return SlowProcessor() if candidate.pk == collector.pk else None

    register_resolver(resolve)
    try:
        assert records_process_batch(collector_id=str(collector.pk)) == 3
    finally:
        unregister_resolver(resolve)
    assert stolen == [0]
    assert statuses(collector) == {Record.Status.PROCESSED: 3}


def test_claims_start_past_what_was_processed_and_still_find_stragglers(
    client, collector, monkeypatch
):
    """A claim reads the queue from just before the newest record the last one took
    (so it does not walk every processed record); a record behind that point (here one
    sent with an earlier receipt time, as a late-committing ingestion would) is found by
    the full scan made when the short one comes back short, or every few claims."""
    from collection.services import work_queue

    monkeypatch.setattr(work_queue, "FULL_SCAN_EVERY", 2)
    collector_id = str(collector.pk)
    send(client, collector, 6, prefix="a")
    assert len(records_claim(collector_id=collector_id, limit=2).records) == 2
    floor, since_full = work_queue._floors[collector_id]
    assert since_full == 0
    # A straggler: queued, received before the floor.
    send(client, collector, 1, prefix="late")
    Record.objects.filter(record_id="late0").update(
        received_at=floor - timedelta(minutes=5), event_time=floor - timedelta(minutes=5)
    )
    taken = []
    for _ in range(3):
        taken += [r.record_id for r in records_claim(collector_id=collector_id, limit=2).records]
    assert "late0" in taken
    assert sorted(taken) == ["a2", "a3", "a4", "a5", "late0"]
