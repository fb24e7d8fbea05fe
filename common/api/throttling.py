"""DRF throttle backed by the Redis token bucket, one bucket per client and group.

A view names its group in `rate_limit_group`: a string, or a dict from action (or HTTP
method) to group when reads and writes are limited differently.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework.throttling import BaseThrottle

from common.api.ratelimit import rate_limit_take, remember_result


def rate_limit_group_for(request, view) -> str:
    group = getattr(view, "rate_limit_group", None)
    if isinstance(group, dict):
        action = getattr(view, "action", None)
        group = (
            group.get(action)
            or group.get(request.method.lower())
            or group.get("default")
            # OPTIONS and other requests no handler claims: the view's first group.
            or next(iter(group.values()), None)
        )
    if not group:
        raise ImproperlyConfigured(f"{type(view).__name__} does not name a rate_limit_group.")
    return group


class TokenBucketThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        principal = request.user
        identity = getattr(principal, "rate_limit_identity", None)
        if identity is None:
            return True  # unauthenticated requests are refused before they cost anything
        result = rate_limit_take(group=rate_limit_group_for(request, view), identity=identity)
        if result is None:  # Redis unreachable: fail open
            self._wait = None
            return True
        remember_result(request, result)
        self._wait = result.retry_after
        return result.allowed

    def wait(self) -> float | None:
        return self._wait
