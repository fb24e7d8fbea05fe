"""Revoking an application (`application_access_revoke`): its credentials and tokens end,
and nothing else of its operator's does."""

from __future__ import annotations

import pytest
from django.test import Client
from oauth2_provider.models import AccessToken, Application

from tenants.models import ApplicationAccess
from tenants.services import application_access_create, application_access_revoke
from tests.conftest import AUDIENCE, ApiClient, issue_token

pytestmark = pytest.mark.django_db


def test_a_revoked_application_gets_no_token_and_its_tokens_are_refused(acme):
    other = application_access_create(operator=acme.operator, name="Other", scopes=None)
    other_token = issue_token(Client(), other.client_id, other.client_secret)["access_token"]
    access = ApplicationAccess.objects.get(application__client_id=acme.client_id)

    application_access_revoke(access=access)
    application_access_revoke(access=access)  # a second time changes nothing

    refused = Client().post(
        "/oauth/token",
        {
            "client_id": acme.client_id,
            "client_secret": acme.client_secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        },
        content_type="application/json",
    )
    assert refused.status_code == 401
    assert ApiClient(acme.token).get("/global-parameters/v1/parameters").status_code == 401
    assert not Application.objects.filter(client_id=acme.client_id).exists()
    assert not ApplicationAccess.objects.filter(pk=access.pk).exists()
    assert not AccessToken.objects.filter(application_id=access.application_id).exists()
    # The operator's other application still works.
    assert ApiClient(other_token).get("/global-parameters/v1/parameters").status_code == 200
