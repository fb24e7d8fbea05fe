from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and access"

    def ready(self) -> None:
        # Registers the OpenAPI descriptions of the two credential schemes.
        from tenants.api import schema  # noqa: F401
