"""common.tasks and common.schedules: work queued by name; schedules gathered per app."""

from __future__ import annotations

import logging

import pytest
from django.db import transaction

from common import schedules, tasks


@pytest.fixture
def eager(settings):
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_runs_after_the_commit_and_not_after_a_rollback(eager, monkeypatch):
    ran = []
    monkeypatch.setattr("tenants.services.usage_counters_fold", lambda: ran.append(1) or 0)

    with transaction.atomic():
        tasks.enqueue_on_commit("tenants.tasks.usage_counters_fold")
        assert ran == []
    assert ran == [1]

    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.enqueue_on_commit("tenants.tasks.usage_counters_fold")
        raise RuntimeError("rolled back")
    assert ran == [1]


def test_a_broker_that_cannot_be_reached_is_logged_not_raised(monkeypatch, caplog):
    def unreachable(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(
        tasks._task("tenants.tasks.usage_counters_fold"), "apply_async", unreachable
    )
    with caplog.at_level(logging.WARNING, logger="common.tasks"):
        tasks.enqueue("tenants.tasks.usage_counters_fold")
    assert "Could not queue tenants.tasks.usage_counters_fold" in caplog.text


def test_an_unknown_task_name_is_an_error_at_once():
    with pytest.raises(ModuleNotFoundError):
        tasks._task("nowhere.tasks.nothing")


def test_a_schedule_declared_twice_is_refused(monkeypatch):
    from metering import schedules as metering_schedules

    monkeypatch.setitem(
        metering_schedules.SCHEDULES,
        "fold usage counters",
        ("tenants.tasks.usage_counters_fold", 60),
    )
    with pytest.raises(ValueError, match="declared twice"):
        schedules.schedules_collect()
