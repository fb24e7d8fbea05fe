"""Demo data for a first run: a collector and an enabled realtime stream reading it
(online collection → map → meter), with a "Pages printed" meter per customer, and a
week of print jobs sent to the collector and run through the stream the way a worker
runs it, so that meters, their printers, toner alerts, event counts and one failed
record are all real. Usage sent to the collector afterwards moves a meter at once
(README shows the curl). A small batch stream has one execution to show."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from collection.models import Collector
from collection.services import collector_create, collector_provision, records_process_batch
from collection.services.ingestion import ingestion_receive
from common.json import encode, format_datetime
from metering.demo import CUSTOMERS
from metering.models import MeterType
from metering.services import meter_create, meter_type_create
from metering.thresholds import thresholds_parse, thresholds_to_stored
from streams.models import Stream, StreamExecution, StreamKey
from streams.services import (
    execution_create,
    execution_run,
    solution_default,
    stream_import,
    stream_update,
)
from tenants.models import Operator

PRINTERS = ["printer-1", "printer-2", "printer-3"]
ACTOR = {"type": "user", "id": "demo", "name": "Demo loader"}
CAPACITY = 1000
# Pages each customer prints in the week, by position, against the 1,000-page capacity:
# one passes the 90 % toner threshold (an alert), one comes near it, the rest stay low.
WEEKLY_PAGES = [520, 880, 1600, 300, 700, 180]
# Someone printing without a meter: the stream fails the record, with its node and reason.
UNKNOWN_CUSTOMER = "guest@example.com"
RECORD_TYPE = "print_job"


def demo_stream(collector_id: str) -> dict:
    return {
        "name": "Printing usage",
        "description": "Pages printed, from the demo collector to each customer's meter.",
        "nodes": [
            {
                "id": "collector",
                "name": "Printers",
                "type": "readers/online_collection",
                "params": {"collectorId": collector_id},
                "x": 0,
                "y": 0,
            },
            {
                "id": "normalize",
                "name": "Normalize Fields",
                "type": "transforms/map",
                "params": {
                    "mappings": [
                        {"userId": "customerId"},
                        {"value": "pages"},
                        {"timestamp": "timestamp"},
                        {"printer": "printer"},
                    ]
                },
                "x": 250,
                "y": 0,
            },
            {
                "id": "meter",
                "name": "Meter",
                "type": "transforms/meter",
                "params": {
                    "flushType": "TIMEOUT",
                    "guidingRules": [
                        {
                            "customName": "Printing",
                            "matchCategory": "Printing",
                            "ignoreCondition": True,
                            "conditionRelation": "and",
                            "conditions": [],
                            "groupBy": ["printer"],
                            "otherOperations": [],
                        }
                    ],
                    "multiOutput": {
                        "fixed": {
                            "reset": {"id": "meter-reset"},
                            "threshold": {"id": "meter-threshold"},
                        }
                    },
                },
                "x": 500,
                "y": 0,
            },
            {
                "id": "alerts",
                "name": "Alerts",
                "type": "writers/log",
                "params": {},
                "x": 750,
                "y": -100,
            },
            {
                "id": "billing",
                "name": "To Billing",
                "type": "writers/log",
                "params": {},
                "x": 750,
                "y": 100,
            },
        ],
        "edges": [
            {"id": "e1", "from": "collector", "to": "normalize"},
            {"id": "e2", "from": "normalize", "to": "meter"},
            {"id": "e3", "from": "meter", "to": "alerts", "output": "meter-threshold"},
            {"id": "e4", "from": "meter", "to": "billing", "output": "meter-reset"},
        ],
        "nodeGroups": [
            {
                "id": "metering",
                "name": "Metering",
                "nodeIds": ["normalize", "meter"],
                "annotation": {
                    "text": "Each print job adds its pages to the customer's meter.",
                    "color": "purple",
                },
            }
        ],
        "annotation": {
            "text": "Print jobs sent to the Printers collector are metered per customer and "
            "printer; toner alerts and closed periods are logged.",
            "color": "blue",
        },
    }


def check_stream() -> dict:
    """A batch stream run on demand: one record per printer, written to its log."""
    return {
        "name": "Printer check",
        "description": "Lists the printers, run on demand.",
        "nodes": [
            {
                "id": "printers",
                "name": "Printers",
                "type": "readers/counter",
                "params": {"max": len(PRINTERS)},
                "x": 0,
                "y": 0,
            },
            {
                "id": "name",
                "name": "Printer Number",
                "type": "transforms/map",
                "params": {"mappings": [{"printerNumber": "value"}]},
                "x": 250,
                "y": 0,
            },
            {
                "id": "log",
                "name": "Check Log",
                "type": "writers/log",
                "params": {},
                "x": 500,
                "y": 0,
            },
        ],
        "edges": [
            {"id": "e1", "from": "printers", "to": "name"},
            {"id": "e2", "from": "name", "to": "log"},
        ],
    }


def load_demo(
    *, operator: Operator, customers: dict[str, str] | None = None, seed: int = 7
) -> dict:
    customers = CUSTOMERS if customers is None else customers
    now = timezone.now()
    week_ago = now - timedelta(days=7)
    collector = collector_create(operator=operator, name="Printers")
    # Record partitions from a week ago's month on: the week's jobs are received in the
    # months they were printed in.
    collector_provision(collector_id=collector.pk, now=week_ago)
    collector.refresh_from_db()
    pages = meter_type_create(
        operator=operator,
        name="Pages printed",
        category="Printing",
        unit="pages",
        aggregation=MeterType.Aggregation.SUM,
        timezone="Etc/UTC",
        reset_cron="0 0 1 * *",
        capacity=Decimal(CAPACITY),
        thresholds=thresholds_to_stored(
            thresholds_parse(
                [
                    {
                        "name": "ORDER_TONER",
                        "capacityPercentage": 90,
                        "customFields": {"action": "EMAIL"},
                    }
                ]
            )
        ),
        active_from=week_ago - timedelta(days=1),
    )
    result = stream_import(
        operator=operator,
        solution=solution_default(operator=operator),
        config=demo_stream(str(collector.pk)),
        actor=ACTOR,
    )
    stream_update(stream=result.stream, actor=ACTOR, enabled=True)
    meter_key = str(
        StreamKey.objects.get(
            stream=result.stream, node_id="meter", kind=StreamKey.Kind.METER_KEY
        ).value
    )
    # Provisioned a week ago, before the week's jobs. When the week reaches back into last
    # month, that first period has closed by now and its jobs correct it, as late records.
    for customer in customers:
        meter_create(
            operator=operator,
            meter_type=pages,
            meter_key=meter_key,
            user_id=customer,
            now=week_ago - timedelta(minutes=5),
        )
    jobs = _print_jobs(list(customers), start=week_ago, end=now, seed=seed)
    ingestions = _send_by_hour(collector, jobs, now)
    processed = 0
    while claimed := records_process_batch(collector_id=str(collector.pk)):
        processed += claimed
    check = _check_stream_run(operator)
    return {
        "collector": {
            "id": str(collector.pk),
            "ingest": f"/online-collection/v1/collectors/{collector.pk}/data",
        },
        "stream": {"id": str(result.stream.pk), "name": result.stream.name},
        "meterKey": meter_key,
        "meters": list(customers),
        "printers": PRINTERS,
        "records": {"sent": len(jobs), "ingestions": ingestions, "processed": processed},
        "batchStream": {"id": str(check.stream_id), "execution": check.status},
    }


def _print_jobs(customers: list[str], *, start: datetime, end: datetime, seed: int) -> list:
    """A week of print jobs: busy office hours, quiet nights, each customer near its
    weekly pages; plus one job of a customer nobody gave a meter."""
    rng = random.Random(seed)  # noqa: S311 (the same demo every time; not a secret)
    hours = []
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < end:
        hours.append(hour)
        hour += timedelta(hours=1)
    chance = {h: 0.5 if 8 <= h.hour < 18 else 0.08 for h in hours}
    expected_jobs = sum(chance.values())
    jobs = []
    for index, customer in enumerate(customers):
        mean_pages = max(1, round(WEEKLY_PAGES[index % len(WEEKLY_PAGES)] / expected_jobs))
        for hour in hours:
            if rng.random() >= chance[hour]:
                continue
            moment = hour + timedelta(seconds=rng.randrange(3600))
            if moment >= end:
                continue
            jobs.append(
                {
                    "timestamp": moment,
                    "customerId": customer,
                    "printer": rng.choice(PRINTERS),
                    "pages": rng.randint(1, 2 * mean_pages - 1),
                }
            )
    jobs.append(
        {
            "timestamp": end - timedelta(hours=20, minutes=13),
            "customerId": UNKNOWN_CUSTOMER,
            "printer": PRINTERS[0],
            "pages": 7,
        }
    )
    jobs.sort(key=lambda job: job["timestamp"])
    for number, job in enumerate(jobs, start=1):
        job["id"] = f"demo-job-{number}"
        job["type"] = RECORD_TYPE
    return jobs


def _send_by_hour(collector: Collector, jobs: list[dict], now: datetime) -> int:
    """Send each hour's jobs to the collector in one request at the end of that hour,
    through the ingestion service the API calls; returns how many requests."""
    by_hour: dict[datetime, list[dict]] = {}
    for job in jobs:
        hour = job["timestamp"].replace(minute=0, second=0, microsecond=0)
        by_hour.setdefault(hour, []).append(job)
    for hour, batch in sorted(by_hour.items()):
        received = min(now, hour + timedelta(minutes=59, seconds=59))
        body = encode(
            {"data": [{**job, "timestamp": format_datetime(job["timestamp"])} for job in batch]}
        )
        ingestion_receive(
            collector=collector, body=body, content_type="application/json", now=received
        )
    return len(by_hour)


def _check_stream_run(operator: Operator) -> StreamExecution:
    result = stream_import(
        operator=operator,
        solution=solution_default(operator=operator),
        config=check_stream(),
        actor=ACTOR,
    )
    stream = stream_update(
        stream=result.stream, actor=ACTOR, processing_type=Stream.ProcessingType.BATCH
    )
    execution = execution_create(stream=stream, trigger=StreamExecution.Trigger.ADMIN)
    return execution_run(execution_id=execution.pk)
