from django.core.management.base import BaseCommand, CommandError

from common.json import dumps_text
from tenants.services import platform_key_create


class Command(BaseCommand):
    help = 'Create a platform API key and print {"key"} as JSON. The key is shown only here.'

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", required=True)

    def handle(self, *args, name: str, **options) -> None:
        try:
            issued = platform_key_create(name=name)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(dumps_text({"key": issued.raw_key}))
