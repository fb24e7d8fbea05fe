from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from common.json import dumps_text
from tenants.models import Operator
from tenants.scopes import UnknownScopeError
from tenants.services import application_access_create


class Command(BaseCommand):
    help = (
        "Create a client-credentials application for an operator and print "
        '{"clientId", "clientSecret", "scopes"} as JSON. The secret is shown only here.'
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--operator", required=True, help="operator id")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scopes", help="space-separated scopes (short forms accepted); default: all"
        )

    def handle(self, *args, operator: str, name: str, scopes: str | None, **options) -> None:
        try:
            owner = Operator.objects.get(pk=operator)
        except (Operator.DoesNotExist, ValidationError):
            raise CommandError(f"No operator with id {operator!r}.") from None
        try:
            issued = application_access_create(
                operator=owner, name=name, scopes=None if scopes is None else scopes.split()
            )
        except (UnknownScopeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            dumps_text(
                {
                    "clientId": issued.client_id,
                    "clientSecret": issued.client_secret,
                    "scopes": issued.access.scopes,
                }
            )
        )
