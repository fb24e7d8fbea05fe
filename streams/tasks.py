"""Celery tasks for streams: thin wrappers around services, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from streams import services
from streams.runtime import runner

# A call sends at most this many batches of flushes, then queues itself again.
FLUSH_BATCHES_PER_CALL = 20


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execution_run(execution_id: str) -> None:
    services.execution_run(execution_id=execution_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def executions_schedule() -> int:
    return services.executions_schedule()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def executions_recover() -> int:
    return services.executions_recover()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def flushes_run() -> int:
    total = 0
    for _ in range(FLUSH_BATCHES_PER_CALL):
        sent = runner.flushes_run()
        total += sent
        if not sent:
            return total
    flushes_run.delay()
    return total


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def sessions_flush_due() -> int:
    total = 0
    for _ in range(FLUSH_BATCHES_PER_CALL):
        handled = runner.sessions_flush_due()
        total += handled
        if not handled:
            return total
    sessions_flush_due.delay()
    return total


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def streams_sweep() -> None:
    services.streams_sweep()
