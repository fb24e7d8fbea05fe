"""Two Beat workers flushing the same timed-out sessions at once send each one once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from streams.models import AggregationFlush, AggregationSession, StreamLogLine
from streams.runtime import runner
from tests.streams.runtime.helpers import (
    create_collector,
    import_stream,
    ingest,
    process_all,
    set_stream,
)
from tests.streams.runtime.test_data_aggregate import aggregate_stream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("generous_limits")]


def test_racing_flushers_send_each_session_once(acme, api_client):
    client = api_client(acme.token)
    collector = create_collector(client, "Race")
    params = {
        "flushType": "TIMEOUT",
        "timeout": {"value": 1, "unit": "MINUTES"},
        "groupKeys": [{"field": "user", "operationType": "NONE"}],
        "operations": [{"field": "n", "type": "NUMERIC_SUM"}],
    }
    stream = import_stream(client, aggregate_stream(collector["id"], params))
    set_stream(client, stream["id"], enabled=True)
    ingest(client, collector["id"], [{"user": f"u{i}", "n": i} for i in range(300)])
    process_all(collector["id"])
    assert AggregationSession.objects.count() == 300

    later = timezone.now() + timedelta(minutes=2)
    start = threading.Barrier(3)
    handled: list[int] = []

    def flusher() -> None:
        try:
            start.wait()
            while count := runner.sessions_flush_due(limit=25, now=later):
                handled.append(count)
        finally:
            connection.close()

    threads = [threading.Thread(target=flusher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(handled) == 300
    sent = StreamLogLine.objects.filter(stream_id=stream["id"], node_id="out")
    assert sorted(line.payload["user"] for line in sent) == sorted(f"u{i}" for i in range(300))
    assert AggregationFlush.objects.count() == 300
    assert not AggregationSession.objects.exists()
