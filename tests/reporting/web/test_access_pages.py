"""The dashboard's Access pages (`/dashboard/access/…`), as a browser reaches them:
applications (a secret shown once, rotated, revoked), parameters (sensitive values
never sent), the webhook (a signing secret shown once) and its delivery log with
resend. What the pages change is checked the way its users see it: with a token from
/oauth/token, through the API, or at a webhook receiver the test starts."""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import uuid

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from oauth2_provider.models import AccessToken, Application

from common.redis import redis_client
from metering.models import DeliveryAttempt, Notification, WebhookEndpoint
from metering.notifications import notification_deliver, webhook_endpoint_set
from parameters.models import MASK, Parameter
from parameters.services import parameter_create, parameter_value
from tenants.models import ApplicationAccess, OperatorMembership
from tenants.services import application_access_create, operator_set_status
from tests.conftest import AUDIENCE, SENSITIVE_SENTINEL, ApiClient, issue_token
from tests.reporting.web.scene import member, meters_fill, operator_scene

pytestmark = pytest.mark.django_db

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER
PARAMETERS_API = "/global-parameters/v1/parameters"
READ_PARAMETERS = "global-parameters:read:parameters"


# -- Scene ------------------------------------------------------------------------------


@pytest.fixture
def acme():
    return operator_scene("Acme")


@pytest.fixture
def globex():
    return operator_scene("Globex")


@pytest.fixture
def adam(acme, browser_as):
    """An admin of Acme, signed in."""
    return browser_as(member("adam", (acme.operator, ADMIN)))


@pytest.fixture
def vera(acme, browser_as):
    """A viewer of Acme, signed in."""
    return browser_as(member("vera", (acme.operator, VIEWER)))


