"""The Beat schedule in code names real tasks, and every fold of append-only deltas runs."""

from __future__ import annotations

from common.schedules import schedules_collect
from config.celery import app


def test_every_scheduled_task_exists():
    app.loader.import_default_modules()
    missing = [task for task, _ in schedules_collect().values() if task not in app.tasks]
    assert missing == []


def test_every_fold_task_is_scheduled():
    # Delta tables grow without bound when their fold never runs; readers stay exact, so
    # nothing else would notice.
    app.loader.import_default_modules()
    folds = {name for name in app.tasks if name.split(".")[-1].endswith("_fold")}
    scheduled = {task for task, _ in schedules_collect().values()}
    assert folds and folds <= scheduled, folds - scheduled


def test_each_app_declares_its_own_schedules():
    owners = {task.split(".")[0] for task, _ in schedules_collect().values()}
    assert owners == {"tenants", "collection", "metering", "streams", "reporting"}
