"""Fixtures for the metering tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def client(acme, api_client):
    """An API client of the acme operator, with every scope."""
    return api_client(acme.token)