def csrf_token(client: Client, path: str) -> str:
    page = client.get(path).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def text_of(page: str, element_id: str) -> str:
    """The text inside the element with this id (up to its closing tag), unescaped."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no element #{element_id}"
    return html.unescape(match.group(1)).strip()


def token_for(client_id: str, client_secret: str) -> Client:
    """The response of /oauth/token for these credentials."""
    return Client().post(
        "/oauth/token",
        {
            "client_id": client_id,
            "client_secret": client_secret,
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
        },
        content_type="application/json",
    )


def application_of(scene, name: str) -> ApplicationAccess:
    return ApplicationAccess.objects.select_related("application").get(
        operator=scene.operator, application__name=name
    )


def queries_for(client: Client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    return len(captured)


# -- Anonymous visitors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/access/",
        "/dashboard/access/applications/new/",
        "/dashboard/access/parameters/",
        "/dashboard/access/webhook/",
        f"/dashboard/access/webhook/deliveries/{uuid.uuid4()}/resend/",
    ],
)
def test_an_anonymous_visitor_is_sent_to_the_login_page(path):
    for method in (Client().get, Client().post):
        response = method(path)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={path}"


# -- Applications -----------------------------------------------------------------------


def test_an_admin_creates_an_application_and_reads_its_secret_once(acme, adam):
    form = adam.get("/dashboard/access/applications/new/").content.decode()
    assert "<title> New application · Acme · Tally</title>" in form
    assert 'value="global-parameters:read:parameters"' in form

    response = adam.post(
        "/dashboard/access/applications/new/",
        {"name": "Billing export", "scopes": [READ_PARAMETERS, "metrics:read"]},
    )

    access = application_of(acme, "Billing export")
    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/access/applications/{access.pk}/"
    shown = adam.get(response["Location"])
    assert "no-store" in shown["Cache-Control"]
    page = shown.content.decode()
    secret = text_of(page, "client-secret")
    assert text_of(page, "new-client-id") == access.client_id
    assert secret not in response["Location"]
    assert "Application “Billing export” created." in page
    assert secret in text_of(page, "token-example")  # a curl line to try it with

    # The secret works: a token carrying the scopes chosen, accepted by the API.
    token = issue_token(Client(), access.client_id, secret)
    assert set(token["scope"].split()) == {READ_PARAMETERS, "metrics:read"}
    assert ApiClient(token["access_token"]).get(PARAMETERS_API).status_code == 200
    assert ApiClient(token["access_token"]).get("/usage-metering/v1/meters").status_code == 403

    # Shown once: not after a reload, nor on the list.
    again = adam.get(response["Location"]).content.decode()
    assert secret not in again and 'id="client-secret"' not in again
    assert access.client_id in again
    listed = adam.get("/dashboard/access/").content.decode()
    assert secret not in listed
    row = listed.split(f'data-client-id="{access.client_id}"', 1)[1].split("</tr>", 1)[0]
    assert "Billing export" in row and "2 of " in row and "In use" in row


def test_creating_an_application_refuses_bad_input_with_a_message(acme, adam):
    before = ApplicationAccess.objects.count()

    nameless = adam.post("/dashboard/access/applications/new/", {"name": " ", "scopes": []})
    unknown = adam.post(
        "/dashboard/access/applications/new/", {"name": "X", "scopes": ["root:everything"]}
    )

    assert nameless.status_code == 200
    page = nameless.content.decode()
    assert "This field is required." in page
    assert "Choose at least one scope" in page
    assert unknown.status_code == 200
    assert "Select a valid choice. root:everything is not one of the available choices." in (
        html.unescape(unknown.content.decode())
    )
    assert ApplicationAccess.objects.count() == before


def test_rotating_a_secret_shows_the_new_one_once_and_the_old_one_stops_working(acme, adam):
    access = application_of(acme, "Acme app")
    old_token = acme.tenant.token
    rotate = f"/dashboard/access/applications/{access.pk}/rotate/"

    confirm = adam.get(rotate).content.decode()
    assert "Give “Acme app” a new client secret?" in html.unescape(confirm)
    response = adam.post(rotate)

    assert response["Location"] == f"/dashboard/access/applications/{access.pk}/"
    secret = text_of(adam.get(response["Location"]).content.decode(), "client-secret")
    assert secret != acme.tenant.client_secret
    assert token_for(access.client_id, acme.tenant.client_secret).status_code == 401
    assert ApiClient(old_token).get(PARAMETERS_API).status_code == 401
    assert token_for(access.client_id, secret).status_code == 200
    assert 'id="client-secret"' not in adam.get(response["Location"]).content.decode()


def test_revoking_an_application_ends_its_credentials_and_tokens(acme, adam):
    access = application_of(acme, "Acme app")
    revoke = f"/dashboard/access/applications/{access.pk}/revoke/"
    assert ApiClient(acme.tenant.token).get(PARAMETERS_API).status_code == 200

    confirm = html.unescape(adam.get(revoke).content.decode())
    assert f"Revoke “Acme app” ({access.client_id})?" in confirm
    response = adam.post(revoke)

    assert response["Location"] == "/dashboard/access/"
    listed = adam.get("/dashboard/access/").content.decode()
    assert "“Acme app” is revoked" in html.unescape(listed)
    assert access.client_id not in listed
    assert 'id="applications-empty"' in listed
    assert ApiClient(acme.tenant.token).get(PARAMETERS_API).status_code == 401
    assert token_for(access.client_id, acme.tenant.client_secret).status_code == 401
    assert not Application.objects.filter(client_id=access.client_id).exists()
    assert adam.get(f"/dashboard/access/applications/{access.pk}/").status_code == 404


def test_the_list_tells_idle_and_refused_applications_apart(acme, adam):
    application_access_create(operator=acme.operator, name="Never used", scopes=["metrics:read"])

    page = adam.get("/dashboard/access/").content.decode()
    used = page.split("Acme app", 1)[1].split("</tr>", 1)[0]
    unused = page.split("Never used", 1)[1].split("</tr>", 1)[0]
    assert "In use" in used
    assert "Idle" in unused and "never" in unused

    operator_set_status(operator=acme.operator, status="suspended")
    assert adam.get("/dashboard/access/").content.decode().count(">Refused</span>") == 2


def test_a_viewer_reads_the_applications_but_changes_nothing(acme, vera):
    access = application_of(acme, "Acme app")
    secret_hash = access.application.client_secret

    page = vera.get("/dashboard/access/").content.decode()
    assert access.client_id in page
    assert "New application" not in page
    assert (
        "Rotate the secret"
        not in vera.get(f"/dashboard/access/applications/{access.pk}/").content.decode()
    )
    for path, data in (
        ("/dashboard/access/applications/new/", {"name": "Mine", "scopes": ["metrics:read"]}),
        (f"/dashboard/access/applications/{access.pk}/rotate/", {}),
        (f"/dashboard/access/applications/{access.pk}/revoke/", {}),
    ):
        assert vera.get(path).status_code == 403, path
        response = vera.post(path, data)
        assert response.status_code == 403, path
        assert "read-only access to Acme" in response.content.decode()

    assert list(ApplicationAccess.objects.filter(operator=acme.operator)) == [access]
    assert Application.objects.get(pk=access.application_id).client_secret == secret_hash
    assert ApiClient(acme.tenant.token).get(PARAMETERS_API).status_code == 200


def test_another_operators_application_is_a_404(acme, globex, adam):
    theirs = application_of(globex, "Globex app")

    for suffix in ("", "rotate/", "revoke/"):
        path = f"/dashboard/access/applications/{theirs.pk}/{suffix}"
        assert adam.get(path).status_code == 404, path
        if suffix:
            assert adam.post(path).status_code == 404, path
    assert theirs.client_id not in adam.get("/dashboard/access/").content.decode()
    assert ApiClient(globex.tenant.token).get(PARAMETERS_API).status_code == 200
    assert token_for(theirs.client_id, globex.tenant.client_secret).status_code == 200


def test_the_application_list_costs_the_same_queries_however_long(acme, adam):
    for index in range(2):
        application_access_create(operator=acme.operator, name=f"App {index}", scopes=[])
    few = queries_for(adam, "/dashboard/access/")
    for index in range(2, 8):
        issued = application_access_create(
            operator=acme.operator, name=f"App {index}", scopes=["metrics:read"]
        )
        issue_token(Client(), issued.client_id, issued.client_secret)

    assert queries_for(adam, "/dashboard/access/") == few


# -- Parameters -------------------------------------------------------------------------


def test_an_admin_creates_parameters_the_api_then_reads(acme, adam):
    api = ApiClient(acme.tenant.token)

    standard = adam.post(
        "/dashboard/access/parameters/new/",
        {"name": "partners/crm/url", "type": "standard", "value": "https://crm.example/api"},
    )
    sensitive = adam.post(
        "/dashboard/access/parameters/new/",
        {
            "name": "partners/crm/key",
            "type": "sensitive",
            "value": f"key-{SENSITIVE_SENTINEL}",
            "description": "The CRM's API key",
        },
    )

    assert standard["Location"] == sensitive["Location"] == "/dashboard/access/parameters/"
    assert (
        api.get(f"{PARAMETERS_API}/partners/crm/url").json()["value"] == "https://crm.example/api"
    )
    read = api.get(f"{PARAMETERS_API}/partners/crm/key").json()
    assert (read["value"], read["type"], read["description"]) == (
        MASK,
        "sensitive",
        "The CRM's API key",
    )
    page = adam.get("/dashboard/access/parameters/").content.decode()
    assert "https://crm.example/api" in page and "partners/crm/key" in page
    assert SENSITIVE_SENTINEL not in page
    assert "Parameter “partners/crm/key” created." in html.unescape(page)


def test_parameters_are_validated_as_the_api_validates_them(acme, adam, generous_limits):
    parameter_create(operator=acme.operator, name="taken", type="standard", value="1")
    cases = [
        ({"name": "has space", "type": "standard", "value": "x"}, "May contain only letters"),
        ({"name": "a/" * 10 + "b", "type": "standard", "value": "x"}, "levels deep; at most 10"),
        ({"name": "ok", "type": "secret", "value": "x"}, "Select a valid choice"),
        ({"name": "ok", "type": "standard", "value": ""}, "This field may not be blank."),
        ({"name": "ok", "type": "standard", "value": "x" * 8193}, "Must be 1 to 8192"),
        (
            {"name": "taken", "type": "standard", "value": "2"},
            "A parameter named 'taken' already exists.",
        ),
    ]
    for data, message in cases:
        response = adam.post("/dashboard/access/parameters/new/", data)
        assert response.status_code == 200, data
        assert message in html.unescape(response.content.decode()), data
        # The API says the same of the same body.
        answer = ApiClient(acme.tenant.token).post(PARAMETERS_API, data)
        assert answer.status_code in (400, 409), data
    assert list(
        Parameter.objects.filter(operator=acme.operator).values_list("name", flat=True)
    ) == ["taken"]


def test_a_refused_sensitive_value_is_not_sent_back_to_the_browser(acme, adam):
    response = adam.post(
        "/dashboard/access/parameters/new/",
        {"name": "bad name", "type": "sensitive", "value": f"v-{SENSITIVE_SENTINEL}"},
    )

    assert response.status_code == 200
    assert SENSITIVE_SENTINEL not in response.content.decode()


def test_an_admin_changes_and_deletes_parameters(acme, adam):
    api = ApiClient(acme.tenant.token)
    url = parameter_create(operator=acme.operator, name="crm/url", type="standard", value="a")
    key = parameter_create(
        operator=acme.operator, name="crm/key", type="sensitive", value=f"k1-{SENSITIVE_SENTINEL}"
    )

    form = adam.get(f"/dashboard/access/parameters/{key.pk}/").content.decode()
    assert SENSITIVE_SENTINEL not in form and "Leave empty to keep" in form
    # Empty keeps a sensitive value; the description still changes.
    adam.post(f"/dashboard/access/parameters/{key.pk}/", {"value": "", "description": "CRM key"})
    key.refresh_from_db()
    assert parameter_value(key) == f"k1-{SENSITIVE_SENTINEL}"
    assert api.get(f"{PARAMETERS_API}/crm/key").json()["description"] == "CRM key"
    adam.post(f"/dashboard/access/parameters/{key.pk}/", {"value": "k2", "description": ""})
    key.refresh_from_db()
    assert parameter_value(key) == "k2"

    assert 'value="a"' not in form
    assert ">a</textarea>" in adam.get(f"/dashboard/access/parameters/{url.pk}/").content.decode()
    refused = adam.post(f"/dashboard/access/parameters/{url.pk}/", {"value": "", "description": ""})
    assert "This field may not be blank." in refused.content.decode()
    response = adam.post(
        f"/dashboard/access/parameters/{url.pk}/", {"value": "b", "description": ""}
    )
    assert response["Location"] == "/dashboard/access/parameters/"
    assert api.get(f"{PARAMETERS_API}/crm/url").json()["value"] == "b"

    assert "Delete the parameter “crm/url”?" in html.unescape(
        adam.get(f"/dashboard/access/parameters/{url.pk}/delete/").content.decode()
    )
    adam.post(f"/dashboard/access/parameters/{url.pk}/delete/")
    assert api.get(f"{PARAMETERS_API}/crm/url").status_code == 404
    assert api.get(f"{PARAMETERS_API}/crm/key").status_code == 200


def test_a_viewer_reads_parameters_without_sensitive_values_and_changes_nothing(acme, vera):
    url = parameter_create(operator=acme.operator, name="crm/url", type="standard", value="a")
    key = parameter_create(
        operator=acme.operator, name="crm/key", type="sensitive", value=SENSITIVE_SENTINEL
    )

    page = vera.get("/dashboard/access/parameters/").content.decode()
    assert "crm/url" in page and "crm/key" in page and MASK in page
    assert SENSITIVE_SENTINEL not in page and "New parameter" not in page
    for path, data in (
        ("/dashboard/access/parameters/new/", {"name": "n", "type": "standard", "value": "v"}),
        (f"/dashboard/access/parameters/{url.pk}/", {"value": "changed", "description": ""}),
        (f"/dashboard/access/parameters/{key.pk}/delete/", {}),
    ):
        assert vera.get(path).status_code == 403, path
        assert vera.post(path, data).status_code == 403, path
    url.refresh_from_db()
    assert url.plain_value == "a"
    assert Parameter.objects.filter(operator=acme.operator).count() == 2


def test_another_operators_parameter_is_a_404(acme, globex, adam):
    theirs = parameter_create(operator=globex.operator, name="crm/url", type="standard", value="g")

    for path in (
        f"/dashboard/access/parameters/{theirs.pk}/",
        f"/dashboard/access/parameters/{theirs.pk}/delete/",
    ):
        assert adam.get(path).status_code == 404
        assert adam.post(path, {"value": "mine", "description": ""}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.plain_value == "g"
    assert "crm/url" not in adam.get("/dashboard/access/parameters/").content.decode()


def test_the_parameter_list_costs_the_same_queries_however_long(acme, adam):
    parameter_create(operator=acme.operator, name="p0", type="standard", value="v")
    few = queries_for(adam, "/dashboard/access/parameters/")
    for index in range(1, 8):
        kind = "sensitive" if index % 2 else "standard"
        parameter_create(operator=acme.operator, name=f"p{index}", type=kind, value="v")

    assert queries_for(adam, "/dashboard/access/parameters/") == few


# -- Webhook and deliveries -------------------------------------------------------------


def signature_valid(secret: str, headers: dict, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in headers["Tally-Signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(fields["v1"], expected.hexdigest())


def test_an_admin_sets_the_webhook_and_reads_its_signing_secret_once(acme, adam, receiver):
    empty = adam.get("/dashboard/access/webhook/").content.decode()
    assert "<title> Webhook · Acme · Tally</title>" in empty
    assert 'id="deliveries-empty"' in empty

    response = adam.post("/dashboard/access/webhook/", {"url": receiver.url, "enabled": "on"})

    assert response["Location"] == "/dashboard/access/webhook/"
    page = adam.get("/dashboard/access/webhook/").content.decode()
    secret = text_of(page, "signing-secret")
    assert secret.startswith("whsec_")
    again = adam.get("/dashboard/access/webhook/").content.decode()
    assert secret not in again and 'id="signing-secret-masked"' in again
    assert f'value="{receiver.url}"' in again

    # Deliveries are signed with the secret shown.
    meters_fill(acme, [900])
    notification = Notification.objects.get(operator=acme.operator)
    assert notification_deliver(notification.pk) == Notification.Status.DELIVERED
    ((headers, body),) = receiver.requests
    assert signature_valid(secret, headers, body)

    # Saving again keeps the secret, and does not show it.
    adam.post("/dashboard/access/webhook/", {"url": receiver.url})
    endpoint = WebhookEndpoint.objects.get(operator=acme.operator)
    assert endpoint.signing_secret == secret and not endpoint.enabled
    later = adam.get("/dashboard/access/webhook/").content.decode()
    assert secret not in later and 'id="webhook-disabled"' in later


def test_a_new_signing_secret_is_shown_once_and_signs_what_follows(acme, adam, receiver):
    old = webhook_endpoint_set(operator=acme.operator, url=receiver.url).signing_secret

    assert (
        "Make a new signing secret"
        in adam.get("/dashboard/access/webhook/rotate/").content.decode()
    )
    response = adam.post("/dashboard/access/webhook/rotate/")

    assert response["Location"] == "/dashboard/access/webhook/"
    secret = text_of(adam.get("/dashboard/access/webhook/").content.decode(), "signing-secret")
    assert secret != old
    assert secret not in adam.get("/dashboard/access/webhook/").content.decode()
    meters_fill(acme, [900])
    notification_deliver(Notification.objects.get(operator=acme.operator).pk)
    ((headers, body),) = receiver.requests
    assert signature_valid(secret, headers, body) and not signature_valid(old, headers, body)


def test_the_webhook_form_refuses_bad_urls_with_a_message(acme, adam):
    for url, message in (
        ("not a url", "Enter a valid URL."),
        ("ftp://files.example/hook", "Enter a valid URL."),
        ("", "This field is required."),
        ("https://example.com/" + "a" * 2000, "at most 2000 characters"),
    ):
        response = adam.post("/dashboard/access/webhook/", {"url": url, "enabled": "on"})
        assert response.status_code == 200, url
        assert message in response.content.decode(), url
    assert not WebhookEndpoint.objects.filter(operator=acme.operator).exists()


def test_the_delivery_log_shows_each_notification_with_its_last_attempt(
    acme, globex, adam, receiver, settings
):
    settings.TALLY["NOTIFICATION_RETRY_BASE_SECONDS"] = 0
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    meters_fill(acme, [900, 950])
    meters_fill(globex, [990])
    first = Notification.objects.get(operator=acme.operator, payload__userId=acme.customer(0))
    second = Notification.objects.get(operator=acme.operator, payload__userId=acme.customer(1))
    receiver.statuses = [500]
    notification_deliver(first.pk)  # HTTP 500: retried later
    notification_deliver(second.pk)  # delivered

    page = adam.get("/dashboard/access/webhook/").content.decode()
    log = page.split('id="delivery-list"', 1)[1].split("</table>", 1)[0]
    failing = log.split(f'data-delivery="{first.pk}"', 1)[1].split("</tr>", 1)[0]
    delivered = log.split(f'data-delivery="{second.pk}"', 1)[1].split("</tr>", 1)[0]
    assert "Pending" in failing and "HTTP 500" in failing and "1 attempt" in failing
    assert "Delivered" in delivered and "HTTP 200" in delivered
    assert f"{acme.customer(0)} · API calls" in failing
    assert "Threshold Crossed" in log
    assert globex.customer(0) not in page

    only_delivered = adam.get("/dashboard/access/webhook/?status=delivered").content.decode()
    assert str(second.pk) in only_delivered and str(first.pk) not in only_delivered
    wrong = adam.get("/dashboard/access/webhook/?status=lost")
    assert wrong.status_code == 200
    assert "There is no delivery status “lost”" in html.unescape(wrong.content.decode())

    detail = adam.get(f"/dashboard/access/webhook/deliveries/{first.pk}/").content.decode()
    attempts = detail.split('id="attempt-list"', 1)[1].split("</table>", 1)[0]
    assert "500" in attempts and "HTTP 500" in attempts
    payload = html.unescape(text_of(detail, "delivery-payload"))
    assert f'"userId": "{acme.customer(0)}"' in payload
    assert '"meterValue": 900,' in payload  # stored as 900.0000000000


def test_an_admin_resends_a_notification(acme, adam, receiver):
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    meters_fill(acme, [900])
    notification = Notification.objects.get(operator=acme.operator)
    notification_deliver(notification.pk)
    notification.refresh_from_db()
    assert notification.status == Notification.Status.DELIVERED

    response = adam.post(f"/dashboard/access/webhook/deliveries/{notification.pk}/resend/")

    assert response["Location"] == "/dashboard/access/webhook/"
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("pending", 0)
    page = adam.get(response["Location"]).content.decode()
    assert "Queued again" in page
    assert notification_deliver(notification.pk) == Notification.Status.DELIVERED
    assert len(receiver.requests) == 2
    # From the notification's own page, back to it.
    response = adam.post(
        f"/dashboard/access/webhook/deliveries/{notification.pk}/resend/", {"back": "delivery"}
    )
    assert response["Location"] == f"/dashboard/access/webhook/deliveries/{notification.pk}/"


def test_resending_while_the_webhook_is_disabled_says_it_will_be_skipped(acme, adam):
    webhook_endpoint_set(operator=acme.operator, url="https://hooks.example/t", enabled=False)
    meters_fill(acme, [900])
    notification = Notification.objects.get(operator=acme.operator)

    response = adam.post(
        f"/dashboard/access/webhook/deliveries/{notification.pk}/resend/", follow=True
    )

    assert "the webhook is not enabled: it will be marked skipped" in response.content.decode()


def test_a_viewer_reads_the_webhook_but_changes_nothing(acme, vera):
    endpoint = webhook_endpoint_set(operator=acme.operator, url="https://hooks.example/t")
    meters_fill(acme, [900])
    notification = Notification.objects.get(operator=acme.operator)
    Notification.objects.filter(pk=notification.pk).update(status="failed", attempts=8)

    page = vera.get("/dashboard/access/webhook/").content.decode()
    assert text_of(page, "webhook-url") == "https://hooks.example/t"
    assert endpoint.signing_secret not in page
    assert 'id="webhook-form"' not in page and ">Resend<" not in page
    assert vera.get(f"/dashboard/access/webhook/deliveries/{notification.pk}/").status_code == 200
    assert vera.get("/dashboard/access/webhook/rotate/").status_code == 403
    for path, data in (
        ("/dashboard/access/webhook/", {"url": "https://evil.example/", "enabled": "on"}),
        ("/dashboard/access/webhook/rotate/", {}),
        (f"/dashboard/access/webhook/deliveries/{notification.pk}/resend/", {}),
    ):
        assert vera.post(path, data).status_code == 403, path

    after = WebhookEndpoint.objects.get(operator=acme.operator)
    assert (after.url, after.signing_secret) == (endpoint.url, endpoint.signing_secret)
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("failed", 8)


def test_another_operators_delivery_is_a_404(acme, globex, adam):
    meters_fill(globex, [990])
    theirs = Notification.objects.get(operator=globex.operator)
    Notification.objects.filter(pk=theirs.pk).update(status="failed")

    assert adam.get(f"/dashboard/access/webhook/deliveries/{theirs.pk}/").status_code == 404
    assert adam.post(f"/dashboard/access/webhook/deliveries/{theirs.pk}/resend/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "failed"
    # The webhook page shows no other operator's endpoint: there is none of Acme's yet.
    webhook_endpoint_set(operator=globex.operator, url="https://globex.example/hook")
    assert "globex.example" not in adam.get("/dashboard/access/webhook/").content.decode()
    assert adam.get("/dashboard/access/webhook/rotate/").status_code == 404


def test_the_delivery_log_costs_the_same_queries_however_long(acme, adam, receiver, settings):
    settings.TALLY["NOTIFICATION_RETRY_BASE_SECONDS"] = 0
    webhook_endpoint_set(operator=acme.operator, url=receiver.url)
    meters_fill(acme, [900])
    first = Notification.objects.get(operator=acme.operator)
    receiver.statuses = [503]
    notification_deliver(first.pk)
    log_queries = queries_for(adam, "/dashboard/access/webhook/")
    detail = f"/dashboard/access/webhook/deliveries/{first.pk}/"
    detail_queries = queries_for(adam, detail)

    receiver.statuses = [503, 503]
    notification_deliver(first.pk)
    notification_deliver(first.pk)
    meters_fill(acme, [910, 920, 930, 940])
    for notification in Notification.objects.filter(operator=acme.operator).exclude(pk=first.pk):
        notification_deliver(notification.pk)

    assert DeliveryAttempt.objects.filter(notification=first).count() == 3
    assert queries_for(adam, "/dashboard/access/webhook/") == log_queries
    assert queries_for(adam, detail) == detail_queries


# -- CSRF -------------------------------------------------------------------------------


def test_every_access_form_refuses_a_post_without_its_csrf_token(acme, browser_as):
    browser = browser_as(member("adam", (acme.operator, ADMIN)), enforce_csrf_checks=True)
    access = application_of(acme, "Acme app")
    parameter = parameter_create(operator=acme.operator, name="p", type="standard", value="v")
    webhook_endpoint_set(operator=acme.operator, url="https://hooks.example/t")
    meters_fill(acme, [900])
    notification = Notification.objects.get(operator=acme.operator)
    writes = [
        ("/dashboard/access/applications/new/", {"name": "Sneaky", "scopes": ["metrics:read"]}),
        (f"/dashboard/access/applications/{access.pk}/rotate/", {}),
        (f"/dashboard/access/applications/{access.pk}/revoke/", {}),
        ("/dashboard/access/parameters/new/", {"name": "n", "type": "standard", "value": "v"}),
        (f"/dashboard/access/parameters/{parameter.pk}/", {"value": "changed"}),
        (f"/dashboard/access/parameters/{parameter.pk}/delete/", {}),
        ("/dashboard/access/webhook/", {"url": "https://evil.example/", "enabled": "on"}),
        ("/dashboard/access/webhook/rotate/", {}),
        (f"/dashboard/access/webhook/deliveries/{notification.pk}/resend/", {}),
    ]
    secret = WebhookEndpoint.objects.get(operator=acme.operator).signing_secret

    for path, data in writes:
        assert browser.post(path, data).status_code == 403, path

    assert ApplicationAccess.objects.filter(operator=acme.operator).count() == 1
    assert AccessToken.objects.filter(application=access.application).exists()
    assert Parameter.objects.get(pk=parameter.pk).plain_value == "v"
    endpoint = WebhookEndpoint.objects.get(operator=acme.operator)
    assert (endpoint.url, endpoint.signing_secret) == ("https://hooks.example/t", secret)
    # With the token the form carries, the same post goes through.
    token = csrf_token(browser, f"/dashboard/access/parameters/{parameter.pk}/")
    response = browser.post(
        f"/dashboard/access/parameters/{parameter.pk}/",
        {"value": "changed", "description": "", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert Parameter.objects.get(pk=parameter.pk).plain_value == "changed"


def test_each_access_page_has_a_title_and_its_tab(acme, adam):
    access = application_of(acme, "Acme app")
    for path, title, tab in (
        ("/dashboard/access/", "Applications", "Applications"),
        (f"/dashboard/access/applications/{access.pk}/", "Acme app", "Applications"),
        ("/dashboard/access/parameters/", "Parameters", "Parameters"),
        ("/dashboard/access/parameters/new/", "New parameter", "Parameters"),
        ("/dashboard/access/webhook/", "Webhook", "Webhook"),
    ):
        page = adam.get(path).content.decode()
        assert f"<title> {title} · Acme · Tally</title>" in page, path
        tabs = page.split('id="access-tabs"', 1)[1].split("</nav>", 1)[0]
        assert re.search(rf'aria-current="page">{tab}</a>', tabs), path
        navigation = page.split('id="nav-entries"', 1)[1].split("</ol>", 1)[0]
        assert 'aria-current="page"' in navigation.split("Access", 1)[0].rsplit("<a", 1)[1]


def test_a_new_secret_never_sits_in_the_session_table(acme, adam):
    """It waits in the cache, for minutes at most, and leaves it when shown."""
    response = adam.post(
        "/dashboard/access/applications/new/",
        {"name": "Billing export", "scopes": [READ_PARAMETERS]},
    )
    assert response.status_code == 302
    stored = " ".join(str(session.get_decoded()) for session in Session.objects.all())
    waiting = list(redis_client().scan_iter(match="*dashboard-access-one-time-secret*"))
    assert len(waiting) == 1

    secret = text_of(adam.get(response["Location"]).content.decode(), "client-secret")
    assert secret and secret not in stored
    assert list(redis_client().scan_iter(match="*dashboard-access-one-time-secret*")) == []
