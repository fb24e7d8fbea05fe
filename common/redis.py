"""The Redis client request paths share (rate limits, usage counts)."""

from __future__ import annotations

import redis
from django.conf import settings

_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """A client of settings.REDIS_URL, one per URL (looked up on each call, so a test may
    point it elsewhere); short timeouts, as a request waits for it."""
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        client = _clients.setdefault(
            url, redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        )
    return client
