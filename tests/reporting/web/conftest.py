"""Fixtures for the dashboards' tests: acme and globex with data of their own (see
scene.py), and browser clients signed in as their people."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.utils import timezone

from tests.reporting.web.scene import events_add, meters_fill, operator_scene


@pytest.fixture
def acme_scene(db):
    """Acme: 3 records now (1 failed), 2 three days ago, 1 ten days ago; meters at 900,
    500 and 1,200 of 1,000 calls (two alerts)."""
    scene = operator_scene("Acme")
    now = timezone.now()
    day = datetime.timedelta(days=1)
    events_add(scene, [now, now, now, now - 3 * day, now - 3 * day, now - 10 * day], failing=1)
    meters_fill(scene, [900, 500, 1200])
    return scene


@pytest.fixture
def globex_scene(db):
    """Globex: 7 records now (2 failed); one meter at 950 of 1,000 calls (one alert)."""
    scene = operator_scene("Globex")
    events_add(scene, [timezone.now()] * 7, failing=2)
    meters_fill(scene, [950])
    return scene


@pytest.fixture
def browser_as():
    """A browser client signed in as the given user (`browser_as(user)`)."""

    def sign_in(user, **options) -> Client:
        client = Client(**options)
        client.force_login(user)
        return client

    return sign_in
