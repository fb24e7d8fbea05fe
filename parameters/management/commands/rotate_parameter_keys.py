from django.core.management.base import BaseCommand, CommandError

from common.json import dumps_text
from parameters.crypto import ParameterDecryptionError
from parameters.services import parameter_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every sensitive parameter with the first key of TALLY_PARAMETER_KEYS and "
        'print {"rotated": N}. Afterwards the older keys can be removed.'
    )

    def handle(self, *args, **options) -> None:
        try:
            rotated = parameter_keys_rotate()
        except ParameterDecryptionError as exc:
            raise CommandError(f"Rotation stopped: {exc}") from None
        self.stdout.write(dumps_text({"rotated": rotated}))
