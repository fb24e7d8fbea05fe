"""Token-bucket rate limits in Redis: exact bursts, 429s with headers, concurrency, refill,
per-client and per-group buckets, and the TALLY_RATE_LIMITS setting."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from common.api import ratelimit
from common.api.ratelimit import bucket_key, rate_limit_take
from config.rate_limits import DEFAULT_RATE_LIMITS, merge_rate_limits
from tenants.services import platform_key_create
from tests.conftest import assert_error_body

SETTINGS_URL = "/platform-api/settings"


def limit_group(settings, group: str, *, rate: float, burst: float) -> None:
    settings.TALLY["RATE_LIMITS"][group] = {"rate": rate, "burst": burst}


def get_settings(api_client, key: str):
    return api_client(key).get(SETTINGS_URL)


# (a) An exact burst, then 429s that say when to come back.


@pytest.mark.django_db
def test_burst_is_served_exactly_then_429_with_rate_limit_headers(
    settings, api_client, platform_key
):
    burst = 3
    limit_group(settings, "platform", rate=0.001, burst=burst)

    responses = [get_settings(api_client, platform_key) for _ in range(burst + 2)]

    allowed, refused = responses[:burst], responses[burst:]
    assert [r.status_code for r in allowed] == [200] * burst
    assert [r["RateLimit-Limit"] for r in allowed] == [str(burst)] * burst
    assert [int(r["RateLimit-Remaining"]) for r in allowed] == list(range(burst - 1, -1, -1))
    for response in allowed:
        assert int(response["RateLimit-Reset"]) >= 0
        assert "Retry-After" not in response

    for response in refused:
        body = assert_error_body(response, 429)
        assert body["error"] == "Too Many Requests"
        assert response["Retry-After"].isdigit()
        assert int(response["Retry-After"]) >= 1
        assert response["RateLimit-Limit"] == str(burst)
        assert response["RateLimit-Remaining"] == "0"
        assert int(response["RateLimit-Reset"]) >= int(response["Retry-After"])


@pytest.mark.django_db
def test_requests_without_credentials_spend_no_tokens(settings, api_client, platform_key):
    limit_group(settings, "platform", rate=0.001, burst=1)

    for _ in range(3):
        assert api_client().get(SETTINGS_URL).status_code == 401

    assert get_settings(api_client, platform_key).status_code == 200


def test_rate_limit_take_counts_down_then_refuses(settings):
    limit_group(settings, "metrics", rate=0.001, burst=4)

    results = [rate_limit_take(group="metrics", identity="client:a") for _ in range(6)]

    assert [r.allowed for r in results] == [True] * 4 + [False] * 2
    assert [r.remaining for r in results] == [3, 2, 1, 0, 0, 0]
    assert {r.limit for r in results} == {4}
    refused = results[-1].headers()
    assert int(refused["Retry-After"]) >= 1
    assert refused["RateLimit-Remaining"] == "0"
    assert "Retry-After" not in results[0].headers()


def test_an_unconfigured_group_is_an_error():
    with pytest.raises(LookupError, match="no-such-group"):
        rate_limit_take(group="no-such-group", identity="client:a")


# (b) Many threads on one bucket never get more than rate * time + burst.


def _own_connection_taker(group: str, identity: str):
    """Run the bucket script over a dedicated Redis connection, as another web process
    would, against the same key rate_limit_take uses."""
    connection = redis.Redis.from_url(django_settings.REDIS_URL)
    script = connection.register_script(ratelimit._BUCKET_SCRIPT)
    limits = ratelimit.group_limits(group)

    def take() -> bool:
        allowed, *_ = script(
            keys=[bucket_key(group, identity)],
            args=[repr(float(limits["rate"])), repr(float(limits["burst"]))],
        )
        return bool(int(allowed))

    return take, connection


def test_concurrent_requests_never_exceed_rate_times_time_plus_burst(settings):
    rate, burst, threads, duration = 20, 5, 8, 1.5
    limit_group(settings, "metrics", rate=rate, burst=burst)
    identity = "client:hammered"

    # Half the threads go through rate_limit_take (one shared, thread-safe pool); the
    # other half each own a separate Redis connection, like separate web processes.
    takers = []
    connections = []
    for index in range(threads):
        if index % 2 == 0:
            takers.append(lambda: rate_limit_take(group="metrics", identity=identity).allowed)
        else:
            take, connection = _own_connection_taker("metrics", identity)
            takers.append(take)
            connections.append(connection)

    start_line = threading.Barrier(threads)
    lock = threading.Lock()
    first_sent: list[float] = []
    last_answered: list[float] = []
    allowed = [0] * threads
    attempts = [0] * threads
    errors: list[BaseException] = []

    def hammer(index: int) -> None:
        try:
            start_line.wait()
            deadline = time.monotonic() + duration
            with lock:
                first_sent.append(time.monotonic())
            while time.monotonic() < deadline:
                if takers[index]():
                    allowed[index] += 1
                attempts[index] += 1
            with lock:
                last_answered.append(time.monotonic())
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for connection in connections:
        connection.close()

    assert not errors, errors
    elapsed = max(last_answered) - min(first_sent)
    total_allowed = sum(allowed)
    assert sum(attempts) > total_allowed, "the bucket was never exhausted"
    assert total_allowed >= burst
    assert total_allowed <= rate * elapsed + burst, (total_allowed, elapsed)


# (c) Buckets are per client and per group.


@pytest.mark.django_db
def test_exhausting_one_platform_key_leaves_another_untouched(settings, api_client, platform_key):
    limit_group(settings, "platform", rate=0.001, burst=2)
    other_key = platform_key_create(name="Other").raw_key

    statuses = [get_settings(api_client, platform_key).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]

    fresh = get_settings(api_client, other_key)
    assert fresh.status_code == 200
    assert fresh["RateLimit-Remaining"] == "1"
    assert get_settings(api_client, platform_key).status_code == 429


def test_exhausting_one_identity_leaves_another_untouched(settings):
    limit_group(settings, "meters", rate=0.001, burst=2)

    assert [rate_limit_take(group="meters", identity="client:a").allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    other = rate_limit_take(group="meters", identity="client:b")
    assert other.allowed
    assert other.remaining == 1


def test_groups_are_independent_for_the_same_identity(settings):
    limit_group(settings, "meters", rate=0.001, burst=1)
    limit_group(settings, "metrics", rate=0.001, burst=1)

    assert rate_limit_take(group="meters", identity="client:a").allowed
    assert not rate_limit_take(group="meters", identity="client:a").allowed

    assert rate_limit_take(group="metrics", identity="client:a").allowed


# (d) Tokens come back at the configured rate.


def test_an_exhausted_bucket_refills_at_the_rate(settings):
    limit_group(settings, "metrics", rate=10, burst=1)
    assert rate_limit_take(group="metrics", identity="client:a").allowed
    refused = rate_limit_take(group="metrics", identity="client:a")
    assert not refused.allowed

    time.sleep(0.15)  # a little over 1/rate: one token has come back

    assert rate_limit_take(group="metrics", identity="client:a").allowed


# (e) TALLY_RATE_LIMITS.


def test_defaults_are_the_api_references_numbers():
    expected = {
        "token": (10, 5),
        "meter-types": (20, 5),
        "meters": (50, 5),
        "collectors-write": (1, 1),
        "collectors-read": (5 / 60, 5),
        "ingestion": (2000, 5),
        "streams": (20, 5),
        "aggregation": (50, 5),
        "parameters": (2, 4),
        "parameters-delete": (1, 2),
        "metrics": (20, 5),
        "platform": (20, 5),
    }
    assert set(DEFAULT_RATE_LIMITS) == set(expected)
    for group, (rate, burst) in expected.items():
        assert DEFAULT_RATE_LIMITS[group]["rate"] == pytest.approx(rate), group
        assert DEFAULT_RATE_LIMITS[group]["burst"] == burst, group
    assert merge_rate_limits(None) == DEFAULT_RATE_LIMITS


def test_overrides_merge_over_the_defaults():
    limits = merge_rate_limits({"meters": {"rate": 7}, "platform": {"rate": "2.5", "burst": 9}})

    assert limits["meters"] == {"rate": 7, "burst": 5}
    assert limits["platform"] == {"rate": 2.5, "burst": 9}
    assert limits["token"] == DEFAULT_RATE_LIMITS["token"]
    # The defaults themselves are not changed.
    assert DEFAULT_RATE_LIMITS["meters"] == {"rate": 50, "burst": 5}


@pytest.mark.parametrize(
    "overrides",
    [
        {"no-such-group": {"rate": 1}},
        ["meters"],
        "meters",
        {"meters": 5},
        {"meters": {}},
        {"meters": {"rate": 1, "size": 3}},
        {"meters": {"rate": "fast"}},
        {"meters": {"rate": None}},
        {"meters": {"rate": [1]}},
        {"meters": {"rate": 0}},
        {"meters": {"burst": -1}},
        {"meters": {"rate": True}},
        {"meters": {"burst": False}},
        {"meters": {"rate": "NaN"}},
        {"meters": {"rate": float("inf")}},
    ],
    ids=[
        "unknown-group",
        "list",
        "string",
        "group-not-object",
        "group-empty",
        "unknown-key",
        "word",
        "null",
        "array",
        "zero",
        "negative",
        "bool-true",
        "bool-false",
        "nan",
        "infinity",
    ],
)
def test_bad_overrides_are_improperly_configured(overrides):
    with pytest.raises(ImproperlyConfigured, match="TALLY_RATE_LIMITS"):
        merge_rate_limits(overrides)
