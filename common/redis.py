"""The Redis client request paths share (rate limits, usage counts)."""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

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


class OutageTally:
    """What a request path let go while Redis could not be reached (requests not rate
    limited, counts lost), counted per process, and a warning at most once a minute: an
    outage would otherwise log every request. `message` takes the error's name and the
    count so far."""

    WARN_EVERY = 60.0

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self._warned_at = -self.WARN_EVERY
        self._lock = threading.Lock()

    def record(self, error: Exception, n: int = 1) -> None:
        with self._lock:
            self.count += n
            now = time.monotonic()
            warn = now - self._warned_at >= self.WARN_EVERY
            if warn:
                self._warned_at = now
        if warn:
            logger.warning(self.message, type(error).__name__, self.count)
