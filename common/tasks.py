"""Queueing Celery work by task name, so services never import the tasks that call them.

Every task queued here is also picked up by a Beat sweep, so a broker that cannot be
reached only delays the work: the failure is logged, never raised into the writer.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue(task_name: str, *args: Any, countdown: float | None = None) -> None:
    """Queue `task_name` (e.g. "collection.tasks.records_process") now."""
    try:
        _task(task_name).apply_async(args=args, countdown=countdown, retry=False)
    except Exception:
        logger.warning("Could not queue %s%r; its sweep will do the work.", task_name, args)


def enqueue_on_commit(task_name: str, *args: Any, countdown: float | None = None) -> None:
    """Queue `task_name` once the current transaction commits (at once outside one), so
    the worker sees what the transaction wrote and nothing is queued for a rollback."""
    transaction.on_commit(lambda: enqueue(task_name, *args, countdown=countdown))


def _task(task_name: str):
    # The task's module is imported by name on first use (web processes have not
    # imported every tasks module); apply_async then honours CELERY_TASK_ALWAYS_EAGER.
    task = current_app.tasks.get(task_name)
    if task is None:
        import_module(task_name.rsplit(".", 1)[0])
        task = current_app.tasks[task_name]
    return task
