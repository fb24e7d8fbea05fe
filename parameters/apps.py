from django.apps import AppConfig


class ParametersConfig(AppConfig):
    name = "parameters"
    verbose_name = "Global parameters"
