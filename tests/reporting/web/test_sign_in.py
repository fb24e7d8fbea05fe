"""Logging in and out, changing and resetting a password, and CSRF on every form, as a
browser does it."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from tenants.models import OperatorMembership
from tests.reporting.web.scene import PASSWORD, member

ADMIN = OperatorMembership.Role.ADMIN
VIEWER = OperatorMembership.Role.VIEWER


def csrf_token(client: Client, path: str) -> str:
    page = client.get(path).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def log_in(client: Client, username: str, password: str = PASSWORD, next_page: str = ""):
    token = csrf_token(client, "/login/")
    data = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    if next_page:
        data["next"] = next_page
    return client.post("/login/", data)


@pytest.mark.django_db
def test_an_operator_user_logs_in_to_their_dashboard_and_out(acme_scene):
    member("bob", (acme_scene.operator, VIEWER))
    browser = Client(enforce_csrf_checks=True)

    page = browser.get("/login/")
    assert page.status_code == 200
    assert "<title> Log in · Tally</title>" in page.content.decode()

    response = log_in(browser, "bob")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert "Acme" in browser.get("/dashboard/").content.decode()
    # Signed in, the login page and the site's root lead to the dashboard.
    assert browser.get("/login/")["Location"] == "/dashboard/"
    assert browser.get("/")["Location"] == "/dashboard/"

    token = csrf_token(browser, "/dashboard/")
    response = browser.post("/logout/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert "You are logged out." in browser.get("/login/").content.decode()
    assert browser.get("/dashboard/")["Location"] == "/login/?next=/dashboard/"
    assert browser.get("/")["Location"] == "/login/"


@pytest.mark.django_db
def test_a_wrong_password_is_refused_with_a_message(acme_scene):
    member("bob", (acme_scene.operator, ADMIN))
    browser = Client()

    response = log_in(browser, "bob", "not-the-password")

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert browser.get("/dashboard/").status_code == 302


@pytest.mark.django_db
def test_login_goes_to_the_page_asked_for_but_never_off_site(acme_scene):
    member("bob", (acme_scene.operator, ADMIN))

    kept = log_in(Client(), "bob", next_page="/dashboard/?from=mail")
    assert kept["Location"] == "/dashboard/?from=mail"

    elsewhere = log_in(Client(), "bob", next_page="https://evil.example/")
    assert elsewhere["Location"] == "/dashboard/"


@pytest.mark.django_db
def test_staff_without_a_membership_land_on_the_platform_dashboard(acme_scene):
    member("alice", staff=True)
    member("carl", (acme_scene.operator, ADMIN), staff=True)

    assert log_in(Client(), "alice")["Location"] == "/platform/"
    assert log_in(Client(), "carl")["Location"] == "/dashboard/"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/login/", {"username": "bob", "password": PASSWORD}),
        ("/logout/", {}),
        ("/dashboard/operator/", {"operator": "globex"}),
        (
            "/account/password/",
            {"old_password": PASSWORD, "new_password1": "x", "new_password2": "x"},
        ),
        ("/account/password/reset/", {"email": "bob@people.example"}),
    ],
)
def test_every_form_needs_its_csrf_token(acme_scene, globex_scene, path, data):
    user = member("bob", (acme_scene.operator, VIEWER), (globex_scene.operator, VIEWER))
    browser = Client(enforce_csrf_checks=True)
    if path != "/login/":
        browser.force_login(user)
    data = {**data, "operator": str(globex_scene.operator.pk)} if "operator" in data else data

    refused = browser.post(path, data)

    assert refused.status_code == 403
    assert "CSRF" in refused.content.decode()
    assert not mail.outbox
    # The same form with the page's token goes through.
    form_page = "/dashboard/" if path in ("/logout/", "/dashboard/operator/") else path
    accepted = browser.post(path, {**data, "csrfmiddlewaretoken": csrf_token(browser, form_page)})
    assert accepted.status_code in (200, 302)


@pytest.mark.django_db
def test_a_user_changes_their_password(acme_scene):
    member("bob", (acme_scene.operator, ADMIN))
    browser = Client(enforce_csrf_checks=True)
    log_in(browser, "bob")
    token = csrf_token(browser, "/account/password/")

    wrong = browser.post(
        "/account/password/",
        {
            "old_password": "not-it",
            "new_password1": "a-new-long-password-9",
            "new_password2": "a-new-long-password-9",
            "csrfmiddlewaretoken": token,
        },
    )
    assert wrong.status_code == 200
    assert "Your old password was entered incorrectly" in wrong.content.decode()

    response = browser.post(
        "/account/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "a-new-long-password-9",
            "new_password2": "a-new-long-password-9",
            "csrfmiddlewaretoken": token,
        },
    )
    assert response["Location"] == "/account/password/changed/"
    assert "Your password was changed" in browser.get(response["Location"]).content.decode()
    assert browser.get("/dashboard/").status_code == 200  # still signed in here
    assert get_user_model().objects.get(username="bob").check_password("a-new-long-password-9")
    assert log_in(Client(), "bob", "a-new-long-password-9")["Location"] == "/dashboard/"


@pytest.mark.django_db
def test_a_user_resets_a_forgotten_password_by_email(acme_scene):
    member("bob", (acme_scene.operator, ADMIN))
    browser = Client(enforce_csrf_checks=True)
    assert "Forgotten your password?" in browser.get("/login/").content.decode()

    response = browser.post(
        "/account/password/reset/",
        {
            "email": "bob@people.example",
            "csrfmiddlewaretoken": csrf_token(browser, "/account/password/reset/"),
        },
    )
    assert response["Location"] == "/account/password/reset/sent/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["bob@people.example"]
    assert message.subject == "Choose a new password for Tally"
    link = re.search(r"http://testserver(/account/password/reset/\S+/)", message.body).group(1)

    form = browser.get(link, follow=True)  # Django moves the token into the session first
    assert "Set my password" in form.content.decode()
    set_password_url = form.redirect_chain[-1][0]
    response = browser.post(
        set_password_url,
        {
            "new_password1": "a-brand-new-password-7",
            "new_password2": "a-brand-new-password-7",
            "csrfmiddlewaretoken": csrf_token(browser, set_password_url),
        },
    )
    assert response["Location"] == "/account/password/reset/complete/"
    assert log_in(Client(), "bob", "a-brand-new-password-7")["Location"] == "/dashboard/"
    # The link works once.
    used = browser.get(link, follow=True).content.decode()
    assert "This link does not work any more" in used


@pytest.mark.django_db
def test_a_reset_for_an_unknown_address_sends_nothing_and_says_the_same():
    browser = Client()

    response = browser.post("/account/password/reset/", {"email": "nobody@nowhere.example"})

    assert response["Location"] == "/account/password/reset/sent/"
    assert not mail.outbox
