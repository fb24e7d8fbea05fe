"""Management commands and the tenants Celery task."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from oauth2_provider.models import AccessToken, Application

from common.json import loads
from common.schedules import schedules_collect
from tenants.management.commands.setup_schedules import MANAGED
from tenants.models import ApplicationAccess, Operator, OperatorMembership, PlatformApiKey
from tenants.schedules import SCHEDULES as TENANTS_SCHEDULES
from tenants.scopes import ALL_SCOPES
from tenants.selectors import access_token_lookup
from tenants.tasks import clear_expired_tokens
from tests.conftest import issue_token
from tests.factories import OperatorFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> dict:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return loads(out.getvalue())


@pytest.fixture
def operator() -> Operator:
    return OperatorFactory(name="Initech")


# create_operator


def test_create_operator_prints_its_id_and_name():
    printed = run("create_operator", "--name", "  Initech ")

    assert set(printed) == {"id", "name"}
    operator = Operator.objects.get()
    assert printed == {"id": str(operator.id), "name": "Initech"}
    assert operator.is_active


def test_create_operator_refuses_a_blank_name():
    with pytest.raises(CommandError):
        run("create_operator", "--name", "   ")
    assert not Operator.objects.exists()


# create_application


def test_create_application_prints_credentials_with_every_scope_by_default(operator):
    printed = run("create_application", "--operator", str(operator.id), "--name", "billing")

    assert set(printed) == {"clientId", "clientSecret", "scopes"}
    assert printed["scopes"] == list(ALL_SCOPES)
    access = ApplicationAccess.objects.get()
    assert access.operator == operator
    assert access.application.client_id == printed["clientId"]
    assert access.application.name == "billing"


def test_create_application_normalises_short_scope_names(operator):
    printed = run(
        "create_application",
        "--operator",
        str(operator.id),
        "--name",
        "billing",
        "--scopes",
        "read:meters metrics:read",
    )

    assert printed["scopes"] == ["usage-metering:read:meters", "metrics:read"]
    assert ApplicationAccess.objects.get().scopes == printed["scopes"]


def test_create_application_refuses_an_unknown_scope(operator):
    with pytest.raises(CommandError, match="no:such:scope"):
        run(
            "create_application",
            "--operator",
            str(operator.id),
            "--name",
            "billing",
            "--scopes",
            "read:meters no:such:scope",
        )
    assert not Application.objects.exists()


@pytest.mark.parametrize("operator_id", [str(uuid.uuid4()), "not-a-uuid", ""])
def test_create_application_refuses_an_unknown_operator(operator_id):
    with pytest.raises(CommandError, match="No operator"):
        run("create_application", "--operator", operator_id, "--name", "billing")
    assert not Application.objects.exists()


def test_printed_application_credentials_obtain_a_token(operator):
    printed = run(
        "create_application",
        "--operator",
        str(operator.id),
        "--name",
        "billing",
        "--scopes",
        "read:meters",
    )

    token = issue_token(Client(), printed["clientId"], printed["clientSecret"])

    assert token["scope"] == "usage-metering:read:meters"
    assert token["token_type"] == "Bearer"


def test_the_printed_client_secret_is_not_stored(operator):
    printed = run("create_application", "--operator", str(operator.id), "--name", "billing")
    stored = Application.objects.get().client_secret
    assert printed["clientSecret"] not in stored


# create_platform_key


def test_create_platform_key_prints_a_key_that_works(api_client):
    printed = run("create_platform_key", "--name", "Ops")

    assert set(printed) == {"key"}
    assert printed["key"].startswith("tly_platform_")
    response = api_client(printed["key"]).get("/platform-api/settings")
    assert response.status_code == 200, response.content


def test_only_the_platform_keys_sha256_digest_is_stored():
    raw_key = run("create_platform_key", "--name", "Ops")["key"]

    key = PlatformApiKey.objects.get()
    assert key.key_digest == hashlib.sha256(raw_key.encode()).hexdigest()
    stored_text = [str(getattr(key, field.attname)) for field in key._meta.concrete_fields]
    assert all(raw_key not in value for value in stored_text)
    assert raw_key.startswith(key.display_prefix)


def test_create_platform_key_refuses_a_blank_name():
    with pytest.raises(CommandError):
        run("create_platform_key", "--name", " ")
    assert not PlatformApiKey.objects.exists()


# load_demo


def test_load_demo_creates_an_operator_application_and_staff_login():
    printed = run("load_demo")

    assert set(printed) == {"operator", "application", "staff", "demo", "users", "secondOperator"}
    assert printed["demo"]["metering"]["meterTypes"] == ["API calls", "Storage"]
    operator = Operator.objects.get(pk=printed["operator"]["id"])
    assert printed["operator"]["name"] == operator.name
    token = issue_token(
        Client(), printed["application"]["clientId"], printed["application"]["clientSecret"]
    )
    assert set(token["scope"].split()) >= set(ALL_SCOPES)
    # The demo's usage earned revenue as it was applied.
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    answer = Client(HTTP_AUTHORIZATION=f"Bearer {token['access_token']}").post(
        "/metrics",
        {
            "startTime": (end - timedelta(days=10)).isoformat(),
            "endTime": end.isoformat(),
            "metricQueries": [{"id": "r", "name": "REVENUE", "groupBy": "ACCOUNT_ID"}],
        },
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    earned = {
        item["groupedBy"]["fieldValue"]: sum(item["metricValues"])
        for item in answer.json()["results"][0]["data"]
    }
    assert set(earned) == set(printed["demo"]["metering"]["billingAccounts"])
    assert all(value > 0 for value in earned.values())

    staff = printed["staff"]
    browser = Client()
    response = browser.post(
        "/admin/login/?next=/admin/",
        {"username": staff["username"], "password": staff["password"], "next": "/admin/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert browser.get("/admin/").status_code == 200
    assert OperatorMembership.objects.filter(
        operator=operator, user__username=staff["username"]
    ).exists()


def demo_state() -> dict:
    """Rows of every model of Tally's apps, users and OAuth applications, and the meters'
    values: what a second load must leave as it is."""
    tally_apps = {"tenants", "parameters", "collection", "metering", "streams", "reporting"}
    models = [model for model in apps.get_models() if model._meta.app_label in tally_apps]
    state = {
        model._meta.label: model.objects.count()
        for model in [*models, get_user_model(), Application]
    }
    state["meter values"] = sorted(
        apps.get_model("metering", "Meter").objects.values_list("id", "value")
    )
    return state


def test_load_demo_a_second_time_changes_nothing():
    run("load_demo")
    before = demo_state()
    assert before["collection.Record"] > 0 and before["metering.MeterPeriod"] > 0

    assert run("load_demo") == {"demo": "already present"}

    assert demo_state() == before


def test_load_demo_keeps_an_existing_admin_user(django_user_model):
    existing = django_user_model.objects.create_user(username="admin", password="kept-pw-123")

    printed = run("load_demo")

    assert printed["staff"]["password"] is None
    existing.refresh_from_db()
    assert existing.check_password("kept-pw-123")


# setup_schedules


def managed_tasks() -> dict[str, PeriodicTask]:
    return {task.name: task for task in PeriodicTask.objects.filter(description=MANAGED)}


def test_setup_schedules_writes_every_schedule_to_beat():
    printed = run("setup_schedules")

    schedules = schedules_collect()
    assert printed["schedules"] == list(schedules)
    tasks = managed_tasks()
    assert set(tasks) == set(schedules)
    for name, (task_path, seconds) in schedules.items():
        assert tasks[name].task == task_path
        assert tasks[name].enabled
        assert tasks[name].interval.every == seconds
        assert tasks[name].interval.period == IntervalSchedule.SECONDS


def test_setup_schedules_is_idempotent():
    run("setup_schedules")
    before = {
        name: (task.pk, task.task, task.interval_id) for name, task in managed_tasks().items()
    }
    intervals = IntervalSchedule.objects.count()

    printed = run("setup_schedules")

    after = {name: (task.pk, task.task, task.interval_id) for name, task in managed_tasks().items()}
    assert after == before
    assert IntervalSchedule.objects.count() == intervals
    assert printed["removed"] == 0


def test_setup_schedules_updates_a_changed_schedule(monkeypatch):
    run("setup_schedules")
    name = next(iter(TENANTS_SCHEDULES))
    task_path, seconds = TENANTS_SCHEDULES[name]
    monkeypatch.setitem(TENANTS_SCHEDULES, name, (task_path, seconds * 2))

    run("setup_schedules")

    assert PeriodicTask.objects.get(name=name).interval.every == seconds * 2


def test_setup_schedules_removes_a_schedule_that_left_the_code_and_keeps_hand_made_ones(
    monkeypatch,
):
    monkeypatch.setitem(
        TENANTS_SCHEDULES, "retired job", ("tenants.tasks.clear_expired_tokens", 60)
    )
    run("setup_schedules")
    assert "retired job" in managed_tasks()
    interval = IntervalSchedule.objects.get(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="staff job", task="some.task", interval=interval)

    monkeypatch.delitem(TENANTS_SCHEDULES, "retired job")
    printed = run("setup_schedules")

    assert printed["removed"] == 1
    assert set(managed_tasks()) == set(schedules_collect())
    assert PeriodicTask.objects.filter(name="staff job").exists()


# clear_expired_tokens


def test_clear_expired_tokens_deletes_expired_tokens_and_keeps_live_ones(acme):
    stale = issue_token(Client(), acme.client_id, acme.client_secret)["access_token"]
    stale_token = access_token_lookup(stale)
    stale_token.expires = timezone.now() - timedelta(seconds=1)
    stale_token.save(update_fields=["expires"])
    assert AccessToken.objects.count() == 2

    clear_expired_tokens()

    assert not AccessToken.objects.filter(pk=stale_token.pk).exists()
    assert access_token_lookup(acme.token) is not None
    clear_expired_tokens()  # a second run changes nothing
    assert AccessToken.objects.count() == 1
