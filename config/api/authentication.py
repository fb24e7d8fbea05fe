"""Who is calling: an operator's OAuth client, or the platform (by API key).

The two are never interchangeable: a platform key on an operator endpoint is a 401, and
so is an operator token on the platform API.
"""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions

from tenants.models import ApplicationAccess, Operator, PlatformApiKey
from tenants.selectors import access_token_lookup, platform_key_lookup
from tenants.services import operator_mark_active, platform_key_mark_used


@dataclass(frozen=True)
class ApiClient:
    """The principal behind an operator's access token."""

    operator: Operator
    access: ApplicationAccess
    client_id: str
    scopes: frozenset[str]

    is_authenticated = True
    is_staff = False

    @property
    def rate_limit_identity(self) -> str:
        return f"client:{self.client_id}"


@dataclass(frozen=True)
class PlatformPrincipal:
    """The principal behind a platform API key."""

    key: PlatformApiKey

    is_authenticated = True
    is_staff = False

    @property
    def rate_limit_identity(self) -> str:
        return f"platform:{self.key.pk}"


def bearer_credentials(request) -> str | None:
    header = authentication.get_authorization_header(request).decode("latin-1")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    credentials = credentials.strip()
    if not credentials or " " in credentials:
        raise exceptions.AuthenticationFailed("The Authorization header is malformed.")
    return credentials


class OperatorTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        raw_token = bearer_credentials(request)
        if raw_token is None:
            return None
        if raw_token.startswith(PlatformApiKey.PREFIX):
            raise exceptions.AuthenticationFailed(
                "Platform API keys are not accepted here; use an operator access token."
            )
        token = access_token_lookup(raw_token)
        access = getattr(token.application, "access", None) if token is not None else None
        if token is None or access is None:
            raise exceptions.AuthenticationFailed("The access token is invalid or has expired.")
        operator_mark_active(operator_id=access.operator_id)
        client = ApiClient(
            operator=access.operator,
            access=access,
            client_id=token.application.client_id,
            scopes=frozenset(token.scope.split()),
        )
        return client, token

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class PlatformKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        raw_key = bearer_credentials(request)
        if raw_key is None:
            return None
        key = platform_key_lookup(raw_key)
        if key is None:
            raise exceptions.AuthenticationFailed(
                "A valid platform API key (tly_platform_…) is required."
            )
        platform_key_mark_used(key=key)
        return PlatformPrincipal(key=key), key

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="platform-api"'
