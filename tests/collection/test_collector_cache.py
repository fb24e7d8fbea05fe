"""The ingestion endpoint's per-process collector cache saves a lookup, never a check:
a deleted collector is a 404 at once, and one operator's entry never serves another."""

from __future__ import annotations

import pytest

from collection.models import Ingestion, Record
from collection.selectors import live_collectors
from tenants.models import UsageCounter
from tenants.services import GATEWAY_REQUEST, usage_counters_fold
from tests.collection.conftest import data_url
from tests.conftest import assert_error_body

pytestmark = pytest.mark.django_db

RECORD = {"data": {"id": "r1", "type": "call"}}


@pytest.fixture(autouse=True)
def cache_on(settings):
    settings.TALLY["COLLECTION"]["COLLECTOR_CACHE_SECONDS"] = 60
    live_collectors._entries.clear()
    yield
    live_collectors._entries.clear()


def gateway_requests(collector) -> int:
    """Counted with the records, or in Redis for a refused request: both, once folded."""
    usage_counters_fold()
    rows = UsageCounter.objects.filter(kind=GATEWAY_REQUEST, connection=str(collector.pk))
    return sum(rows.values_list("count", flat=True))


def test_a_busy_collector_is_looked_up_once(client, collector, settings, django_assert_num_queries):
    settings.TALLY["TOKEN_CACHE_SECONDS"] = 60  # the token, too, is resolved once
    assert client.post(data_url(collector), RECORD).status_code == 202
    with django_assert_num_queries(1):  # the ingestion statement alone
        response = client.post(data_url(collector), {"data": {"id": "r2"}})
    assert response.status_code == 202, response.content


@pytest.mark.parametrize(
    "body",
    [{"data": {"id": "r2"}}, {"data": "not json"}, {"data": []}],
    ids=["stored", "bad body", "empty"],
)
def test_a_collector_deleted_while_cached_is_a_404_at_once(client, collector, body):
    assert client.post(data_url(collector), RECORD).status_code == 202
    counted = gateway_requests(collector)
    assert client.delete(f"/online-collection/v1/collectors/{collector.pk}").status_code == 200

    response = client.post(data_url(collector), body)

    assert_error_body(response, 404)
    assert Record.objects.filter(collector_id=collector.pk).count() == 1
    assert Ingestion.objects.filter(collector_id=collector.pk).count() == 1
    assert gateway_requests(collector) == counted  # a deleted collector counts nothing


def test_a_replay_on_a_collector_deleted_while_cached_is_a_404(client, collector):
    headers = {"HTTP_IDEMPOTENCY_KEY": "k-1"}
    assert client.post(data_url(collector), RECORD, **headers).status_code == 202
    client.delete(f"/online-collection/v1/collectors/{collector.pk}")
    assert_error_body(client.post(data_url(collector), RECORD, **headers), 404)


def test_another_operator_never_reaches_a_cached_collector(client, collector, globex, api_client):
    assert client.post(data_url(collector), RECORD).status_code == 202
    other = api_client(globex.token)
    assert_error_body(other.post(data_url(collector), {"data": {"id": "theirs"}}), 404)
    assert not Record.objects.filter(record_id="theirs").exists()
