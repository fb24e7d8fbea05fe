"""Fixtures for the reporting tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def client(acme, api_client):
    """An API client of the acme operator, with every scope."""
    return api_client(acme.token)


@pytest.fixture
def catalogue(db) -> None:
    """The connector catalogue (see `platform_helpers.catalogue_seed`)."""
    from tests.reporting.platform_helpers import catalogue_seed

    catalogue_seed()


@pytest.fixture
def platform(api_client, platform_key, catalogue):
    """A client of the platform API."""
    return api_client(platform_key)
