"""Demo data for a first run: a collector and an enabled realtime stream reading it
(online collection → map → meter) with a "Pages printed" meter per printer, so that
usage sent to the collector moves a meter at once (README shows the curl)."""

from __future__ import annotations

from decimal import Decimal

from collection.services import collector_create, collector_provision
from metering.models import MeterType
from metering.services import meter_create, meter_type_create
from metering.thresholds import thresholds_parse, thresholds_to_stored
from streams.models import StreamKey
from streams.services import solution_default, stream_import, stream_update
from tenants.models import Operator

PRINTERS = ["printer-1", "printer-2", "printer-3"]
ACTOR = {"type": "user", "id": "demo", "name": "Demo loader"}


def demo_stream(collector_id: str) -> dict:
    return {
        "name": "Printing usage",
        "description": "Pages printed, from the demo collector to one meter per printer.",
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
                        {"userId": "printer"},
                        {"value": "pages"},
                        {"timestamp": "timestamp"},
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
                            "groupBy": [],
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
    }


def load_demo(*, operator: Operator) -> dict:
    collector = collector_create(operator=operator, name="Printers")
    collector_provision(collector_id=collector.pk)
    pages = meter_type_create(
        operator=operator,
        name="Pages printed",
        category="Printing",
        unit="pages",
        aggregation=MeterType.Aggregation.SUM,
        timezone="Etc/UTC",
        reset_cron="0 0 1 * *",
        capacity=Decimal(1000),
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
    for printer in PRINTERS:
        meter_create(operator=operator, meter_type=pages, meter_key=meter_key, user_id=printer)
    return {
        "collector": {
            "id": str(collector.pk),
            "ingest": f"/online-collection/v1/collectors/{collector.pk}/data",
        },
        "stream": {"id": str(result.stream.pk), "name": result.stream.name},
        "meterKey": meter_key,
        "meters": PRINTERS,
    }
