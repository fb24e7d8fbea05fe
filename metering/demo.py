"""Demo data for a first run: two meter types, meters for three customers and a week of
usage, applied day by day so that the daily meters have closed periods to show and
thresholds have fired (storage above 90 % on most days; API calls near their monthly
capacity once the month is a few days old)."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from metering.models import MeterType
from metering.services import meter_type_create
from metering.thresholds import thresholds_parse, thresholds_to_stored
from metering.usage import UsageUpdate, usage_apply
from tenants.models import Operator

CUSTOMERS = ["alice@example.com", "bob@example.com", "carol@example.com"]


def load_demo(*, operator: Operator) -> dict:
    now = timezone.now()
    week_ago = now - timedelta(days=7)
    api_calls = meter_type_create(
        operator=operator,
        name="API calls",
        external_ref="api-calls",
        category="API",
        unit="requests",
        aggregation=MeterType.Aggregation.SUM,
        timezone="Europe/Berlin",
        reset_cron="0 0 1 * *",
        capacity=Decimal(4000),
        thresholds=thresholds_to_stored(
            thresholds_parse(
                [
                    {
                        "name": "APPROACHING_LIMIT",
                        "capacityPercentage": 80,
                        "customFields": {"action": "EMAIL_CUSTOMER"},
                    },
                    {
                        "name": "LIMIT_REACHED",
                        "absoluteValue": 4000,
                        "customFields": {"action": "THROTTLE"},
                    },
                ]
            )
        ),
        active_from=week_ago - timedelta(days=1),
    )
    storage = meter_type_create(
        operator=operator,
        name="Storage",
        category="Storage",
        unit="GB",
        aggregation=MeterType.Aggregation.MAX,
        timezone="Etc/UTC",
        reset_cron="0 0 * * *",
        capacity=Decimal(100),
        thresholds=thresholds_to_stored(
            thresholds_parse([{"name": "DISK_ALMOST_FULL", "capacityPercentage": 90}])
        ),
        active_from=week_ago - timedelta(days=1),
    )
    rng = random.Random(7)  # noqa: S311 (the same demo every time; not a secret)
    applied = 0
    for day in range(7, -1, -1):
        day_start = (now - timedelta(days=day)).replace(hour=0, minute=0, second=0, microsecond=0)
        updates = []
        for hour in range(0, 24, 3):
            moment = day_start + timedelta(hours=hour)
            if moment > now or moment < week_ago:
                continue
            for customer in CUSTOMERS:
                updates.append(
                    UsageUpdate(
                        meter_type_id=api_calls.pk,
                        category=None,
                        meter_key="default",
                        user_id=customer,
                        value=Decimal(rng.randint(20, 120)),
                        event_time=moment,
                        group=rng.choice(["GET", "POST"]),
                        record={"endpoint": "/v1/orders"},
                    )
                )
                updates.append(
                    UsageUpdate(
                        meter_type_id=storage.pk,
                        category=None,
                        meter_key="default",
                        user_id=customer,
                        value=Decimal(rng.randint(50, 400)) / Decimal(4),
                        event_time=moment,
                    )
                )
        updates.sort(key=lambda update: update.event_time)
        if updates:
            result = usage_apply(
                operator=operator, updates=updates, now=max(u.event_time for u in updates)
            )
            applied += result.applied + result.late_applied
    return {"meterTypes": [api_calls.name, storage.name], "usageApplied": applied}
