from django.apps import AppConfig
from django.conf import settings


class ParametersConfig(AppConfig):
    name = "parameters"
    verbose_name = "Global parameters"

    def ready(self) -> None:
        # A malformed TALLY_PARAMETER_KEYS stops start-up here, naming the key, rather
        # than at the first sensitive parameter.
        from parameters.crypto import build_keyring

        if settings.TALLY["PARAMETER_KEYS"]:
            build_keyring(settings.TALLY["PARAMETER_KEYS"])
