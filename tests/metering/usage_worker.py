"""A child process for the concurrency test: applies usage batches to shared meters.

Kept free of Django imports at module level: a spawned child imports this module
before it has configured Django.
"""

from __future__ import annotations

import datetime
import os
import random
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

NOW = datetime.datetime(2026, 3, 10, 12, tzinfo=datetime.UTC)
KEYS = ["k1", "k2", "k3"]
USERS = ["alice", "bob"]


def batches(seed: int, rounds: int, size: int) -> list[list[tuple[int, str, str, Decimal]]]:
    """Deterministic batches of (type index, meter key, user, value), shuffled so each
    batch names the meters in its own order."""
    rng = random.Random(seed)
    result = []
    for _ in range(rounds):
        batch = [
            (
                rng.randrange(3),
                rng.choice(KEYS),
                rng.choice(USERS),
                Decimal(rng.randrange(-500, 10_000)) / 100,
            )
            for _ in range(size)
        ]
        rng.shuffle(batch)
        result.append(batch)
    return result


def apply_batches(database_name, operator_id, type_ids, seed, rounds, size, barrier) -> None:
    """Run in a spawned process: point Django at the test database, wait for the other
    process, then apply every batch, each in its own usage_apply call."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{database_name}"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connections

    from metering.usage import UsageUpdate, usage_apply
    from tenants.models import Operator

    operator = Operator.objects.get(pk=operator_id)
    barrier.wait(timeout=60)
    for batch in batches(seed, rounds, size):
        usage_apply(
            operator=operator,
            now=NOW,
            updates=[
                UsageUpdate(type_ids[t], None, key, user, value, NOW)
                for t, key, user, value in batch
            ],
        )
    connections.close_all()
