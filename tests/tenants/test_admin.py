"""The tenants admin: every page answers, secrets are shown exactly once, actions work."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.test import Client

from tenants.models import ApplicationAccess, Operator, PlatformApiKey, PlatformSettings
from tenants.scopes import ALL_SCOPES
from tenants.services import application_access_create, operator_create
from tests.conftest import AUDIENCE, assert_error_body, issue_token

pytestmark = pytest.mark.django_db

SECRET = re.compile(
    r"<code class='tally-secret' data-name='(?P<name>[^']+)'>(?P<value>[^<]+)</code>"
)


def shown_secrets(response) -> dict[str, str]:
    return {match["name"]: match["value"] for match in SECRET.finditer(response.content.decode())}


@pytest.fixture
def client(client, staff_user) -> Client:
    client.force_login(staff_user)
    return client


@pytest.mark.parametrize(
    "model", ["operator", "operatormembership", "applicationaccess", "platformapikey"]
)
def test_changelist_and_add_pages_answer(client, acme, model):
    assert client.get(f"/admin/tenants/{model}/").status_code == 200
    assert client.get(f"/admin/tenants/{model}/add/").status_code == 200


def test_change_pages_answer(client, acme, platform_key, operator_user):
    access = ApplicationAccess.objects.get(operator=acme.operator)
    key = PlatformApiKey.objects.get()
    membership = acme.operator.memberships.get()
    for model, pk in [
        ("operator", acme.operator.pk),
        ("applicationaccess", access.pk),
        ("platformapikey", key.pk),
        ("operatormembership", membership.pk),
    ]:
        response = client.get(f"/admin/tenants/{model}/{pk}/change/")
        assert response.status_code == 200, model
    # The client secret is never on the change page once created.
    assert shown_secrets(client.get(f"/admin/tenants/applicationaccess/{access.pk}/change/")) == {}


def test_platform_settings_changelist_redirects_to_its_one_row(client):
    response = client.get("/admin/tenants/platformsettings/")

    row = PlatformSettings.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/tenants/platformsettings/{row.pk}/change/"
    assert client.get(response["Location"]).status_code == 200


def test_the_admin_index_lists_the_tenants_models(client):
    response = client.get("/admin/")
    assert response.status_code == 200
    for path in ("operator", "applicationaccess", "platformapikey", "platformsettings"):
        assert f"/admin/tenants/{path}/" in response.content.decode()


def test_adding_an_application_shows_its_secret_exactly_once(client, globex):
    scopes = ["usage-metering:read:meters", "metrics:read"]

    response = client.post(
        "/admin/tenants/applicationaccess/add/",
        {"operator": str(globex.operator.pk), "name": "reporting", "scopes": scopes},
        follow=True,
    )

    assert response.status_code == 200
    access = ApplicationAccess.objects.get(application__name="reporting")
    assert access.operator == globex.operator
    assert access.scopes == scopes
    assert response.redirect_chain[-1][0] == f"/admin/tenants/applicationaccess/{access.pk}/change/"
    shown = shown_secrets(response)
    assert set(shown) == {"Client ID", "Client secret"}
    assert shown["Client ID"] == access.application.client_id
    secret = shown["Client secret"]

    reloaded = client.get(f"/admin/tenants/applicationaccess/{access.pk}/change/")
    assert reloaded.status_code == 200
    assert shown_secrets(reloaded) == {}
    assert secret not in reloaded.content.decode()

    access.application.refresh_from_db()
    assert access.application.client_secret != secret
    assert secret not in access.application.client_secret

    token = issue_token(Client(), shown["Client ID"], secret)
    assert token["scope"].split() == scopes


def test_adding_an_application_with_an_unknown_scope_is_a_form_error(client, acme):
    before = ApplicationAccess.objects.count()

    response = client.post(
        "/admin/tenants/applicationaccess/add/",
        {"operator": str(acme.operator.pk), "name": "x", "scopes": ["no:such:scope"]},
    )

    assert response.status_code == 200
    assert ApplicationAccess.objects.count() == before
    assert shown_secrets(response) == {}


def test_narrowing_an_applications_scopes_revokes_its_tokens(client, acme):
    access = ApplicationAccess.objects.get(operator=acme.operator)

    response = client.post(
        f"/admin/tenants/applicationaccess/{access.pk}/change/",
        {"name": "Acme app", "scopes": ["metrics:read"]},
    )

    assert response.status_code == 302, response.content
    access.refresh_from_db()
    assert access.scopes == ["metrics:read"]
    assert not access.application.accesstoken_set.exists()


def test_rotating_a_secret_shows_the_new_one_once(client, acme):
    access = ApplicationAccess.objects.get(operator=acme.operator)

    response = client.post(
        "/admin/tenants/applicationaccess/",
        {"action": "rotate_secret", "_selected_action": [str(access.pk)]},
        follow=True,
    )

    secret = shown_secrets(response)["Client secret"]
    assert secret != acme.client_secret
    assert issue_token(Client(), acme.client_id, secret)["access_token"]
    old = Client().post(
        "/oauth/token",
        {
            "client_id": acme.client_id,
            "client_secret": acme.client_secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        },
        content_type="application/json",
    )
    assert old.status_code == 401
    assert shown_secrets(client.get("/admin/tenants/applicationaccess/")) == {}


def test_adding_a_platform_key_shows_it_once_and_stores_only_its_digest(
    client, api_client, staff_user
):
    response = client.post("/admin/tenants/platformapikey/add/", {"name": "Deploys"}, follow=True)

    assert response.status_code == 200
    key = PlatformApiKey.objects.get()
    assert response.redirect_chain[-1][0] == f"/admin/tenants/platformapikey/{key.pk}/change/"
    raw_key = shown_secrets(response)["Key"]
    assert raw_key.startswith("tly_platform_")
    assert key.name == "Deploys"
    assert key.created_by == staff_user
    assert key.key_digest == hashlib.sha256(raw_key.encode()).hexdigest()
    assert raw_key.startswith(key.display_prefix)

    reloaded = client.get(f"/admin/tenants/platformapikey/{key.pk}/change/")
    assert shown_secrets(reloaded) == {}
    assert raw_key not in reloaded.content.decode()

    assert api_client(raw_key).get("/platform-api/settings").status_code == 200


def test_revoking_a_platform_key_in_the_admin_refuses_it(client, api_client, platform_key):
    key = PlatformApiKey.objects.get()

    client.post(
        "/admin/tenants/platformapikey/",
        {"action": "revoke", "_selected_action": [str(key.pk)]},
    )

    key.refresh_from_db()
    assert key.is_revoked
    assert_error_body(api_client(platform_key).get("/platform-api/settings"), 401)


def test_suspending_an_operator_refuses_its_token_requests(client, acme, globex):
    response = client.post(
        "/admin/tenants/operator/",
        {"action": "suspend", "_selected_action": [str(acme.operator.pk)]},
    )

    assert response.status_code == 302
    acme.operator.refresh_from_db()
    globex.operator.refresh_from_db()
    assert acme.operator.status == Operator.Status.SUSPENDED
    assert globex.operator.is_active

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
    body = assert_error_body(refused, 401)
    assert body["error"] == "invalid_client"
    assert issue_token(Client(), globex.client_id, globex.client_secret)["access_token"]


@pytest.mark.urls("tests.api.urls")
def test_a_suspended_operators_existing_tokens_get_403(client, api_client, acme):
    client.post(
        "/admin/tenants/operator/",
        {"action": "suspend", "_selected_action": [str(acme.operator.pk)]},
    )

    assert_error_body(api_client(acme.token).get("/test/applications"), 403)


def test_reactivating_an_operator_lets_it_get_tokens_again(client, acme):
    for action in ("suspend", "reactivate"):
        client.post(
            "/admin/tenants/operator/",
            {"action": action, "_selected_action": [str(acme.operator.pk)]},
        )

    acme.operator.refresh_from_db()
    assert acme.operator.is_active
    assert issue_token(Client(), acme.client_id, acme.client_secret)["access_token"]


def test_the_operator_list_counts_applications(client, acme):
    application_access_create(operator=acme.operator, name="second", scopes=ALL_SCOPES)
    operator_create(name="Empty Corp")

    response = client.get("/admin/tenants/operator/")

    assert response.status_code == 200
    rows = {
        operator.name: operator._application_count
        for operator in response.context["cl"].result_list
    }
    assert rows == {"Acme": 2, "Empty Corp": 0}


@pytest.mark.parametrize(
    "path", ["/admin/", "/admin/tenants/operator/", "/admin/tenants/applicationaccess/add/"]
)
def test_a_non_staff_user_is_sent_to_the_admin_login(django_user_model, path):
    user = django_user_model.objects.create_user(username="eve", password="eve-password-123")
    browser = Client()
    browser.force_login(user)

    response = browser.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert "tally-secret" not in response.content.decode()


def test_an_anonymous_visitor_is_sent_to_the_admin_login(db):
    response = Client().get("/admin/tenants/platformapikey/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_operators_are_created_renamed_and_suspended_through_the_services(client):
    response = client.post("/admin/tenants/operator/add/", _operator_form(name="  Initech "))
    assert response.status_code == 302, response.content.decode()[:2000]
    operator = Operator.objects.get(name="Initech")  # the service trims the name
    url = f"/admin/tenants/operator/{operator.pk}/change/"
    response = client.post(url, _operator_form(name="Initrode", status="suspended"))
    assert response.status_code == 302, response.content.decode()[:2000]
    operator.refresh_from_db()
    assert (operator.name, operator.status) == ("Initrode", Operator.Status.SUSPENDED)


def test_staff_set_an_operators_base_currency(client, acme):
    url = f"/admin/tenants/operator/{acme.operator.pk}/change/"
    refused = client.post(url, _operator_form(name="Acme", base_currency="E1R"))
    assert refused.status_code == 200
    assert "ISO 4217" in refused.content.decode()
    response = client.post(url, _operator_form(name="Acme", base_currency=" eur "))
    assert response.status_code == 302, response.content.decode()[:2000]
    acme.operator.refresh_from_db()
    assert acme.operator.base_currency == "EUR"


def test_renaming_an_application_keeps_its_credentials(client, acme):
    access = ApplicationAccess.objects.get(operator=acme.operator)
    client_id = access.application.client_id
    url = f"/admin/tenants/applicationaccess/{access.pk}/change/"
    response = client.post(
        url, {"operator": acme.operator.pk, "name": "Renamed", "scopes": access.scopes}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    access.refresh_from_db()
    assert (access.application.name, access.application.client_id) == ("Renamed", client_id)


def _operator_form(**fields) -> dict:
    return {
        "name": "x",
        "status": "active",
        "base_currency": "USD",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "application_accesses-TOTAL_FORMS": "0",
        "application_accesses-INITIAL_FORMS": "0",
        **fields,
    }
