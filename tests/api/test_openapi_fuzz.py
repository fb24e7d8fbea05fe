"""Generated requests for every documented operation, in-process.

Schemathesis reads /api/schema/ and sends valid and invalid requests to each operation:
none may answer 5xx, and every answer must match what the schema documents (status
codes, content type, body shape).
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from collection.services import collector_create, collector_provision
from config.wsgi import application
from metering.models import MeterType
from metering.services import meter_create, meter_type_create
from tenants.services import platform_key_create

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _operations() -> list:
    # Building the schema needs the URLconf only, not the database.
    loaded = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    return [result.ok() for result in loaded.get_all_operations()]


OPERATIONS = _operations()


@pytest.fixture
def same_connection():
    """Keep the test's database connection across in-process requests, as Django's test
    client does (request signals would otherwise close it mid-test)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def caller(acme, settings, same_connection):
    # Generated requests arrive far faster than the reference's limits allow.
    for group in settings.TALLY["RATE_LIMITS"]:
        settings.TALLY["RATE_LIMITS"][group] = {"rate": 1e6, "burst": 1e6}
    collector = collector_create(operator=acme.operator, name="fuzz")
    collector_provision(collector_id=collector.pk)
    meter_type = meter_type_create(
        operator=acme.operator,
        name="Fuzz",
        unit="u",
        aggregation=MeterType.Aggregation.SUM,
        timezone="Etc/UTC",
        reset_cron="0 0 * * *",
    )
    meter_create(operator=acme.operator, meter_type=meter_type, meter_key="k", user_id="u")
    return {
        "operator": f"Bearer {acme.token}",
        "platform": f"Bearer {platform_key_create(name='fuzz').raw_key}",
    }


@pytest.mark.django_db
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_every_operation_answers_as_documented(operation, caller):
    credential = "platform" if operation.path.startswith("/platform-api") else "operator"

    @given(case=operation.as_strategy())
    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def answers_as_documented(case):
        case.call_and_validate(headers={"Authorization": caller[credential]}, checks=CHECKS)

    answers_as_documented()
