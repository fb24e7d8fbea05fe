"""Revenue of usage increments under per-unit and graduated prices, to the cent and beyond."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.pricing import PricingInvalid, charge, graduated_total, tiers_parse

TIERS = tiers_parse(
    [{"upTo": 1000, "unitPrice": D("0.10")}, {"upTo": None, "unitPrice": D("0.08")}]
)


def test_per_unit():
    assert charge(model="PER_UNIT", before=D(5), amount=D("2.5"), unit_price=D("0.2")) == D("0.50")


def test_a_tier_boundary_crossed_within_a_cycle():
    # 900 → 1,200: 100 at 0.10 and 200 at 0.08.
    assert charge(model="GRADUATED", before=D(900), amount=D(300), tiers=TIERS) == D("26.00")
    assert graduated_total(TIERS, D(1200)) == D("116.00")


def test_three_tiers_and_a_bounded_last_one():
    tiers = tiers_parse(
        [
            {"upTo": 10, "unitPrice": 1},
            {"upTo": 20, "unitPrice": D("0.5")},
            {"upTo": 30, "unitPrice": D("0.25")},
        ]
    )
    assert graduated_total(tiers, D(35)) == D(10) + D(5) + D("2.5") + D("1.25")


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [{"upTo": None, "unitPrice": 1}, {"upTo": 5, "unitPrice": 1}],
        [{"upTo": 5, "unitPrice": 1}, {"upTo": 5, "unitPrice": 1}],
        [{"upTo": 0, "unitPrice": 1}],
        [{"upTo": 5, "unitPrice": -1}],
        [{"upTo": 5, "unitPrice": "1"}],
        [{"unitPrice": 1}],
        [{"upTo": 5, "unitPrice": 1, "extra": 1}],
        "tiers",
    ],
)
def test_bad_tiers_are_refused(raw):
    with pytest.raises(PricingInvalid):
        tiers_parse(raw)


amounts = st.decimals(min_value=0, max_value=5000, places=3)


@given(st.lists(amounts, max_size=20))
def test_increments_add_up_to_the_price_of_the_total(increments):
    before, revenue = D(0), D(0)
    for amount in increments:
        revenue += charge(model="GRADUATED", before=before, amount=amount, tiers=TIERS)
        before += amount
    assert revenue == graduated_total(TIERS, before)
