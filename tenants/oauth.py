"""django-oauth-toolkit glue: per-application scopes and operator checks at token time."""

from __future__ import annotations

from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.scopes import BaseScopes

from tenants.scopes import ALIASES, SCOPES, with_aliases
from tenants.services import client_secret_verify


def _allowed_scopes(application) -> list[str]:
    access = getattr(application, "access", None) if application is not None else None
    return list(access.scopes) if access is not None else []


class ApplicationScopes(BaseScopes):
    """A token may carry only what its application is allowed (never "all scopes")."""

    def get_all_scopes(self) -> dict[str, str]:
        return {**SCOPES, **{short: SCOPES[full] for short, full in ALIASES.items()}}

    def get_available_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        return with_aliases(_allowed_scopes(application))

    def get_default_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        return _allowed_scopes(application)


class OperatorOAuth2Validator(OAuth2Validator):
    """Clients of a suspended operator, or applications with no operator, cannot
    authenticate; secrets are checked quickly once known (`client_secret_verify`)."""

    # One validator serves one token request (the view builds its server per request).
    _request = None
    # The operator of the client authenticated, once it is (for the API-call count).
    operator_id = None

    def _check_secret(self, provided_secret, stored_secret) -> bool:
        client = getattr(self._request, "client", None)
        return client_secret_verify(
            access=getattr(client, "access", None),
            provided=provided_secret,
            stored=stored_secret,
            slow_check=super()._check_secret,
        )

    def authenticate_client(self, request, *args, **kwargs) -> bool:
        self._request = request
        if not super().authenticate_client(request, *args, **kwargs):
            return False
        access = getattr(request.client, "access", None)
        if access is None or not access.operator.is_active:
            return False
        self.operator_id = access.operator_id
        return True
