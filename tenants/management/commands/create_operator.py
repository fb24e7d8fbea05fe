from django.core.management.base import BaseCommand, CommandError

from common.json import dumps_text
from tenants.services import operator_create


class Command(BaseCommand):
    help = 'Create an operator and print {"id", "name"} as JSON.'

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", required=True)

    def handle(self, *args, name: str, **options) -> None:
        try:
            operator = operator_create(name=name)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(dumps_text({"id": str(operator.id), "name": operator.name}))
