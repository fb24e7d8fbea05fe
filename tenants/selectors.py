"""Reads that resolve credentials to the principal behind them."""

from __future__ import annotations

import hashlib

from django.utils import timezone
from oauth2_provider.models import AccessToken

from tenants.models import PlatformApiKey
from tenants.services import platform_key_digest


def access_token_lookup(raw_token: str) -> AccessToken | None:
    """The live access token for `raw_token`, with its application, access and operator.

    Tokens are stored only as a SHA-256 checksum (RFC 9700 storage), so this is one
    indexed lookup.
    """
    checksum = hashlib.sha256(raw_token.encode("utf-8")).hexdigest()
    token = (
        AccessToken.objects.select_related("application__access__operator")
        .filter(token_checksum=checksum)
        .first()
    )
    if token is None or token.expires <= timezone.now():
        return None
    return token


def platform_key_lookup(raw_key: str) -> PlatformApiKey | None:
    if not raw_key.startswith(PlatformApiKey.PREFIX):
        return None
    return PlatformApiKey.objects.filter(
        key_digest=platform_key_digest(raw_key), revoked_at__isnull=True
    ).first()
