"""Indexed metrics count every record exactly once with real Celery workers: a backfill
killed half-way and resumed by another worker, records processed by a third worker
while the backfill runs, and a processing worker killed holding a claimed batch."""

from __future__ import annotations

import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from collection.models import Record
from collection.services import collector_create, collector_provision
from reporting import definitions
from reporting.measures import Window
from reporting.models import MetricDefinition
from reporting.selectors import metric_value
from reporting.services import metric_create
from tests.conftest import make_tenant
from tests.e2e.test_worker_killed import _broker_url, _stop, _wait_for
from tests.e2e.test_worker_killed import _start_worker as _start_plain_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _send(tenant, collector_id, first: int, count: int) -> None:
    response = Client().post(
        f"/online-collection/v1/collectors/{collector_id}/data",
        {
            "data": [
                {"id": f"r{index}", "type": "call", "customerId": "c", "n": index}
                for index in range(first, first + count)
            ]
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant.token}",
    )
    assert response.status_code == 202, response.content


def _start_worker(name: str, mode: str, work_dir: Path, **extra_env):
    # The test's own cache prefix, so the test sees (and clears) the workers' marks; a
    # backfill one record per step, so it is still running when the test kills it.
    return _start_plain_worker(
        name,
        mode,
        work_dir,
        TALLY_REDIS_PREFIX=settings.REDIS_KEY_PREFIX,
        TALLY_METRICS_BACKFILL_CHUNK="1",
        **extra_env,
    )


def _unprocessed(collector_id) -> int:
    return (
        Record.objects.filter(collector_id=collector_id)
        .exclude(status=Record.Status.PROCESSED)
        .count()
    )


def _values(operator, metric) -> tuple:
    spec = metric.spec()
    indexed = metric_value(
        operator_id=operator.pk, spec=spec, customer_id="c", window=Window(), metric=metric
    )
    simple = metric_value(operator_id=operator.pk, spec=spec, customer_id="c", window=Window())
    return indexed, simple


def test_indexed_metric_counts_each_record_once_through_kills_and_races(tmp_path: Path):
    broker = redis.Redis.from_url(_broker_url())
    broker.flushdb()
    sender = Celery(broker=_broker_url())
    tenant = make_tenant("Indexed metric workers")
    collector = collector_create(operator=tenant.operator, name="calls")
    collector_provision(collector_id=collector.pk)
    process = ("collection.tasks.records_process", [str(collector.pk)])
    logs = [tmp_path / f"{name}.log" for name in ("first", "backfill", "worker", "hang", "resume")]

    # 1. Records processed before the metric exists: the backfill must count them.
    _send(tenant, collector.pk, 0, 1000)
    first = _start_worker("first", "record", tmp_path)
    workers = [first]
    try:
        sender.send_task(*process)
        _wait_for(lambda: _unprocessed(collector.pk) == 0, 90, "the first records", logs)
        _stop(first)

        metric = metric_create(
            operator=tenant.operator,
            name="calls",
            query_type=definitions.INDEXED,
            aggregation_type=definitions.SUM,
            event_name="call",
            value_property="$.n",
        )
        # 2. More records arrive. A backfill walks the ids one at a time on one worker,
        # while another processes the new records.
        _send(tenant, collector.pk, 1000, 1000)
        backfiller = _start_worker("backfill", "record", tmp_path)
        workers.append(backfiller)
        sender.send_task("reporting.tasks.metric_backfill", args=[str(metric.pk)])

        def started() -> bool:
            metric.refresh_from_db()
            return metric.indexed_through > 0

        _wait_for(started, 90, "the backfill to start", logs)
        worker = _start_worker("worker", "record", tmp_path)
        workers.append(worker)
        sender.send_task(*process)

        middle = Record.objects.get(collector_id=collector.pk, record_id="r1000").pk

        def halfway() -> bool:
            metric.refresh_from_db()
            return metric.indexed_through >= middle

        _wait_for(halfway, 90, "the backfill to get half-way", logs)
        _stop(backfiller, signal.SIGKILL)
        metric.refresh_from_db()
        assert metric.index_status == MetricDefinition.IndexStatus.BACKFILLING
        _wait_for(lambda: _unprocessed(collector.pk) == 0, 90, "the second records", logs)
        _stop(worker)

        # 3. A worker dies holding a claimed batch; its records are processed by another.
        _send(tenant, collector.pk, 2000, 100)
        hanging = _start_worker("hang", "hang", tmp_path)
        workers.append(hanging)
        sender.send_task(*process)
        _wait_for(lambda: (tmp_path / "claimed.txt").exists(), 90, "the hanging claim", logs)
        _stop(hanging, signal.SIGKILL)

        # 4. The killed backfill's mark would expire after two minutes; the test lifts it.
        cache.delete(f"reporting:metric-backfill:{metric.pk}")
        resumed = _start_worker("resume", "record", tmp_path, TALLY_CLAIM_TIMEOUT_SECONDS="2")
        workers.append(resumed)
        sender.send_task("reporting.tasks.metric_backfill", args=[str(metric.pk)])
        time.sleep(2.5)  # the hanging claim has timed out
        sender.send_task(*process)

        def done() -> bool:
            metric.refresh_from_db()
            return (
                metric.index_status == MetricDefinition.IndexStatus.READY
                and _unprocessed(collector.pk) == 0
            )

        _wait_for(done, 120, "the backfill and the processing to finish", logs)
    finally:
        for each in workers:
            _stop(each)
        sender.close()

    expected = Decimal(sum(range(2100)))
    assert _values(tenant.operator, metric) == (expected, expected)
