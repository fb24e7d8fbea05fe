"""Fixtures for collection tests: an ACTIVE collector for acme, generous rate limits."""

from __future__ import annotations

import pytest

from collection.models import Collector
from tests.conftest import Tenant
from tests.factories import CollectorFactory

BASE = "/online-collection/v1/collectors"


@pytest.fixture(autouse=True)
def _generous_limits(settings):
    # Most tests make more calls than the reference limits allow; limits get their own test.
    for group in ("collectors-write", "collectors-read", "ingestion"):
        settings.TALLY["RATE_LIMITS"][group] = {"rate": 1000, "burst": 1000}


def make_collector(tenant: Tenant, name: str = "Main collector", active: bool = True) -> Collector:
    return CollectorFactory(operator=tenant.operator, name=name, active=active)


@pytest.fixture
def collector(acme) -> Collector:
    return make_collector(acme)


@pytest.fixture
def client(acme, api_client):
    return api_client(acme.token)


def data_url(collector: Collector) -> str:
    return f"{BASE}/{collector.pk}/data"
