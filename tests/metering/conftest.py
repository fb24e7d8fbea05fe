"""Fixtures for the metering tests."""

from __future__ import annotations

import threading

import pytest

from tests.metering.webhooks import Receiver


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(acme, api_client):
    """An API client of the acme operator, with every scope."""
    return api_client(acme.token)
