"""Verifying a client secret is no CPU lever: once known, right and wrong secrets are
answered by one SHA-256; the slow password hash runs only where no quick check applies."""

from __future__ import annotations

import pytest
from django.contrib.auth import hashers
from oauth2_provider import oauth2_validators

from tenants.models import ApplicationAccess
from tenants.services import application_access_create, application_access_rotate_secret
from tests.conftest import AUDIENCE
from tests.factories import OperatorFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def slow_checks(monkeypatch, settings):
    """Counts the slow hash checks (the real ones still run)."""
    settings.TALLY["RATE_LIMITS"]["token"] = {"rate": 1000, "burst": 1000}
    calls = []
    real = hashers.check_password

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(oauth2_validators, "check_password", counting)
    return calls


def token_status(client, client_id: str, secret: str) -> int:
    response = client.post(
        "/oauth/token",
        {
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        },
        content_type="application/json",
    )
    return response.status_code


def test_a_new_application_is_checked_quickly_from_the_start(client, slow_checks):
    issued = application_access_create(operator=OperatorFactory(), name="quick")
    statuses = [
        token_status(client, issued.client_id, s) for s in (issued.client_secret, "x" * 64) * 3
    ]
    assert statuses == [200, 401] * 3
    assert slow_checks == []


def test_an_application_from_before_is_checked_slowly_once_then_quickly(client, slow_checks):
    issued = application_access_create(operator=OperatorFactory(), name="legacy")
    ApplicationAccess.objects.filter(pk=issued.access.pk).update(
        secret_sha256="", secret_hash_sha256=""
    )
    assert token_status(client, issued.client_id, "wrong") == 401
    assert token_status(client, issued.client_id, issued.client_secret) == 200
    assert len(slow_checks) == 2  # no quick check yet: both paid the slow hash
    access = ApplicationAccess.objects.get(pk=issued.access.pk)
    assert access.secret_sha256 and access.secret_hash_sha256
    assert issued.client_secret not in (access.secret_sha256, access.secret_hash_sha256)

    assert token_status(client, issued.client_id, "wrong") == 401
    assert token_status(client, issued.client_id, issued.client_secret) == 200
    assert len(slow_checks) == 2


def test_a_rotated_secret_replaces_the_old_one_at_once(client, slow_checks):
    issued = application_access_create(operator=OperatorFactory(), name="rotated")
    assert token_status(client, issued.client_id, issued.client_secret) == 200
    rotated = application_access_rotate_secret(access=issued.access)
    assert token_status(client, issued.client_id, issued.client_secret) == 401
    assert token_status(client, issued.client_id, rotated.client_secret) == 200
    assert slow_checks == []


def test_a_secret_changed_outside_tally_is_never_checked_against_the_old_quick_check(
    client, slow_checks
):
    issued = application_access_create(operator=OperatorFactory(), name="changed")
    new_secret = "changed-in-the-oauth-admin-" + "y" * 40
    application = issued.access.application
    application.client_secret = new_secret  # hashed by the toolkit on save
    application.save()

    assert token_status(client, issued.client_id, issued.client_secret) == 401
    assert token_status(client, issued.client_id, new_secret) == 200
    assert len(slow_checks) == 2  # the stale quick check was not trusted
    assert token_status(client, issued.client_id, new_secret) == 200
    assert len(slow_checks) == 2
