"""Celery tasks for reporting: thin wrappers around services, safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.core.cache import cache

from reporting import services
from reporting.models import MetricDefinition

# One backfill task per metric at a time (a second one would only wait on the index
# lock); the mark outlives a killed worker by this long, then Beat starts another.
BACKFILL_MARK_SECONDS = 120
BACKFILL_BUDGET_SECONDS = 30.0


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def metric_backfill(metric_id: str) -> None:
    """Backfill an indexed metric for a while, then queue the rest as a new task, so a
    long backfill never holds a worker for long."""
    mark = f"reporting:metric-backfill:{metric_id}"
    if not cache.add(mark, 1, timeout=BACKFILL_MARK_SECONDS):
        return
    try:
        more = services.metric_backfill(metric_id=metric_id, budget_seconds=BACKFILL_BUDGET_SECONDS)
    finally:
        cache.delete(mark)
    if more:
        metric_backfill.apply_async((metric_id,))


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def metric_backfills_resume() -> None:
    """Beat: queue the backfill of every metric still backfilling (a lost task message
    or a killed worker must not leave one unfinished)."""
    for metric_id in (
        MetricDefinition.objects.live()
        .filter(index_status=MetricDefinition.IndexStatus.BACKFILLING)
        .values_list("pk", flat=True)
    ):
        metric_backfill.apply_async((str(metric_id),))
