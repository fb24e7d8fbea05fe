"""Token-bucket rate limits kept in Redis.

Each (group, client) pair has a bucket of `burst` tokens refilled at `rate` tokens per
second. One Lua script reads, refills, takes a token and writes back atomically, using
Redis's own clock so that every web process shares one notion of time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis
from django.conf import settings

from common.redis import OutageTally, redis_client

# KEYS[1] bucket key; ARGV[1] rate per second; ARGV[2] burst.
# Returns {allowed (0/1), tokens left, seconds until a token is free, seconds until full}
# as strings: Redis would truncate Lua numbers to integers.
_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1],
  'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
local wait = 0
if allowed == 0 then
  wait = (1 - tokens) / rate
end
return {allowed, string.format('%.17g', tokens), string.format('%.17g', wait),
        string.format('%.17g', (burst - tokens) / rate)}
"""


@dataclass(frozen=True)
class RateLimitResult:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def _client() -> redis.Redis:
    return redis_client()


_scripts: dict[int, redis.commands.core.Script] = {}


def _script():
    """The bucket script, registered with the current client (one per Redis URL)."""
    client = _client()
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts.setdefault(id(client), client.register_script(_BUCKET_SCRIPT))
    return script


def group_limits(group: str) -> dict[str, float]:
    try:
        return settings.TALLY["RATE_LIMITS"][group]
    except KeyError:
        raise LookupError(f"No rate limit is configured for the group {group!r}.") from None


def bucket_key(group: str, identity: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:ratelimit:{group}:{identity}"


# Requests let through while Redis could not be asked.
fail_open = OutageTally(
    "Redis is unreachable (%s); rate limits are not enforced until it is back "
    "(%d requests let through so far)."
)


def redis_reachable() -> bool:
    try:
        return bool(_client().ping())
    except redis.exceptions.RedisError:
        return False


def rate_limit_take(*, group: str, identity: str) -> RateLimitResult | None:
    """Take one token from the (group, identity) bucket.

    None when Redis cannot be asked: the limiter fails open, so an outage of the cache
    never stops metering (counted in `fail_open`, warned about once a minute)."""
    limits = group_limits(group)
    rate, burst = float(limits["rate"]), float(limits["burst"])
    try:
        allowed, tokens, wait, reset = _script()(
            keys=[bucket_key(group, identity)], args=[repr(rate), repr(burst)]
        )
    except redis.exceptions.RedisError as error:
        fail_open.record(error)
        return None
    return RateLimitResult(
        allowed=bool(int(allowed)),
        limit=int(burst),
        remaining=max(0, math.floor(float(tokens))),
        retry_after=float(wait),
        reset_after=float(reset),
    )


# The headers of the last check travel on the Django request so that one middleware can
# put them on every response, error or not.
REQUEST_ATTRIBUTE = "_tally_rate_limit"


def remember_result(request, result: RateLimitResult) -> None:
    setattr(getattr(request, "_request", request), REQUEST_ATTRIBUTE, result)


class RateLimitHeadersMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        result: RateLimitResult | None = getattr(request, REQUEST_ATTRIBUTE, None)
        if result is not None:
            for name, value in result.headers().items():
                response[name] = value
        return response
