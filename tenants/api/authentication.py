"""Who is calling: an operator's OAuth client, or the platform (by API key).

The two are never interchangeable: a platform key on an operator endpoint is a 401, and
so is an operator token on the platform API.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from oauth2_provider.models import AccessToken
from rest_framework import authentication, exceptions

from tenants.accounting import api_caller_mark
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


class _ResolvedTokens:
    """Resolved tokens, kept per process for TALLY["TOKEN_CACHE_SECONDS"].

    The lookup joins three tables and runs on every request; a few seconds of caching
    removes it from the hot path. The price: a revoked token, a narrowed application or
    a suspended operator takes effect within that many seconds, not instantly.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, ApiClient, AccessToken]] = {}
        self._lock = threading.Lock()

    def get(self, raw_token: str) -> tuple[ApiClient, AccessToken] | None:
        entry = self._entries.get(raw_token)
        if entry is None:
            return None
        valid_until, client, token = entry
        if time.monotonic() >= valid_until or token.expires <= timezone.now():
            self._entries.pop(raw_token, None)
            return None
        return client, token

    def put(self, raw_token: str, client: ApiClient, token: AccessToken, seconds: float) -> None:
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[raw_token] = (time.monotonic() + seconds, client, token)


_resolved_tokens = _ResolvedTokens()


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
        cached = _resolved_tokens.get(raw_token)
        if cached is not None:
            client, token = cached
        else:
            client, token = self._resolve(raw_token)
            seconds = settings.TALLY["TOKEN_CACHE_SECONDS"]
            if seconds > 0:
                _resolved_tokens.put(raw_token, client, token, seconds)
        operator_mark_active(operator_id=client.operator.pk)
        # Counted as the operator's API call once answered, whatever the answer.
        api_caller_mark(request, client.operator.pk)
        return client, token

    def _resolve(self, raw_token: str) -> tuple[ApiClient, AccessToken]:
        token = access_token_lookup(raw_token)
        access = getattr(token.application, "access", None) if token is not None else None
        if token is None or access is None:
            raise exceptions.AuthenticationFailed("The access token is invalid or has expired.")
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
