"""A real Celery worker killed after claiming a batch: another claims it after the
timeout and every record is processed exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from celery import Celery
from django.db import connection

from collection.models import Record
from collection.services import collector_create, collector_provision
from tests.conftest import make_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
BROKER_DB = 14  # a Redis database of its own, so other tests' queued tasks stay out


def _broker_url() -> str:
    parts = urlsplit(os.environ["REDIS_URL"])
    return urlunsplit(parts._replace(path=f"/{BROKER_DB}"))


def _database_url() -> str:
    settings = connection.settings_dict
    host = settings["HOST"] or "127.0.0.1"
    if host.startswith("/"):
        host = host.replace("/", "%2F")
    port = settings["PORT"] or 5432
    user = settings["USER"] or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


def _start_worker(name: str, mode: str, work_dir: Path, **extra_env) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": _broker_url(),
        "TALLY_E2E_MODE": mode,
        "TALLY_E2E_DIR": str(work_dir),
        **extra_env,
    }
    command = [
        str(Path(sys.executable).with_name("celery")),
        "-A",
        "config",
        "worker",
        "--pool",
        "solo",
        "--include",
        "tests.e2e.worker_processor",
        "--hostname",
        f"{name}-{uuid.uuid4().hex[:6]}@e2e",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "INFO",
    ]
    log = (work_dir / f"{name}.log").open("w")
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_for(condition, seconds: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    output = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"Timed out waiting for {what}.\n{output}")


def _stop(worker: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, sig)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def test_batch_of_a_killed_worker_is_processed_once(tmp_path):
    broker = redis.Redis.from_url(_broker_url())
    broker.flushdb()
    sender = Celery(broker=_broker_url())
    tenant = make_tenant("Killed worker")
    collector = collector_create(operator=tenant.operator, name="e2e")
    collector_provision(collector_id=collector.pk)
    from django.test import Client

    ids = [f"rec-{index}" for index in range(50)]
    response = Client().post(
        f"/online-collection/v1/collectors/{collector.pk}/data",
        {"data": [{"id": record_id, "type": "call"} for record_id in ids]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant.token}",
    )
    assert response.status_code == 202, response.content

    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = _start_worker("first", "hang", tmp_path)
    second = None
    try:
        sender.send_task("collection.tasks.records_process", args=[str(collector.pk)])
        _wait_for(lambda: (tmp_path / "claimed.txt").exists(), 90, "the first claim", logs)
        assert sorted((tmp_path / "claimed.txt").read_text().split()) == sorted(ids)

        _stop(first, signal.SIGKILL)  # dies holding the claim
        stranded = Counter(
            Record.objects.filter(collector_id=collector.pk).values_list("status", flat=True)
        )
        assert stranded == {Record.Status.IN_PROGRESS: len(ids)}

        second = _start_worker("second", "record", tmp_path, TALLY_CLAIM_TIMEOUT_SECONDS="2")
        time.sleep(2.5)  # the claim has now timed out
        sender.send_task("collection.tasks.records_process", args=[str(collector.pk)])

        def all_processed() -> bool:
            return (
                Record.objects.filter(collector_id=collector.pk)
                .exclude(status=Record.Status.PROCESSED)
                .count()
                == 0
            )

        _wait_for(all_processed, 90, "the second worker to process the batch", logs)
    finally:
        _stop(first, signal.SIGKILL)
        if second is not None:
            _stop(second)
        broker.flushdb()

    processed = Counter((tmp_path / "processed.txt").read_text().split())
    assert set(processed) == set(ids)
    assert set(processed.values()) == {1}, "a record was processed twice"
