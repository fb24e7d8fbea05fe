import secrets
from importlib import import_module

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from common.json import dumps_text
from tenants.models import Operator, OperatorMembership
from tenants.services import application_access_create, operator_create

DEMO_OPERATOR = "Demo Operator"
DEMO_STAFF = "admin"


class Command(BaseCommand):
    help = (
        "Create the demo operator, an OAuth application with every scope and a staff login. "
        "Prints the credentials once, as JSON; later runs change nothing."
    )

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        if Operator.objects.filter(name=DEMO_OPERATOR).exists():
            self.stdout.write(dumps_text({"demo": "already present"}))
            return
        operator = operator_create(name=DEMO_OPERATOR)
        issued = application_access_create(operator=operator, name="Demo integration")
        password = secrets.token_urlsafe(12)
        user_model = get_user_model()
        staff = user_model.objects.filter(username=DEMO_STAFF).first()
        if staff is None:
            staff = user_model.objects.create_superuser(
                username=DEMO_STAFF, email="admin@example.com", password=password
            )
            staff_info = {"username": DEMO_STAFF, "password": password}
        else:
            staff_info = {"username": DEMO_STAFF, "password": None, "note": "existing user kept"}
        OperatorMembership.objects.get_or_create(
            operator=operator, user=staff, defaults={"role": OperatorMembership.Role.ADMIN}
        )
        demo = _load_app_demos(operator)
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
                }
            )
        )


def _load_app_demos(operator: Operator) -> dict:
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
        loaded[config.label] = module.load_demo(operator=operator)
    return loaded
