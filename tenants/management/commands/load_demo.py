import random
import secrets
from datetime import UTC, timedelta
from importlib import import_module

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from common.json import dumps_text
from tenants.accounting import API_CALL, usage_count
from tenants.models import Operator, OperatorMembership
from tenants.services import (
    application_access_create,
    operator_create,
    operator_mark_active,
    operator_membership_set,
)

DEMO_OPERATOR = "Demo Operator"
DEMO_STAFF = "admin"
# A second operator with customers of its own, so that what one operator's people and
# clients see, and what they cannot, shows.
SECOND_OPERATOR = "Northwind Demo"
SECOND_CUSTOMERS = {
    "dana@northwind.example": "Dana Novak",
    "eli@northwind.example": "Eli Moreau",
    "fay@northwind.example": "Fay Osei",
}
ADMIN, VIEWER = OperatorMembership.Role.ADMIN, OperatorMembership.Role.VIEWER
# Dashboard logins: username -> {operator name: role}.
DEMO_USERS = {
    "demo-admin": {DEMO_OPERATOR: ADMIN},
    "demo-viewer": {DEMO_OPERATOR: VIEWER},
    "both": {DEMO_OPERATOR: VIEWER, SECOND_OPERATOR: ADMIN},
}
# Beat's periodic work, run once after loading, so the demo starts as Beat leaves
# things: periods that ended closed and sent down their streams, revenue priced, and
# every counter folded into the rollups the dashboards read. (Notifications are left to
# the worker: delivering them may call out, which has no place in this transaction.)
SETTLE_TASKS = (
    "metering.tasks.reset_due_meters",
    "streams.tasks.flushes_run",
    "metering.tasks.reprice_pending",
    "streams.tasks.streams_sweep",
    "collection.tasks.rollups_fold",
    "tenants.tasks.usage_counters_fold",
)
# API calls a client makes in a busy hour, by endpoint category; quiet hours make fewer.
BUSY_HOUR_CALLS = {
    "oauth": 2,
    "online-collection": 12,
    "usage-metering": 9,
    "metrics": 4,
    "billing": 1,
    "stream-management": 1,
}


class Command(BaseCommand):
    help = (
        "Create the demo: two operators with OAuth applications, customers, meters and a "
        "week of usage, a staff login and dashboard logins. Prints the credentials once, "
        "as JSON; later runs change nothing."
    )

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        if Operator.objects.filter(name=DEMO_OPERATOR).exists():
            self.stdout.write(dumps_text({"demo": "already present"}))
            return
        operator = operator_create(name=DEMO_OPERATOR)
        issued = application_access_create(operator=operator, name="Demo integration")
        second = operator_create(name=SECOND_OPERATOR)
        second_issued = application_access_create(operator=second, name="Northwind integration")
        staff_info = _staff_ensure(operator)
        users = _users_ensure({DEMO_OPERATOR: operator, SECOND_OPERATOR: second})
        demo = _load_app_demos(operator)
        second_demo = _load_app_demos(second, customers=SECOND_CUSTOMERS, seed=11)
        for index, each in enumerate((operator, second)):
            _api_calls_record(each, scale=1.0 if index == 0 else 0.4, seed=index)
            operator_mark_active(operator_id=each.pk)
        for task_name in SETTLE_TASKS:
            _run_task(task_name)
        self.stdout.write(
            dumps_text(
                {
                    "operator": {"id": str(operator.id), "name": operator.name},
                    "demo": demo,
                    "application": {
                        "clientId": issued.client_id,
                        "clientSecret": issued.client_secret,
                    },
                    "staff": staff_info,
                    "users": users,
                    "secondOperator": {
                        "id": str(second.id),
                        "name": second.name,
                        "application": {
                            "clientId": second_issued.client_id,
                            "clientSecret": second_issued.client_secret,
                        },
                        "demo": second_demo,
                    },
                }
            )
        )


def _staff_ensure(operator: Operator) -> dict:
    """The staff login `admin` (kept if it exists), an admin of the demo operator too."""
    user_model = get_user_model()
    staff = user_model.objects.filter(username=DEMO_STAFF).first()
    if staff is None:
        password = secrets.token_urlsafe(12)
        staff = user_model.objects.create_superuser(
            username=DEMO_STAFF, email="admin@example.com", password=password
        )
        info = {"username": DEMO_STAFF, "password": password}
    else:
        info = {"username": DEMO_STAFF, "password": None, "note": "existing user kept"}
    OperatorMembership.objects.get_or_create(
        operator=operator, user=staff, defaults={"role": OperatorMembership.Role.ADMIN}
    )
    return info


def _users_ensure(operators: dict[str, Operator]) -> list[dict]:
    """The dashboard logins with their memberships; an existing user keeps its password."""
    user_model = get_user_model()
    printed = []
    for username, roles in DEMO_USERS.items():
        user = user_model.objects.filter(username=username).first()
        entry: dict = {"username": username}
        if user is None:
            password = secrets.token_urlsafe(12)
            user = user_model.objects.create_user(
                username=username, email=f"{username}@example.com", password=password
            )
            entry["password"] = password
        else:
            entry.update(password=None, note="existing user kept")
        for operator_name, role in roles.items():
            operator_membership_set(operator=operators[operator_name], user=user, role=role)
        entry["memberships"] = dict(roles)
        printed.append(entry)
    return printed


def _load_app_demos(operator: Operator, **options) -> dict:
    """Let each installed app that has a `demo` module add its part of the demo.

    Discovered rather than imported, so tenants stays free of the apps built on it.
    """
    loaded = {}
    for config in apps.get_app_configs():
        module_name = f"{config.name}.demo"
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        loaded[config.label] = module.load_demo(operator=operator, **options)
    return loaded


def _api_calls_record(operator: Operator, *, scale: float, seed: int) -> None:
    """A week of the operator's API calls, hour by hour, counted as the accounting
    middleware counts them: in Redis, for the fold below (a fold drops the counts of an
    operator a failed load rolled back)."""
    rng = random.Random(seed)  # noqa: S311 (the same demo every time; not a secret)
    now = timezone.now()
    hour = (now - timedelta(days=7)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour <= now:
        busy = 1.0 if 8 <= hour.hour < 18 else 0.2
        for category, calls in BUSY_HOUR_CALLS.items():
            count = round(calls * busy * scale * rng.uniform(0.5, 1.5))
            if count:
                usage_count(operator_id=operator.pk, kind=API_CALL, key=category, n=count, at=hour)
        hour += timedelta(hours=1)


def _run_task(task_name: str) -> None:
    """Run a Celery task here and now, by name (tenants imports no app to its right)."""
    module_name, _, function_name = task_name.rpartition(".")
    getattr(import_module(module_name), function_name)()
