"""Celery tasks for collection: thin wrappers around services, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from collection import selectors, services
from collection.models import Collector
from collection.processing import has_resolvers

logger = logging.getLogger(__name__)

# A pass over one collector stops after this many batches and queues itself again, so a
# busy collector cannot hold a worker forever.
BATCHES_PER_PASS = 20


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def collector_provision(collector_id: str) -> None:
    """Make a CREATING collector ACTIVE once its record partition exists."""
    services.collector_provision(collector_id=collector_id)


# A pass that did work looks again this soon: records that arrived while their signal
# was being debounced wait at most this long.
RECHECK_SECONDS = 0.2


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def records_process(collector_id: str) -> int:
    """Process the collector's queued records, batch after batch. A full batch means more
    are waiting: another worker is asked to join (at most once a second per collector),
    since batches of one collector are claimed disjointly. A pass that did work looks
    again shortly after, for records whose signal was debounced."""
    total = 0
    batch_size = settings.TALLY["COLLECTION"]["PROCESS_BATCH_SIZE"]
    for index in range(BATCHES_PER_PASS):
        claimed = services.records_process_batch(collector_id=collector_id)
        if not claimed:
            break
        total += claimed
        if index == 0 and claimed >= batch_size:
            _ask_for_help(collector_id)
    if total:
        records_process.apply_async((collector_id,), countdown=RECHECK_SECONDS)
    return total


def _ask_for_help(collector_id: str) -> None:
    try:
        if cache.add(f"collection:helper:{collector_id}", 1, 1):
            records_process.delay(collector_id)
    except Exception:  # a lost helper only slows the backlog down
        logger.warning("Could not ask for help with collector %s", collector_id, exc_info=True)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def records_process_pending() -> None:
    """Beat: provision CREATING collectors whose task was lost, and queue a pass for
    every collector with queued records (a lost signal, or a claim whose worker died)."""
    for collector_id in Collector.objects.filter(
        status=Collector.Status.CREATING, deleted_at__isnull=True
    ).values_list("pk", flat=True):
        collector_provision.delay(str(collector_id))
    if not has_resolvers():
        return
    for collector_id in selectors.collectors_with_queued_records():
        records_process.delay(str(collector_id))


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def rollups_fold() -> int:
    return services.rollups_fold()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def record_partitions_ensure() -> int:
    return services.record_partitions_ensure()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def collection_sweep() -> None:
    """Forget record ids past the deduplication window and old Idempotency-Keys."""
    services.record_keys_sweep()
    services.idempotency_keys_sweep()
