"""Access in the admin: platform keys rotated from the list, users and groups on the
theme's own forms, and the libraries' internals (OAuth tokens, Beat schedules) shown
read-only under System."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django_celery_beat.models import PeriodicTask
from oauth2_provider.models import AccessToken, Application

from tenants.models import ApplicationAccess, OperatorMembership, PlatformApiKey, UsageCounter
from tenants.services import operator_membership_set, platform_key_create, platform_key_rotate
from tests.conftest import AUDIENCE, assert_error_body

pytestmark = pytest.mark.django_db

SECRET = re.compile(
    r"<code class='tally-secret' data-name='(?P<name>[^']+)'>(?P<value>[^<]+)</code>"
)


@pytest.fixture
def staff(staff_user) -> Client:
    browser = Client()
    browser.force_login(staff_user)
    return browser


def shown_keys(response) -> list[str]:
    return [m["value"] for m in SECRET.finditer(response.content.decode()) if m["name"] == "Key"]


def test_staff_rotate_a_platform_key_from_the_list(staff, staff_user, api_client, platform_key):
    old = PlatformApiKey.objects.get()

    response = staff.post(
        "/admin/tenants/platformapikey/",
        {"action": "rotate", "_selected_action": [str(old.pk)]},
        follow=True,
    )

    (raw_key,) = shown_keys(response)
    old.refresh_from_db()
    new = PlatformApiKey.objects.exclude(pk=old.pk).get()
    assert old.is_revoked and not new.is_revoked
    assert (new.name, new.created_by) == (old.name, staff_user)
    assert api_client(raw_key).get("/platform-api/settings").status_code == 200
    assert_error_body(api_client(platform_key).get("/platform-api/settings"), 401)
    assert shown_keys(staff.get("/admin/tenants/platformapikey/")) == []  # shown once


def test_a_revoked_key_is_not_rotated(staff):
    issued = platform_key_create(name="Leaked")
    staff.post(
        "/admin/tenants/platformapikey/",
        {"action": "revoke", "_selected_action": [str(issued.key.pk)]},
    )

    response = staff.post(
        "/admin/tenants/platformapikey/",
        {"action": "rotate", "_selected_action": [str(issued.key.pk)]},
        follow=True,
    )

    assert "The key &#x27;Leaked&#x27; is revoked." in response.content.decode()
    assert shown_keys(response) == []
    assert PlatformApiKey.objects.count() == 1


def test_rotating_revokes_the_old_key_in_the_same_transaction(db):
    issued = platform_key_create(name="Deploys")

    rotated = platform_key_rotate(key=issued.key)

    assert rotated.raw_key != issued.raw_key
    assert issued.key.is_revoked  # the caller's object says so too
    keys = {(key.name, key.is_revoked) for key in PlatformApiKey.objects.all()}
    assert keys == {("Deploys", False), ("Deploys", True)}
    with pytest.raises(ValueError):
        platform_key_rotate(key=issued.key)


def test_deleting_an_application_in_the_admin_revokes_its_client(staff, acme):
    access = ApplicationAccess.objects.get(operator=acme.operator)

    response = staff.post(
        "/admin/tenants/applicationaccess/",
        {"action": "delete_selected", "_selected_action": [str(access.pk)], "post": "yes"},
    )

    assert response.status_code == 302
    assert not ApplicationAccess.objects.exists()
    assert not Application.objects.filter(client_id=acme.client_id).exists()
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
    assert_error_body(refused, 401)


def test_staff_add_a_user_on_the_themes_forms_and_see_their_operators(staff, acme):
    response = staff.post(
        "/admin/auth/user/add/",
        {
            "username": "carol",
            "usable_password": "true",
            "password1": "a-long-unusual-passphrase-42",
            "password2": "a-long-unusual-passphrase-42",
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    carol = User.objects.get(username="carol")
    assert carol.check_password("a-long-unusual-passphrase-42")
    operator_membership_set(operator=acme.operator, user=carol, role="admin")
    page = staff.get(f"/admin/auth/user/{carol.pk}/change/").content.decode()
    assert "operator memberships" in page.lower()
    assert "Acme" in page
    assert staff.get(f"/admin/auth/user/{carol.pk}/password/").status_code == 200
    assert staff.get("/admin/auth/group/add/").status_code == 200
    Group.objects.create(name="Support")
    assert "Support" in staff.get("/admin/auth/group/").content.decode()


@pytest.mark.parametrize(
    "model",
    [
        "oauth2_provider/application",
        "oauth2_provider/accesstoken",
        "oauth2_provider/refreshtoken",
        "oauth2_provider/grant",
        "oauth2_provider/idtoken",
        "django_celery_beat/periodictask",
        "django_celery_beat/crontabschedule",
        "django_celery_beat/intervalschedule",
        "django_celery_beat/clockedschedule",
        "django_celery_beat/solarschedule",
    ],
)
def test_library_internals_are_listed_but_not_added_by_hand(staff, acme, model):
    assert staff.get(f"/admin/{model}/").status_code == 200
    assert staff.get(f"/admin/{model}/add/").status_code == 403


def test_oauth_pages_show_whose_application_and_never_a_token(staff, acme):
    token = AccessToken.objects.get(application__access__operator=acme.operator)

    applications = staff.get("/admin/oauth2_provider/application/").content.decode()
    tokens = staff.get("/admin/oauth2_provider/accesstoken/").content.decode()
    detail = staff.get(f"/admin/oauth2_provider/accesstoken/{token.pk}/change/")

    assert "Acme" in applications  # the operator that owns it
    assert acme.token not in tokens and acme.token not in detail.content.decode()
    assert detail.status_code == 200
    assert 'name="token"' not in detail.content.decode()


def test_beat_tasks_are_read_only_and_can_be_run_now(staff):
    call_command("setup_schedules", verbosity=0)
    task = PeriodicTask.objects.order_by("name").first()

    page = staff.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/")
    assert page.status_code == 200
    assert 'name="name"' not in page.content.decode()  # shown, not editable
    response = staff.post(
        "/admin/django_celery_beat/periodictask/",
        {"action": "run_tasks", "_selected_action": [str(task.pk)]},
        follow=True,
    )

    assert "1 task was successfully run" in response.content.decode()


def test_memberships_and_counters_read_as_a_person_would_say_them(acme, operator_user):
    membership = OperatorMembership.objects.get(user=operator_user)
    counter = UsageCounter(
        operator=acme.operator,
        hour="2026-05-01T13:00:00Z",
        kind="api_call",
        key="meters",
        count=12,
    )
    counter.hour = counter._meta.get_field("hour").to_python(counter.hour)

    assert str(membership) == "bob · Acme (Viewer)"
    assert str(counter) == "api_call · meters · 2026-05-01 13:00 UTC: 12"
