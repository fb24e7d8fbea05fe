"""Demo data for a first run: named customers, two meter types and a week of usage,
applied day by day so that the daily meters have closed periods to show and thresholds
have fired where a customer's usage runs high (storage above 90 %; API calls near their
monthly capacity once the month is a few days old). Each customer has a billing account
on one price plan (API calls in graduated tiers, storage per GB), one of them invoiced in
EUR, so the usage earns revenue as it is applied. The operator's webhook endpoint is set
but disabled: its URL and signing secret show, and nothing is sent anywhere until someone
enables it."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from metering.models import MeterType, PlanRate
from metering.notifications import webhook_endpoint_set
from metering.services import (
    billing_account_create,
    customer_create,
    exchange_rate_set,
    meter_type_create,
    plan_assignment_create,
    price_plan_create,
)
from metering.thresholds import thresholds_parse, thresholds_to_stored
from metering.usage import UsageUpdate, usage_apply
from tenants.models import Operator

# External id (the API's userId / customerId) -> display name.
CUSTOMERS = {
    "alice@example.com": "Alice Archer",
    "bob@example.com": "Bob Baker",
    "carol@example.com": "Carol Chen",
    "dave@example.com": "Dave Diaz",
    "erin@example.com": "Erin Evans",
    "frank@example.com": "Frank Fischer",
}
# How heavily each customer (by position) uses the API, and the disk it usually fills, so
# that some meters sit near their capacity and alert while others stay well below.
API_USE = [0.9, 0.45, 1.05, 0.25, 0.75, 0.6]
STORAGE_GB = [60, 35, 84, 20, 90, 50]


def load_demo(
    *, operator: Operator, customers: dict[str, str] | None = None, seed: int = 7
) -> dict:
    customers = CUSTOMERS if customers is None else customers
    now = timezone.now()
    week_ago = now - timedelta(days=7)
    for external_id, name in customers.items():
        customer_create(operator=operator, external_id=external_id, name=name, email=external_id)
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
    billing = _billing_set_up(
        operator, customers, api_calls, storage, since=week_ago - timedelta(days=1)
    )
    rng = random.Random(seed)  # noqa: S311 (the same demo every time; not a secret)
    applied = 0
    for day in range(7, -1, -1):
        day_start = (now - timedelta(days=day)).replace(hour=0, minute=0, second=0, microsecond=0)
        updates = []
        for hour in range(0, 24, 3):
            moment = day_start + timedelta(hours=hour)
            if moment > now or moment < week_ago:
                continue
            for index, customer in enumerate(customers):
                api_use = API_USE[index % len(API_USE)]
                storage_gb = STORAGE_GB[index % len(STORAGE_GB)]
                updates.append(
                    UsageUpdate(
                        meter_type_id=api_calls.pk,
                        category=None,
                        meter_key="default",
                        user_id=customer,
                        value=Decimal(round(rng.randint(20, 120) * api_use)),
                        event_time=moment,
                        group=rng.choice(["GET", "POST"]),
                        record={"endpoint": "/v1/orders"},
                    )
                )
                # 85 % to 110 % of the customer's usual size, in quarter GB.
                quarters = rng.randint(storage_gb * 34 // 10, storage_gb * 44 // 10)
                updates.append(
                    UsageUpdate(
                        meter_type_id=storage.pk,
                        category=None,
                        meter_key="default",
                        user_id=customer,
                        value=Decimal(quarters) / 4,
                        event_time=moment,
                    )
                )
        updates.sort(key=lambda update: update.event_time)
        if updates:
            # Applied as of its last event: each day's batch first closes the daily
            # meters' periods that ended before it, as Beat's reset would have.
            result = usage_apply(
                operator=operator, updates=updates, now=max(u.event_time for u in updates)
            )
            applied += result.applied + result.late_applied
    webhook = webhook_endpoint_set(
        operator=operator, url="https://billing.example.com/tally/webhooks", enabled=False
    )
    return {
        "customers": list(customers),
        "meterTypes": [api_calls.name, storage.name],
        "usageApplied": applied,
        "billingAccounts": billing,
        "webhook": {"url": webhook.url, "enabled": webhook.enabled},
    }


def _billing_set_up(
    operator: Operator,
    customers: dict[str, str],
    api_calls: MeterType,
    storage: MeterType,
    *,
    since: datetime,
) -> list[str]:
    plan = price_plan_create(
        operator=operator,
        name="Standard",
        description="API calls in tiers, storage by the GB.",
        rates=[
            {
                "meter_type_id": api_calls.pk,
                "model": PlanRate.Model.GRADUATED,
                "tiers": [
                    {"upTo": 1000, "unitPrice": Decimal("0.01")},
                    {"upTo": None, "unitPrice": Decimal("0.008")},
                ],
            },
            {
                "meter_type_id": storage.pk,
                "model": PlanRate.Model.PER_UNIT,
                "unit_price": Decimal("0.05"),
            },
        ],
    )
    accounts = []
    for index, customer in enumerate(customers):
        account = billing_account_create(
            operator=operator,
            account_id=f"acct-{customer.split('@')[0]}",
            customer_id=customer,
            name=customers[customer],
            invoice_currency="EUR" if index == 1 else operator.base_currency,
        )
        plan_assignment_create(
            operator=operator,
            account=account,
            plan=plan,
            effective_from=since.date(),
            cycle="MONTHLY",
            anchor_day=1,
        )
        accounts.append(account.account_id)
    if operator.base_currency != "EUR":
        exchange_rate_set(
            operator=operator, currency="EUR", date=since.date(), rate=Decimal("0.92")
        )
    return accounts
