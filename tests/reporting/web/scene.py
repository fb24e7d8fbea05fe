"""A scene for the dashboards' tests: an operator with events (some failed), meters
near their capacity and the alerts they fired, set through the API and the services
the worker uses; and browser users with memberships.

Every operator's customers are named after it (`carol@acme.example`), so a page that
shows another operator's data shows a name that does not belong.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.utils import timezone

from collection.models import Collector
from collection.services import claim_finish, records_claim
from metering.models import Meter, MeterType
from metering.usage import UsageUpdate, usage_apply
from tenants.services import operator_membership_set
from tests.conftest import ApiClient, Tenant, make_tenant
from tests.factories import CollectorFactory, MeterTypeFactory

PASSWORD = "dashboard-password-123"
COLLECTORS = "/online-collection/v1/collectors"


@dataclass
class OperatorScene:
    tenant: Tenant
    domain: str
    collector: Collector
    meter_type: MeterType
    meters: list[Meter] = field(default_factory=list)
    # Event times of the records ingested, and how many of them failed processing.
    event_times: list[datetime.datetime] = field(default_factory=list)
    failed: int = 0

    @property
    def operator(self):
        return self.tenant.operator

    def customer(self, index: int) -> str:
        return f"customer-{index}@{self.domain}"


def operator_scene(name: str) -> OperatorScene:
    """An operator with an application, a collector and a meter type "API calls"
    (capacity 1,000 calls, an alert at 80%), and nothing counted yet."""
    tenant = make_tenant(name)
    return OperatorScene(
        tenant=tenant,
        domain=f"{name.lower()}.example",
        collector=CollectorFactory(operator=tenant.operator, name=f"{name} records"),
        meter_type=MeterTypeFactory(
            operator=tenant.operator,
            name="API calls",
            unit="calls",
            capacity=Decimal(1000),
            thresholds=[{"capacityPercentage": 80, "name": "Almost full"}],
        ),
    )


def events_add(scene: OperatorScene, moments: list[datetime.datetime], *, failing: int = 0) -> None:
    """Ingest one record per moment through the API; a worker then processes them and
    the first `failing` of them fail."""
    client = ApiClient(scene.tenant.token)
    start = len(scene.event_times)
    records = [
        {
            "id": f"record-{start + index}",
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "type": "api-call",
            "customerId": scene.customer(index % 3),
        }
        for index, moment in enumerate(moments)
    ]
    response = client.post(f"{COLLECTORS}/{scene.collector.pk}/data", {"data": records})
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == len(moments), response.content
    claim = records_claim(collector_id=str(scene.collector.pk), limit=len(moments))
    assert len(claim.records) == len(moments)
    failures = {record.id: "No meter for this customer" for record in claim.records[:failing]}
    claim_finish(claim=claim, failures=failures)
    scene.event_times.extend(moments)
    scene.failed += failing


def meters_fill(scene: OperatorScene, values: list[int]) -> None:
    """One customer's "API calls" meter per value, filled as the stream's meter node
    would; values of 800 and more reach the 80% threshold and fire an alert."""
    now = timezone.now()
    first = len(scene.meters)
    updates = [
        UsageUpdate(
            scene.meter_type.pk,
            None,
            "default",
            scene.customer(first + index),
            Decimal(value),
            now,
        )
        for index, value in enumerate(values)
    ]
    result = usage_apply(operator=scene.operator, updates=updates, now=now)
    assert result.applied == len(values)
    scene.meters.extend(
        Meter.objects.filter(
            operator=scene.operator,
            user_id__in=[update.user_id for update in updates],
        ).order_by("user_id")
    )


def member(username: str, *memberships, staff: bool = False):
    """A browser user (password PASSWORD) in the given (operator, role) memberships."""
    user = get_user_model().objects.create_user(
        username=username,
        email=f"{username}@people.example",
        password=PASSWORD,
        is_staff=staff,
    )
    for operator, role in memberships:
        operator_membership_set(operator=operator, user=user, role=role)
    return user
