"""The connector catalogue: seeded by migration, shown read-only in the admin with each
connector's adoption."""

from __future__ import annotations

import pytest
from django.test import Client

from metering.notifications import webhook_endpoint_set
from streams.models import Connector
from tests.metering.test_migrations import executor_leaf, migrate
from tests.reporting.platform_helpers import connect, fold
from tests.streams.runtime.helpers import ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generous_limits")]

ADMIN = "/admin/streams/connector/"


@pytest.mark.django_db(transaction=True)
def test_the_migration_seeds_the_three_connectors():
    try:
        migrate([("streams", "0003_aggregation_stores")])
        apps = migrate([("streams", "0004_connectors")])
        seeded = {
            row.id: (row.direction, row.name)
            for row in apps.get_model("streams", "Connector").objects.all()
        }
        assert seeded == {
            "online-collection": ("inbound", "Online collection"),
            "webhook": ("outbound", "Webhook"),
            "http": ("outbound", "HTTP"),
        }
        # Unapplied, the catalogue goes with its table; applied again, it is back.
        migrate([("streams", "0003_aggregation_stores")])
        apps = migrate([("streams", "0004_connectors")])
        assert apps.get_model("streams", "Connector").objects.count() == 3
    finally:
        migrate(executor_leaf())


def test_every_connector_slug_is_one_the_counters_use():
    from tenants import accounting

    assert {Connector.ONLINE_COLLECTION, Connector.WEBHOOK, Connector.HTTP} == {
        accounting.ONLINE_COLLECTION,
        accounting.WEBHOOK,
        accounting.HTTP,
    }


@pytest.fixture
def staff(catalogue, staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def test_staff_see_the_catalogue_with_its_adoption(staff, api_client, acme, globex):
    acme_client = api_client(acme.token)
    made = connect(acme_client, collectors=2, deleted=1, http_streams=[True])
    ingest(acme_client, made["collectors"][0]["id"], [{"id": "1"}])
    webhook_endpoint_set(operator=globex.operator, url="https://hooks.example.com/g")
    fold()

    response = staff.get(ADMIN)

    assert response.status_code == 200
    page = response.content.decode().lower()
    rows = {
        row.id: row
        for row in response.context["cl"].result_list  # the changelist's connectors
    }
    assert set(rows) == {"online-collection", "webhook", "http"}
    for header in (
        "active connections",
        "inactive connections",
        "operators using",
        "gateway calls",
    ):
        assert header in page
    columns = dict(
        (column.__name__, column)
        for column in response.context["cl"].list_display
        if callable(column)
    )
    online = rows["online-collection"]
    assert columns["active_connections"](online) == 2
    assert columns["inactive_connections"](online) == 1
    assert columns["operators_using"](online) == 1
    assert columns["gateway_calls"](online) == 1
    assert columns["active_connections"](rows["webhook"]) == 1
    assert columns["active_connections"](rows["http"]) == 1


def test_the_catalogue_cannot_be_changed_in_the_admin(staff):
    assert staff.get(f"{ADMIN}add/").status_code == 403
    page = staff.get(f"{ADMIN}webhook/change/")
    assert page.status_code == 200  # viewable
    assert b'name="name"' not in page.content  # no form fields
    assert staff.post(f"{ADMIN}webhook/delete/", {"post": "yes"}).status_code == 403
    assert Connector.objects.filter(pk="webhook").exists()
