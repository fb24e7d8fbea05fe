"""Two processes applying usage to the same meters at once lose nothing."""

from __future__ import annotations

import multiprocessing
from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from metering.models import Meter, MeterType, UsageRollup
from tests.metering.meter_helpers import make_type
from tests.metering.usage_worker import apply_batches, batches

ROUNDS, SIZE, SEEDS = 40, 30, (1, 2)


@pytest.mark.django_db(transaction=True)
def test_two_processes_applying_usage_to_the_same_meters_lose_nothing(acme):
    aggregations = [MeterType.Aggregation.SUM, MeterType.Aggregation.INCREMENT]
    aggregations.append(MeterType.Aggregation.MAX)
    meter_types = [make_type(acme.operator, name=agg, aggregation=agg) for agg in aggregations]
    type_ids = [meter_type.pk for meter_type in meter_types]

    # Both start on meters that do not exist yet, so creation races too.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(SEEDS))
    children = [
        context.Process(
            target=apply_batches,
            args=(
                connection.settings_dict["NAME"],
                acme.operator.pk,
                type_ids,
                seed,
                ROUNDS,
                SIZE,
                barrier,
            ),
        )
        for seed in SEEDS
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]

    expected: dict[tuple, list] = defaultdict(lambda: [Decimal(0), 0, None])
    for seed in SEEDS:
        for batch in batches(seed, ROUNDS, SIZE):
            for t, key, user, value in batch:
                total = expected[(type_ids[t], key, user)]
                total[0] = total[0] + value
                total[1] += 1
                total[2] = value if total[2] is None else max(total[2], value)
    meters = {(m.meter_type_id, m.meter_key, m.user_id): m for m in Meter.objects.all()}
    assert set(meters) == set(expected)
    for identity, (total, count, largest) in expected.items():
        meter = meters[identity]
        assert meter.record_count == count, identity
        wanted = {0: total, 1: Decimal(count), 2: largest}[type_ids.index(identity[0])]
        assert meter.value == wanted, identity

    sums = UsageRollup.objects.filter(meter_type=meter_types[0]).aggregate(
        value=Sum("value"), count=Sum("record_count")
    )
    assert sums["value"] == sum(v[0] for k, v in expected.items() if k[0] == type_ids[0])
    assert sums["count"] == ROUNDS * SIZE * len(SEEDS) - sum(
        v[1] for k, v in expected.items() if k[0] != type_ids[0]
    )
